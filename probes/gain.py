"""Pre-training gain: what the pre-trained weights add over the same architecture untrained."""

from __future__ import annotations

import numpy as np

from probes._checks import check_features, check_same_samples, encode_labels
from probes.linear_probe import content_order, cross_validate, default_repeats, plan_folds
from probes.registry import Probe, get_probe, register


def pretraining_gain(
    features: np.ndarray,
    random_features: np.ndarray,
    labels: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
) -> float:
    """Linear-probe accuracy on pre-trained features minus that on random-init features.

    Both probes run on the folds and inner splits :func:`probes.linear_probe_cv` draws for
    ``features``, so the first term is exactly ``linear_probe_accuracy(features, labels)``
    and the difference is not blurred by different splits. A cheap stand-in for the
    paper's "scratch minus probe" gap: how much of the target's linear separability
    comes from pre-training rather than from the architecture's random features.

    Parameters
    ----------
    features : array of shape (N, D)
        Features of the pre-trained model.
    random_features : array of shape (N, D')
        Features of the same architecture at random initialisation, same images and order.
    labels : array of shape (N,)
        Class labels of any sortable values; at least 2 classes with 2 or more samples.
    folds, seed : int
        As in :func:`probes.linear_probe_cv`.

    Returns
    -------
    float
        Difference of accuracies, in [-1, 1]; higher means pre-training helps more.

    Raises
    ------
    ProbeError
        If either feature array is invalid, they differ in sample count, or the labels
        do not allow a cross-validated probe.
    """
    return float(_gain_per_fold(features, random_features, labels, folds=folds, seed=seed).mean())


def _gain_per_fold(
    features: np.ndarray, random_features: np.ndarray, labels: np.ndarray, *, folds: int, seed: int
) -> np.ndarray:
    """Accuracy difference in each outer fold (of every draw: as the linear probe's)."""
    x = check_features(features)
    x_random = check_features(random_features, name="random_features")
    check_same_samples("random_features", x_random, x.shape[0])
    codes, _ = encode_labels(labels, n_samples=x.shape[0])
    order = content_order(x)
    x, x_random, codes = x[order], x_random[order], codes[order]
    plan = plan_folds(codes, folds, seed, repeats=default_repeats(x.shape[0]))
    pretrained = cross_validate(x, codes, plan)
    untrained = cross_validate(x_random, codes, plan)
    return np.subtract(pretrained.fold_scores, untrained.fold_scores)


def _gain_spread(
    features: np.ndarray, random_features: np.ndarray, labels: np.ndarray
) -> tuple[float, float]:
    per_fold = _gain_per_fold(features, random_features, labels, folds=5, seed=0)
    return float(per_fold.mean()), float(per_fold.std())


register(
    Probe(
        name="pretraining_gain",
        func=pretraining_gain,
        needs=("features", "random_features", "labels"),
        higher_is_better=True,
        meaning="probe accuracy on pre-trained minus on random-init features of the same "
        "network; higher is better",
        reference="Plested et al. 2021's scratch-minus-probe gap, stand-in without training; "
        "Yosinski et al., NeurIPS 2014 (random-feature baseline)",
        label="PT gain",
        unit="fraction",
        spread=_gain_spread,
        # The linear probe's cap: the same rows, so its fit on the pre-trained features is
        # re-used (memoised) rather than repeated on another subset.
        max_samples=get_probe("linear_probe_accuracy").max_samples,
    )
)
