"""Linear-probe accuracy: cross-validated multinomial logistic regression on frozen features.

The paper's central measure of fit. Everything random is drawn from ``seed`` after the
samples are put in a canonical order (by a fixed projection of their features, see
:mod:`probes._order`), so the score does not depend on the order the samples come in, nor
on the names of the classes, and features that differ only by rounding get the same folds.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from probes import _logreg
from probes._checks import ProbeError, check_features, encode_labels
from probes._order import row_order
from probes.registry import Probe, register

# Kornblith et al. (2019) search 45 values in [1e-6, 1e5]; 7 values in [1e-4, 1e2] keep
# the probe fast. A C at either end of the grid shows in LinearProbeResult.chosen_C.
C_GRID = tuple(np.logspace(-4, 2, 7))
INNER_FOLDS = 3
# C is chosen on at least this many held-out predictions (fewer inner folds when a single
# one reaches it): beyond it, more folds change the choice little and cost a full fit each.
MIN_HELD_OUT = 500
# Stop the C path after this many consecutive values below the best held-out accuracy:
# the large values are the slow fits, and accuracy rarely rises again once it has fallen.
PATIENCE = 2
# Loose for lbfgs, tight for an accuracy: warm starts along the C path do the rest.
MAX_ITER = 100
TOL = 1e-3
# Newton's method (exact Hessian, Cholesky) reaches the optimum in a handful of steps where
# lbfgs needs thousands: on narrow, nearly collinear features (early stages, random-init
# networks) 100 lbfgs steps left the accuracy 1-3 points below the optimum (real features,
# N=5000, D=16-40), and stopping on lbfgs's own tolerance is no sign of convergence there.
# Its Hessian has one row per weight, so it is used while there are at most this many
# weights ((D + 1) per class, one set for two classes); it costs up to ~7 s per probe at
# N=5000 (two classes, D=499), and fits in float64, where such Hessians stay
# well-conditioned.
NEWTON_MAX_PARAMS = 500
# Small sets: the k-fold split is repeated (fresh folds from the same seed's stream) until
# about this many test predictions are averaged, at most MAX_REPEATS times. One 5-fold draw
# on 36 images moved the accuracy by up to 0.19 from another (icons-3c-n12, meta-benchmark);
# on 120 images its spread over fold seeds was 0.022 (opencv-digits-10c-n12, top block).
# N >= MIN_TEST_PREDICTIONS: one draw, as before.
MIN_TEST_PREDICTIONS = 400
MAX_REPEATS = 5
# When a training fold has too few samples per class for an inner split (scikit-learn's default).
DEFAULT_C = 1.0
# float32 halves the memory traffic of the lbfgs fits; the accuracy does not notice.
FIT_DTYPE = np.float32


@dataclass(frozen=True)
class LinearProbeResult:
    """Outer-fold accuracies of the linear probe and the regularisation chosen in each."""

    mean: float
    std: float
    fold_scores: tuple[float, ...]
    chosen_C: tuple[float, ...]

    def to_dict(self) -> dict:
        return {
            "mean": self.mean,
            "std": self.std,
            "fold_scores": list(self.fold_scores),
            "chosen_C": list(self.chosen_C),
        }


@dataclass(frozen=True)
class _Fold:
    """Indices of one outer fold and of the inner splits of its training part."""

    train: np.ndarray
    test: np.ndarray
    inner: tuple[tuple[np.ndarray, np.ndarray], ...]  # (train, validation), into self.train


def linear_probe_accuracy(
    features: np.ndarray, labels: np.ndarray, *, folds: int = 5, seed: int = 0
) -> float:
    """Mean (repeated) cross-validated accuracy of a linear probe; see :func:`linear_probe_cv`.

    Returns
    -------
    float
        Fraction of held-out samples classified correctly, in [0, 1]; higher is better.
    """
    return linear_probe_cv(features, labels, folds=folds, seed=seed).mean


def linear_probe_cv(
    features: np.ndarray, labels: np.ndarray, *, folds: int = 5, seed: int = 0,
    repeats: int | None = None,
) -> LinearProbeResult:
    """Accuracy of an L2 logistic-regression probe by (repeated) stratified k-fold
    cross-validation.

    Per outer fold: features standardised with the training part's mean and standard
    deviation (a constant dimension is left at 0); C chosen on the training part by an
    inner stratified split over ``C_GRID``, warm-starting each fit from the previous C;
    the probe refit on the whole training part at that C and scored on the test part.
    Multinomial logistic regression; for two classes, the equivalent binary one. Solved by
    Newton's method while it has at most ``NEWTON_MAX_PARAMS`` weights (narrow features,
    where lbfgs stalls), else by lbfgs.

    The k-fold split is drawn ``repeats`` times (default :func:`default_repeats`: enough
    draws for about ``MIN_TEST_PREDICTIONS`` test predictions, at most ``MAX_REPEATS``;
    one from 400 samples on), and the accuracy is the mean over every fold of every draw:
    on small sets one draw's folds move the score by more than the differences it is read
    for.

    k = min(``folds``, smallest class count), at least 2. A class with a single sample
    cannot be tested: that sample is always in training (the class then only counts as
    a possible wrong answer) and its count is left out of that minimum. Folds are drawn
    after sorting the samples by a fixed projection of their features (ties by their
    bytes), so the result does not depend on the order of the samples, and rounding
    differences (another thread count) move few samples between folds, if any; identical
    feature rows with different labels are the one case where the order still matters.

    Parameters
    ----------
    features : array of shape (N, D)
        Frozen features, finite.
    labels : array of shape (N,)
        Class labels of any sortable values; at least 2 classes with 2 or more samples.
    folds : int, default 5
        Upper bound on the number of outer folds.
    seed : int, default 0
        Seed of the fold assignment; the result is deterministic for a given seed.
    repeats : int, optional
        Number of k-fold draws; default :func:`default_repeats` of N.

    Returns
    -------
    LinearProbeResult
        ``mean`` and ``std`` (population) of the fold accuracies, each fold's accuracy
        and chosen C (the folds of every draw, draw after draw).

    Raises
    ------
    ProbeError
        If the inputs are invalid, ``folds < 2``, or fewer than 2 classes have 2 samples.

    References
    ----------
    S. Kornblith, J. Shlens, Q. V. Le. "Do Better ImageNet Models Transfer Better?"
    CVPR 2019.
    """
    x = check_features(features)
    codes, _ = encode_labels(labels, n_samples=x.shape[0])
    order = content_order(x)
    x, codes = x[order], codes[order]
    plan = plan_folds(codes, folds, seed, repeats=default_repeats(x.shape[0])
                      if repeats is None else repeats)
    return cross_validate(x, codes, plan)


def default_repeats(n_samples: int) -> int:
    """k-fold draws for ``n_samples``: ceil(MIN_TEST_PREDICTIONS / N), 1 to MAX_REPEATS."""
    return int(min(MAX_REPEATS, max(1, -(-MIN_TEST_PREDICTIONS // max(1, n_samples)))))


def _linear_probe_spread(features: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    result = linear_probe_cv(features, labels)
    return result.mean, result.std


def content_order(*arrays: np.ndarray) -> np.ndarray:
    """A permutation putting the samples (rows of all arrays together) in canonical order
    (:mod:`probes._order`: robust to the features' rounding)."""
    return row_order(np.hstack(arrays))


def plan_folds(codes: np.ndarray, folds: int, seed: int, repeats: int = 1) -> tuple[_Fold, ...]:
    """Outer stratified folds and their inner splits, drawn from ``seed`` only; ``repeats``
    draws of them one after another (the first is the single draw's plan)."""
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ProbeError(f"folds: expected an integer >= 2, got {folds!r}.")
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ProbeError(f"repeats: expected an integer >= 1, got {repeats!r}.")
    counts = np.bincount(codes)
    if np.count_nonzero(counts >= 2) < 2:
        raise ProbeError(
            f"labels: class sizes {sorted(counts.tolist(), reverse=True)}; a linear probe "
            "needs at least 2 classes with 2 or more samples to test on. Add samples."
        )
    rng = np.random.default_rng(seed)
    plan = []
    for _ in range(repeats):
        test_fold = _stratified_folds(codes, folds, rng)
        for k in range(test_fold.max() + 1):
            train = np.flatnonzero(test_fold != k)
            inner_fold = _stratified_folds(codes[train], INNER_FOLDS, rng)
            inner = [
                (np.flatnonzero(inner_fold != j), np.flatnonzero(inner_fold == j))
                for j in range(inner_fold.max() + 1)
            ]
            n_used = int(np.searchsorted(np.cumsum([len(val) for _, val in inner]),
                                         MIN_HELD_OUT))
            plan.append(_Fold(train, np.flatnonzero(test_fold == k), tuple(inner[: n_used + 1])))
    return tuple(plan)


def _stratified_folds(codes: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold id of each sample, -1 for samples always in training; no folds if none testable.

    k = min(folds, smallest count of a class with 2+ samples); each such class is spread
    evenly over the k folds, classes taken in order of first appearance (not by name).
    Fewer than 2 testable classes: every sample is -1 (no split).
    """
    _, first, counts = np.unique(codes, return_index=True, return_counts=True)
    testable = counts >= 2
    fold = np.full(codes.shape[0], -1)
    if np.count_nonzero(testable) < 2:
        return fold
    k = int(min(folds, counts[testable].min()))
    offset = 0
    for cls in codes[np.sort(first[testable])]:
        members = np.flatnonzero(codes == cls)
        # Rotating the start keeps the folds within one sample of each other in size.
        fold[rng.permutation(members)] = (np.arange(members.size) + offset) % k
        offset += members.size
    return fold


def cross_validate(x: np.ndarray, codes: np.ndarray, plan: tuple[_Fold, ...]) -> LinearProbeResult:
    """Run the probe over the folds of ``plan``; no validation (see linear_probe_cv).

    The result is a pure function of its inputs, so it is memoised by their content: the
    pre-training gain re-uses the probe on the pre-trained features that
    ``linear_probe_accuracy`` just computed on the same block instead of fitting it again.
    """
    key = _content_key(x, codes, plan)
    with _MEMO_LOCK:  # probes may run in threads (one block each)
        if key in _MEMO:
            _MEMO.move_to_end(key)
            return _MEMO[key]
    result = _cross_validate(x, codes, plan)
    with _MEMO_LOCK:
        _MEMO[key] = result
        while len(_MEMO) > _MEMO_SIZE:
            _MEMO.popitem(last=False)
    return result


_MEMO_SIZE = 32
_MEMO: OrderedDict[bytes, LinearProbeResult] = OrderedDict()
_MEMO_LOCK = threading.Lock()


def _content_key(x: np.ndarray, codes: np.ndarray, plan: tuple[_Fold, ...]) -> bytes:
    digest = hashlib.blake2b(digest_size=20)
    for array in (x, codes, *(a for fold in plan for a in _fold_arrays(fold))):
        digest.update(str((array.dtype, array.shape)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.digest()


def _fold_arrays(fold: _Fold) -> Iterator[np.ndarray]:
    yield fold.train
    yield fold.test
    for train, validation in fold.inner:
        yield train
        yield validation


def _cross_validate(
    x: np.ndarray, codes: np.ndarray, plan: tuple[_Fold, ...]
) -> LinearProbeResult:
    # BLAS on one thread: the fits multiply small matrices (one column per class), where
    # threads cost more than they give (twice as slow on 2 cores at N=5000, D=1280).
    from threadpoolctl import threadpool_limits

    scores, chosen = [], []
    with threadpool_limits(limits=1, user_api="blas"):
        for fold in plan:
            x_train, x_test = _standardise(x[fold.train], x[fold.test])
            y_train = codes[fold.train]
            solver = _solver(x_train.shape[1], np.unique(y_train).size)
            dtype = np.float64 if solver == "newton-cholesky" else FIT_DTYPE
            x_train, x_test = x_train.astype(dtype), x_test.astype(dtype)
            c, start = _choose_c(x_train, y_train, fold.inner, solver)
            model = _logreg.fit(x_train, y_train, c, solver=solver, start=start,
                                max_iter=MAX_ITER, tol=TOL)
            scores.append(float(np.mean(model.predict(x_test) == codes[fold.test])))
            chosen.append(float(c))
    return LinearProbeResult(
        mean=float(np.mean(scores)),
        std=float(np.std(scores)),
        fold_scores=tuple(scores),
        chosen_C=tuple(chosen),
    )


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale by training statistics; project onto the training rows' span when D > N.

    An L2-regularised linear model's weights lie in the span of its training rows, so
    the projection gives the same predictions with D reduced to at most N (inner fits
    use subsets of these rows, so it is exact for them too).
    """
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[std == 0] = 1.0  # a constant dimension carries no information: leave it at 0
    train = (train - mean) / std
    test = (test - mean) / std
    if train.shape[1] > train.shape[0]:
        basis, _ = np.linalg.qr(train.T)  # orthonormal (D, N), spans the training rows
        train, test = train @ basis, test @ basis
    return train, test


def _solver(n_features: int, n_classes: int) -> str:
    """Newton while its Hessian is small (see ``NEWTON_MAX_PARAMS``), else lbfgs."""
    n_weights = (n_features + 1) * (1 if n_classes == 2 else n_classes)
    return "newton-cholesky" if n_weights <= NEWTON_MAX_PARAMS else "lbfgs"


def _choose_c(
    x: np.ndarray, y: np.ndarray, inner: tuple[tuple[np.ndarray, np.ndarray], ...], solver: str
) -> tuple[float, _logreg.LogReg | None]:
    """Best C on the inner splits, and the first split's model at it (a warm start).

    Walks ``C_GRID`` from strong to weak regularisation, each fit warm-started from the
    previous one; ties go to the stronger regularisation. No inner split: ``DEFAULT_C``.
    An inner training part that lacks a class cannot predict it (as in scikit-learn).
    """
    if not inner:
        return DEFAULT_C, None
    splits = [(x[tr], y[tr], x[val], y[val]) for tr, val in inner]
    models: list[_logreg.LogReg | None] = [None] * len(splits)
    n_held_out = sum(len(val) for _, val in inner)
    best_acc, best_c, best_model, below = -1.0, DEFAULT_C, None, 0
    for c in C_GRID:
        correct = 0
        for i, (x_tr, y_tr, x_val, y_val) in enumerate(splits):
            models[i] = _logreg.fit(x_tr, y_tr, c, solver=solver, start=models[i],
                                    max_iter=MAX_ITER, tol=TOL)
            correct += int(np.count_nonzero(models[i].predict(x_val) == y_val))
        acc = correct / n_held_out
        if acc > best_acc:
            best_acc, best_c, best_model = acc, c, models[0]
        # Count only drops: a plateau (e.g. chance level at strong regularisation) goes on.
        below = below + 1 if acc < best_acc else 0
        if below >= PATIENCE or best_acc == 1.0:  # nothing left to gain
            break
    return best_c, best_model


register(
    Probe(
        name="linear_probe_accuracy",
        func=linear_probe_accuracy,
        needs=("features", "labels"),
        higher_is_better=True,
        meaning="held-out accuracy of a linear classifier on frozen features; higher is better",
        reference="Kornblith et al., Do Better ImageNet Models Transfer Better?, CVPR 2019",
        label="probe acc",
        unit="fraction",
        spread=_linear_probe_spread,
        # Nested CV fits grow faster than N: above this, a seeded stratified subset
        # (probes._subsample); the pre-training gain uses the same cap and rows.
        max_samples=10_000,
    )
)
