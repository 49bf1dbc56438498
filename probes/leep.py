"""LEEP: log expected empirical prediction of the source head on the target labels."""

from __future__ import annotations

import numpy as np

from probes._checks import check_source_probs, encode_labels
from probes.registry import Probe, register

# The checks and the per-sample terms work on float64 copies of the (N, Cs) softmax, a few
# times its size: above this many samples, a seeded stratified subset (probes._subsample)
# bounds that memory (~0.8 GB at Cs = 1000).
MAX_SAMPLES = 20_000


def leep(source_probs: np.ndarray, labels: np.ndarray) -> float:
    r"""LEEP: mean log-likelihood of the target labels under the source head's re-mapping.

    With :math:`\theta` (N, Cs) the source head's softmax on the target images, the
    empirical joint of target class y and source class z is
    :math:`P(y, z) = \frac1N \sum_i \theta_{iz}\,[y_i = y]`, the conditional
    :math:`P(y \mid z) = P(y, z) / P(z)`, and

    .. math::

        \mathrm{LEEP} = \frac1N \sum_i \log \sum_z P(y_i \mid z)\, \theta_{iz}.

    It is the average log-likelihood of the "expected empirical predictor" that maps the
    source prediction to target classes; a source class no target image activates
    (:math:`P(z) = 0`) contributes nothing.

    Parameters
    ----------
    source_probs : array of shape (N, Cs)
        Softmax probabilities of the source classifier on the target images; rows must
        sum to 1 within 1e-3 (they are renormalised to exactly 1).
    labels : array of shape (N,)
        Target class labels of any hashable values; at least 2 classes.

    Returns
    -------
    float
        In nats, at most 0; higher (closer to 0) means the source head's predictions
        already separate the target classes.

    Raises
    ------
    ProbeError
        If ``source_probs`` is not a finite 2-D array of probabilities with one row per
        label, or the labels hold fewer than 2 classes.

    References
    ----------
    C. Nguyen, T. Hassner, M. Seeger, C. Archambeau. "LEEP: A New Measure to Evaluate
    Transferability of Learned Representations." ICML 2020.
    """
    theta = check_source_probs(source_probs)
    codes, n_classes = encode_labels(labels, n_samples=theta.shape[0])
    return float(np.mean(np.log(_eep_likelihood(theta, codes, n_classes))))


def _eep_likelihood(theta: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    """p(y_i | x_i) under the expected empirical predictor, for each sample (N,)."""
    joint = np.zeros((n_classes, theta.shape[1]))
    np.add.at(joint, codes, theta)  # N * P(y, z)
    marginal = joint.sum(axis=0)  # N * P(z)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    return np.einsum("iz,iz->i", theta, conditional[codes])


register(
    Probe(
        name="leep",
        func=leep,
        needs=("source_probs", "labels"),
        higher_is_better=True,
        meaning="log-likelihood of the labels re-mapped from the source head; near 0 is best",
        reference="Nguyen et al., LEEP, ICML 2020",
        label="LEEP",
        unit="nats",
        max_samples=MAX_SAMPLES,
    )
)
