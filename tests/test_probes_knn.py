"""Leave-one-out k-NN accuracy by cosine similarity, against a loop over samples."""

from __future__ import annotations

import numpy as np
import pytest

from probes import ProbeError, knn_accuracy
from probes import knn as knn_module

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def _reference_knn_accuracy(f: np.ndarray, labels: np.ndarray, k: int) -> float:
    """For each sample: the others more similar than the k-th most similar get a vote
    each; the m tied with the k-th share the r places left, r/m of a vote each. The class
    with most votes wins, then the one with the largest similarity summed with the same
    weights; m classes still tied give 1/m credit to each."""
    unit = f / np.linalg.norm(f, axis=1, keepdims=True)
    similarity = unit @ unit.T
    n = len(labels)
    k = min(k, n - 1)
    credit = []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        kth = sorted((similarity[i, j] for j in others), reverse=True)[k - 1]
        above = [j for j in others if similarity[i, j] > kth]
        tied = [j for j in others if similarity[i, j] == kth]
        weight = {j: 1.0 for j in above} | {j: (k - len(above)) / len(tied) for j in tied}
        scores = {}
        for c in set(labels[list(weight)]):
            members = [j for j in weight if labels[j] == c]
            votes = sum(weight[j] for j in members)
            scores[c] = (round(votes, 9), sum(weight[j] * similarity[i, j] for j in members))
        best = max(scores.values())
        winners = [c for c, score in scores.items() if score == best]
        credit.append((labels[i] in winners) / len(winners))
    return float(np.mean(credit))


def _blobs(n: int, d: int, n_classes: int, seed: int, sep: float = 1.0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    rng.shuffle(labels)
    return sep * rng.normal(size=(n_classes, d))[labels] + rng.normal(size=(n, d)), labels


@pytest.mark.parametrize("k", [1, 3, 10, 100])
@pytest.mark.parametrize(("n", "d"), [(60, 5), (40, 30)])
def test_knn_accuracy_equals_its_definition(k, n, d):
    f, labels = _blobs(n, d, 3, seed=k + n)
    assert knn_accuracy(f, labels, k=k) == pytest.approx(
        _reference_knn_accuracy(f, labels, k), rel=1e-12
    )


def test_knn_accuracy_is_one_for_well_separated_classes():
    f, labels = _blobs(60, 8, 3, seed=1, sep=20.0)
    assert knn_accuracy(f, labels) == 1.0


def test_knn_accuracy_uses_the_angle_not_the_length_of_features():
    f, labels = _blobs(60, 8, 3, seed=2)
    lengths = np.random.default_rng(3).uniform(0.1, 10.0, size=(60, 1))
    assert knn_accuracy(f * lengths, labels) == knn_accuracy(f, labels)


def test_knn_accuracy_shares_the_last_places_among_samples_tied_for_them():
    # Sample 0 (class 0): nearest is sample 1 (class 1); samples 2-5 tie for the one place
    # left with k = 2, a quarter vote each. Class 1 gets 1 + 1/4, class 0 gets 3/4: wrong.
    # (Counting every tied sample as a full vote would make class 0 win 3 to 2.)
    f = np.array([[1, 0, 0], [1, 0.1, 0], [1, 0.5, 0], [1, -0.5, 0], [1, 0, 0.5], [1, 0, -0.5]])
    labels = np.array([0, 1, 0, 0, 0, 1])
    assert knn_module._chunk_credit(_unit32(f), labels, 2, start=0, k=2)[0] == 0.0


def test_knn_accuracy_is_not_swamped_by_a_large_group_tied_for_the_last_place():
    # One-hot features: 9 identical samples of a sample's own class (similarity 1) and 20
    # of the other classes at similarity 0, tied for the 10th place: they share it.
    labels = np.arange(30) % 3
    assert knn_accuracy(np.eye(3)[labels], labels, k=10) == 1.0


def test_knn_accuracy_breaks_vote_ties_by_summed_similarity():
    # Sample 0 has one neighbour of each class (k = 2); class 0's is the more similar.
    f = np.array([[1.0, 0.0], [1.0, 0.1], [1.0, -0.3], [-1.0, 0.0], [-1.0, 0.3]])
    labels = np.array([0, 0, 1, 1, 1])
    assert knn_module._chunk_credit(_unit32(f), labels, 2, start=0, k=2)[0] == 1.0


def test_knn_accuracy_shares_the_credit_of_a_tie_it_cannot_break():
    # Three identical samples: all similarities tie, so the other two are both neighbours.
    # Sample "x" sees two votes for "y": wrong. Each "y" sees one vote each for "x" and
    # "y", equally similar: half right. Mean credit (0 + 1/2 + 1/2) / 3.
    labels = np.array(["x", "y", "y"])
    assert knn_accuracy(np.ones((3, 2)), labels, k=1) == pytest.approx(1 / 3)


def test_knn_accuracy_is_invariant_to_sample_order_with_duplicated_samples():
    f, labels = _blobs(50, 4, 3, seed=4)
    f = np.vstack([f, f[:10]])
    labels = np.r_[labels, (labels[:10] + 1) % 3]  # same features, another class
    value = knn_accuracy(f, labels, k=3)
    for seed in range(3):
        order = np.random.default_rng(seed).permutation(60)
        assert knn_accuracy(f[order], labels[order], k=3) == value


def test_knn_accuracy_classifies_a_zero_row_by_the_majority_of_all_other_samples():
    # A zero row has similarity 0 to everything, so all 30 others are tied neighbours.
    f, _ = _blobs(31, 4, 3, seed=5)
    f[0] = 0.0
    labels = np.r_[0, np.repeat([0, 1, 2], [14, 8, 8])]
    assert knn_module._chunk_credit(_unit32(f), labels, 3, start=0, k=10)[0] == 1.0
    labels[0] = 1
    assert knn_module._chunk_credit(_unit32(f), labels, 3, start=0, k=10)[0] == 0.0


def test_knn_accuracy_does_not_depend_on_the_chunk_size(monkeypatch):
    f, labels = _blobs(70, 6, 4, seed=6)
    value = knn_accuracy(f, labels, k=5)
    monkeypatch.setattr(knn_module, "CHUNK", 8)
    assert knn_accuracy(f, labels, k=5) == value


def test_knn_accuracy_never_gets_a_class_of_one_sample_right():
    f, labels = _blobs(30, 4, 2, seed=7)
    labels = np.r_[labels[:-1], 2]  # class codes 0 and 1, and a single sample of 2
    credit = knn_module._chunk_credit(_unit32(f), labels, 3, start=0, k=1)
    assert credit[-1] == 0.0
    assert knn_accuracy(f, labels, k=1) == pytest.approx(credit.mean(), rel=1e-12)


def test_knn_accuracy_caps_k_at_the_other_samples():
    f, labels = _blobs(12, 3, 2, seed=8)
    assert knn_accuracy(f, labels, k=500) == knn_accuracy(f, labels, k=11)


@pytest.mark.parametrize("k", [0, -3, 2.5, True, "10"])
def test_knn_accuracy_rejects_a_k_that_is_not_a_positive_integer(k):
    f, labels = _blobs(12, 3, 2, seed=9)
    with pytest.raises(ProbeError, match="k: expected a positive integer"):
        knn_accuracy(f, labels, k=k)


def _unit32(f: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm in float32, as knn_accuracy gives them to _chunk_credit."""
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    return (f / np.where(norms > 0, norms, 1.0)).astype(np.float32)
