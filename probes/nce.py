"""NCE: negative conditional entropy of the target labels given the source head's top class."""

from __future__ import annotations

import numpy as np

from probes._checks import check_source_probs, encode_labels
from probes.registry import Probe, register

# The checks and the per-sample terms work on float64 copies of the (N, Cs) softmax, a few
# times its size: above this many samples, a seeded stratified subset (probes._subsample)
# bounds that memory (~0.8 GB at Cs = 1000).
MAX_SAMPLES = 20_000


def nce(source_probs: np.ndarray, labels: np.ndarray) -> float:
    r"""NCE: minus the conditional entropy of the target label given the source prediction.

    With :math:`z_i = \arg\max_z \theta_{iz}` the source head's predicted class (the first
    one on a tie) and the empirical joint :math:`P(y, z) = \frac1N \#\{i: y_i = y, z_i = z\}`,

    .. math::

        \mathrm{NCE} = -H(Y \mid Z) = \sum_{y, z} P(y, z) \log \frac{P(y, z)}{P(z)},

    pairs never seen contributing 0 (:math:`0 \log 0 = 0`).

    Parameters
    ----------
    source_probs : array of shape (N, Cs)
        Softmax probabilities of the source classifier on the target images; rows must
        sum to 1 within 1e-3.
    labels : array of shape (N,)
        Target class labels of any hashable values; at least 2 classes.

    Returns
    -------
    float
        In nats, in [-log C, 0]; higher (closer to 0) means the source head's predicted
        class determines the target class more completely.

    Raises
    ------
    ProbeError
        If ``source_probs`` is not a finite 2-D array of probabilities with one row per
        label, or the labels hold fewer than 2 classes.

    References
    ----------
    A. T. Tran, C. V. Nguyen, T. Hassner. "Transferability and Hardness of Supervised
    Classification Tasks." ICCV 2019.
    """
    theta = check_source_probs(source_probs)
    codes, n_classes = encode_labels(labels, n_samples=theta.shape[0])
    n, n_source = theta.shape
    predicted = np.argmax(theta, axis=1)
    joint = np.bincount(codes * n_source + predicted, minlength=n_classes * n_source)
    joint = joint.reshape(n_classes, n_source).astype(np.float64)
    marginal = np.broadcast_to(joint.sum(axis=0), joint.shape)  # N * P(z)
    seen = joint > 0
    return float(np.sum(joint[seen] * np.log(joint[seen] / marginal[seen])) / n)


register(
    Probe(
        name="nce",
        func=nce,
        needs=("source_probs", "labels"),
        higher_is_better=True,
        meaning="minus the entropy of the label given the source head's top class; near 0 is best",
        reference="Tran et al., Transferability and Hardness of Supervised Classification "
        "Tasks, ICCV 2019",
        label="NCE",
        unit="nats",
        max_samples=MAX_SAMPLES,
    )
)
