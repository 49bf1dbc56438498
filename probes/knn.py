"""k-NN accuracy: leave-one-out nearest-neighbour classification by cosine similarity."""

from __future__ import annotations

import numpy as np

from probes._checks import ProbeError, check_features, encode_labels, unit_peak
from probes.linear_probe import content_order
from probes.registry import Probe, register

DEFAULT_K = 10
# Rows of the similarity matrix computed at once: memory is O(N * CHUNK).
CHUNK = 1024
# Leave-one-out over N samples costs O(N^2 D): above this many, the registry runs it on a
# seeded stratified subset (probes._subsample), ~35 s at D = 1280 on one core.
MAX_SAMPLES = 20_000


def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = DEFAULT_K) -> float:
    r"""Leave-one-out accuracy of a k-nearest-neighbour vote under cosine similarity.

    Each sample is classified by the other N - 1: its k most cosine-similar samples vote,
    one vote each, with k capped at N - 1. The result is independent of the order of the
    samples and of the names of the classes, because ties are settled by rules that use
    neither:

    - when m samples tie with the k-th most similar for the r places left, each of them
      gets r/m of a vote (the expected vote of a random pick among them), so the votes
      always total k;
    - classes tied on votes are separated by their summed similarity, weighted alike;
    - classes still tied share the credit: the sample counts as 1/m correct when its
      class is one of the m winners (the expected accuracy of a random tie-break).

    Similarities are dot products of the rows scaled to unit L2 norm, in float32. A zero
    row has no direction: it is given similarity 0 to every sample, so it is classified
    by all N - 1 others (the majority class), and is neither near nor far for them.
    The samples are put in a canonical order (:mod:`probes._order`) before the
    similarity matrix is computed, CHUNK rows at a time, so that even rounding does not
    depend on their order. Cost :math:`O(N^2 D)`, memory :math:`O(N \cdot CHUNK)`.

    Parameters
    ----------
    features : array of shape (N, D)
        Frozen features, finite.
    labels : array of shape (N,)
        Class labels of any hashable values; at least 2 classes.
    k : int, default 10
        Number of neighbours, >= 1 (capped at N - 1).

    Returns
    -------
    float
        Fraction of samples classified correctly, in [0, 1]; higher is better. A class
        with a single sample is always misclassified (no other sample shares its label).

    Raises
    ------
    ProbeError
        If the features are not a finite 2-D array, the labels do not match them or hold
        fewer than 2 classes, or ``k`` is not a positive integer.
    """
    f = check_features(features)
    codes, n_classes = encode_labels(labels, n_samples=f.shape[0])
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ProbeError(f"k: expected a positive integer number of neighbours, got {k!r}.")
    order = content_order(f)
    f, codes = f[order], codes[order]
    scaled = unit_peak(f)  # cosine is scale-free; this keeps the norms finite and non-zero
    norms = np.linalg.norm(scaled, axis=1, keepdims=True)
    unit = (scaled / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    k = min(int(k), f.shape[0] - 1)
    credit = [
        _chunk_credit(unit, codes, n_classes, start, k) for start in range(0, f.shape[0], CHUNK)
    ]
    return float(np.mean(np.concatenate(credit)))


def _chunk_credit(
    unit: np.ndarray, codes: np.ndarray, n_classes: int, start: int, k: int
) -> np.ndarray:
    """Credit (1, 1/m or 0) of the samples start..start+CHUNK under the vote."""
    n = unit.shape[0]
    queries = np.arange(start, min(start + CHUNK, n))
    size = queries.size
    similarity = unit[queries] @ unit.T
    similarity[np.arange(size), queries] = -np.inf  # leave the sample itself out
    kth = np.partition(similarity, n - k, axis=1)[:, n - k]
    row, col = np.nonzero(similarity >= kth[:, None])  # row-major: columns in order
    closeness = similarity[row, col].astype(np.float64)
    tied = closeness == kth[row]
    n_tied = np.bincount(row[tied], minlength=size)
    places = k - np.bincount(row[~tied], minlength=size)  # left for the tied, >= 1
    # Per (query, class) by bincount, which sums each class's samples in column order
    # whatever the class names, so that equal sums stay equal.
    key = row * n_classes + codes[col]
    above_votes = np.bincount(key[~tied], minlength=size * n_classes).reshape(size, -1)
    tied_votes = np.bincount(key[tied], minlength=size * n_classes).reshape(size, -1)
    # Votes times n_tied, to stay integers: 1 per sample above, places/n_tied per tied.
    votes = n_tied[:, None] * above_votes + places[:, None] * tied_votes
    weight = np.where(tied, places[row] / n_tied[row], 1.0)
    closeness = np.bincount(key, weights=weight * closeness, minlength=size * n_classes)
    closeness = np.where(
        votes == votes.max(axis=1, keepdims=True), closeness.reshape(size, -1), -np.inf
    )
    winners = closeness == closeness.max(axis=1, keepdims=True)
    return winners[np.arange(size), codes[queries]] / winners.sum(axis=1)


register(
    Probe(
        name="knn_accuracy",
        func=knn_accuracy,
        needs=("features", "labels"),
        higher_is_better=True,
        meaning="leave-one-out accuracy of a 10-nearest-neighbour vote by cosine similarity; "
        "higher is better",
        reference="Cover & Hart, Nearest Neighbor Pattern Classification, IEEE Trans. Inf. "
        "Theory 1967; k-NN on frozen features as in Wu et al., CVPR 2018",
        label="kNN acc",
        unit="fraction",
        max_samples=MAX_SAMPLES,
    )
)
