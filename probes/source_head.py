"""Source-head confidence and entropy: how source-like the target images look to the model."""

from __future__ import annotations

import numpy as np

from probes._checks import ProbeError, check_source_probs
from probes.registry import Probe, register

# The checks and the per-sample terms work on float64 copies of the (N, Cs) softmax, a few
# times its size: above this many samples, a seeded stratified subset (probes._subsample)
# bounds that memory (~0.8 GB at Cs = 1000).
MAX_SAMPLES = 20_000

_REFERENCE = (
    "Hendrycks & Gimpel, A Baseline for Detecting Misclassified and Out-of-Distribution "
    "Examples, ICLR 2017"
)


def source_confidence(source_probs: np.ndarray) -> float:
    r"""Mean maximum softmax probability of the source head on the target images.

    .. math::

        \frac1N \sum_i \max_z \theta_{iz}

    A high value means the pre-trained classifier recognises its own classes in the
    target images: the target looks like the source domain. It says nothing about the
    target classes (no labels are used).

    Parameters
    ----------
    source_probs : array of shape (N, Cs)
        Softmax probabilities of the source classifier on the target images; rows must
        sum to 1 within 1e-3.

    Returns
    -------
    float
        In [1/Cs, 1]; higher means more source-like images.

    Raises
    ------
    ProbeError
        If ``source_probs`` is not a finite 2-D array of probabilities.

    References
    ----------
    D. Hendrycks, K. Gimpel. "A Baseline for Detecting Misclassified and
    Out-of-Distribution Examples in Neural Networks." ICLR 2017.
    """
    theta = check_source_probs(source_probs)
    return float(np.mean(theta.max(axis=1)))


def source_entropy(source_probs: np.ndarray) -> float:
    r"""Mean entropy of the source head's prediction, normalised by its maximum log Cs.

    .. math::

        \frac1N \sum_i \frac{-\sum_z \theta_{iz} \log \theta_{iz}}{\log C_s},
        \qquad 0 \log 0 = 0.

    Parameters
    ----------
    source_probs : array of shape (N, Cs)
        Softmax probabilities of the source classifier on the target images; rows must
        sum to 1 within 1e-3; Cs >= 2.

    Returns
    -------
    float
        In [0, 1]; lower means more confident, more source-like predictions (0: one class
        with certainty, 1: uniform over the source classes).

    Raises
    ------
    ProbeError
        If ``source_probs`` is not a finite 2-D array of probabilities, or has a single
        column (the entropy of one class is always 0 and cannot be normalised).

    References
    ----------
    D. Hendrycks, K. Gimpel. "A Baseline for Detecting Misclassified and
    Out-of-Distribution Examples in Neural Networks." ICLR 2017.
    """
    theta = check_source_probs(source_probs)
    n_source = theta.shape[1]
    if n_source < 2:
        raise ProbeError(
            "source_probs: has 1 column, need at least 2 source classes to normalise the "
            "entropy by log Cs; pass the full softmax of the source head."
        )
    positive = theta > 0
    plogp = np.zeros_like(theta)
    plogp[positive] = theta[positive] * np.log(theta[positive])
    return float(np.mean(-plogp.sum(axis=1)) / np.log(n_source))


register(
    Probe(
        name="source_confidence",
        func=source_confidence,
        needs=("source_probs",),
        higher_is_better=True,
        meaning="mean top softmax probability of the source head, how source-like the images "
        "look; higher is better (more source-like)",
        reference=_REFERENCE,
        label="src conf",
        unit="fraction",
        max_samples=MAX_SAMPLES,
    )
)

register(
    Probe(
        name="source_entropy",
        func=source_entropy,
        needs=("source_probs",),
        higher_is_better=False,
        meaning="mean entropy of the source head's softmax over log Cs; lower is better (more "
        "source-like)",
        reference=_REFERENCE,
        label="src entr",
        unit="fraction",
        max_samples=MAX_SAMPLES,
    )
)
