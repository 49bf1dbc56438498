"""LogME: the exact maximum evidence, checked against a brute-force maximisation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize

from probes import logme


def _features(n: int, d: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-structured features with a decaying spectrum (like real embeddings)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    rng.shuffle(labels)
    centres = rng.normal(size=(n_classes, d))
    noise = rng.normal(size=(n, d)) * np.exp(-np.arange(d) / 5)
    return 0.7 * centres[labels] + noise, labels


def _backbone_like(n: int, d: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 pooled-ReLU-like features: non-negative, correlated, a large common mean
    (so F^T F is ill-conditioned, as for a real backbone's features)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    rng.shuffle(labels)
    code = rng.normal(size=(n_classes, 6))[labels] + rng.normal(size=(n, 6))
    mixing = rng.normal(size=(6, d)) * np.exp(-np.arange(6) / 2)[:, None]
    pre = code @ mixing + 0.3 * rng.normal(size=(n, d)) + 1.0
    return np.maximum(pre, 0.0).astype(np.float32), labels


def _signal_plus_small_noise(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """N < D with 4 informative dimensions and 60 tiny ones: a shallow interior maximum."""
    rng = np.random.default_rng(seed)
    labels = np.arange(30) % 3
    rng.shuffle(labels)
    signal = 0.7 * rng.normal(size=(3, 4))[labels] + rng.normal(size=(30, 4))
    return np.hstack([signal, 0.03 * rng.normal(size=(30, 60))]), labels


def _log_evidence(f: np.ndarray, t: np.ndarray, log_alpha: float, log_beta: float) -> float:
    """The evidence straight from its definitions in You et al., ICML 2021 (LogME), without the
    eigendecomposition.

    log N(t; 0, F F^T/alpha + I/beta) by slogdet when N <= D; when N > D that N x N
    matrix is singular to rounding, so the equivalent D x D form with A is used.
    """
    n, d = f.shape
    alpha, beta = np.exp(log_alpha), np.exp(log_beta)
    if n <= d:
        cov = f @ f.T / alpha + np.eye(n) / beta
        _, log_det = np.linalg.slogdet(cov)
        return -0.5 * (n * np.log(2 * np.pi) + log_det + t @ np.linalg.solve(cov, t))
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ t)
    _, log_det_a = np.linalg.slogdet(a)
    return (
        0.5 * d * log_alpha
        + 0.5 * n * log_beta
        - 0.5 * n * np.log(2 * np.pi)
        - 0.5 * beta * np.sum((f @ m - t) ** 2)
        - 0.5 * alpha * m @ m
        - 0.5 * log_det_a
    )


# Wide enough that the evidence at the bound equals its limit to ~1e-12 (the supremum is
# at beta -> inf when F F^T is invertible).
_LOG_BETA_RANGE = (-25.0, 40.0)


def _best_over_log_beta(f: np.ndarray, t: np.ndarray, log_alpha: float) -> float:
    result = optimize.minimize_scalar(
        lambda log_beta: -_log_evidence(f, t, log_alpha, log_beta),
        bounds=_LOG_BETA_RANGE,
        method="bounded",
        options={"xatol": 1e-9},
    )
    return -result.fun


def _brute_force_logme(f: np.ndarray, labels: np.ndarray) -> float:
    """Maximise each class's evidence over (log alpha, log beta) with scipy.optimize.

    A grid over log alpha (step 0.5) with the best log beta at each point finds the
    global basin (maxima can be narrow in beta); bounded Brent then polishes log alpha.
    Computed in float64 whatever the dtype of ``f``.
    """
    f = np.asarray(f, dtype=np.float64)
    grid = np.log(np.trace(f.T @ f) / f.shape[0]) + np.arange(-15.0, 25.01, 0.5)
    best_per_class = []
    for c in np.unique(labels):
        t = (labels == c).astype(float)
        profile = [_best_over_log_beta(f, t, log_alpha) for log_alpha in grid]
        i = int(np.argmax(profile))
        result = optimize.minimize_scalar(
            lambda log_alpha, t=t: -_best_over_log_beta(f, t, log_alpha),
            bounds=(grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]),
            method="bounded",
            options={"xatol": 1e-9},
        )
        best_per_class.append(max(-result.fun, profile[i]))
    return float(np.mean(best_per_class) / f.shape[0])


@pytest.mark.parametrize(
    "make",
    [
        lambda: _features(40, 10, n_classes=3, seed=1),
        lambda: _features(30, 60, n_classes=3, seed=1),
        lambda: _signal_plus_small_noise(seed=1),
        lambda: _backbone_like(60, 12, n_classes=3, seed=1),
        lambda: _backbone_like(30, 50, n_classes=3, seed=1),
    ],
    ids=["N>D", "N<D", "N<D-shallow-interior-maximum", "N>D-backbone-like-float32",
         "N<D-backbone-like-float32"],
)
def test_logme_equals_brute_force_maximum_evidence(make):
    f, labels = make()
    assert logme(f, labels) == pytest.approx(_brute_force_logme(f, labels), rel=1e-6)


def test_logme_ignores_duplicated_feature_dimensions():
    # [F, F] w = F (w1 + w2) with w1 + w2 ~ N(0, 2 I/alpha): the same family of models,
    # so the same maximum. [F, F]^T [F, F] has rank D/2, so this needs (D - k) log alpha.
    f, labels = _features(50, 6, n_classes=3, seed=2)
    assert logme(np.hstack([f, f]), labels) == pytest.approx(logme(f, labels), rel=1e-8)


@pytest.mark.parametrize("scale", [1e-3, 1e3])
@pytest.mark.parametrize(("n", "d"), [(200, 20), (30, 60)], ids=["N>D", "N<D"])
def test_logme_is_invariant_to_the_scale_of_the_features(scale, n, d):
    f, labels = _features(n, d, n_classes=4, seed=4)
    assert logme(scale * f, labels) == pytest.approx(logme(f, labels), rel=1e-8)


@pytest.mark.parametrize("scale", [1e-3, 1e3])
@pytest.mark.parametrize(("n", "d"), [(60, 12), (30, 50)], ids=["N>D", "N<D"])
def test_logme_of_scaled_features_equals_the_brute_force_maximum(scale, n, d):
    # 11 steps from alpha = beta = 1 (the public reference code) miss these maxima, by
    # 5e-6 (N>D, x 1e-3) to 2.7 (N<D, x 1e3) relative.
    f, labels = _backbone_like(n, d, n_classes=3, seed=3)
    f = f * np.float32(scale)
    assert logme(f, labels) == pytest.approx(_brute_force_logme(f, labels), rel=1e-6)


@pytest.mark.parametrize(
    "rename",
    [
        lambda y: np.array(["zebra", "apple", "mango", "kiwi"])[y],
        lambda y: -3 - 2 * y,
        lambda y: np.array([0, 2, 7, 100])[y],
    ],
    ids=["strings", "negative-ints", "skipped-values"],
)
@pytest.mark.parametrize(("n", "d"), [(80, 8), (30, 60)], ids=["N>D", "N<D"])
def test_logme_is_invariant_to_label_renaming(rename, n, d):
    f, labels = _features(n, d, n_classes=4, seed=5)
    assert logme(f, rename(labels)) == pytest.approx(logme(f, labels), rel=1e-12)


@pytest.mark.parametrize(("n", "d"), [(80, 8), (30, 60)], ids=["N>D", "N<D"])
def test_logme_is_invariant_to_sample_order(n, d):
    f, labels = _features(n, d, n_classes=4, seed=6)
    order = np.random.default_rng(7).permutation(n)
    assert logme(f[order], labels[order]) == pytest.approx(logme(f, labels), rel=1e-10)


def test_logme_is_finite_when_labels_are_exactly_linear_in_the_features():
    # t lies in the column space of F, so ||t||^2 - ||z||^2 is 0 and rounds below it
    # (to about -8e-12 here): unclamped, that gave NaN.
    rng = np.random.default_rng(13)
    labels = np.arange(60) % 3
    rng.shuffle(labels)
    f = np.hstack([rng.normal(size=(60, 5)), np.eye(3)[labels] * rng.uniform(0.1, 10)])
    f = f @ rng.normal(size=(8, 8))
    assert np.isfinite(logme(f, labels))


def test_logme_is_higher_for_features_that_separate_the_classes():
    f, labels = _features(200, 16, n_classes=4, seed=9)
    noise = np.random.default_rng(10).normal(size=f.shape)
    assert logme(f, labels) > logme(noise, labels)


def test_logme_of_zero_features_is_the_noise_only_evidence():
    # F = 0 explains nothing: t ~ N(0, I/beta) at the best beta = N / ||t||^2.
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    n = labels.size
    per_class = [
        -0.5 * n * (np.log(2 * np.pi) + 1) + 0.5 * n * np.log(n / count) for count in (3, 5)
    ]
    assert logme(np.zeros((n, 4)), labels) == pytest.approx(np.mean(per_class) / n, rel=1e-12)
