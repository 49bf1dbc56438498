"""LEEP (Nguyen et al. 2020): the log of the expected empirical prediction."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss

from probes import ProbeError, leep


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _source_probs(n: int, n_source: int, labels: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, n_source))
    logits[np.arange(n), labels % n_source] += 2.0  # some affinity source -> target
    return _softmax(logits)


def test_leep_matches_a_hand_computed_example():
    theta = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8]])
    labels = np.array([0, 0, 1, 1])
    # N P(y, z) = [[1.7, 0.3], [0.5, 1.5]], N P(z) = [2.2, 1.8], so P(y=0 | z) = [17/22, 1/6]
    # and P(y=1 | z) = [5/22, 5/6]; the four EEP likelihoods are 47/66, 43/66, 43/66, 47/66.
    expected = 0.5 * (np.log(47 / 66) + np.log(43 / 66))
    assert leep(theta, labels) == pytest.approx(expected, rel=1e-12)


def test_leep_is_the_mean_log_likelihood_of_the_expected_empirical_predictor():
    labels = np.random.default_rng(0).integers(0, 4, size=100)
    theta = _source_probs(100, 6, labels, seed=1)
    joint = np.array([theta[labels == y].sum(axis=0) for y in range(4)]) / 100
    conditional = joint / joint.sum(axis=0)  # P(y | z)
    eep = theta @ conditional.T  # row i: p(y | x_i) for every target class y
    assert leep(theta, labels) == pytest.approx(-log_loss(labels, eep), rel=1e-10)


def test_leep_is_near_zero_for_a_perfect_source_to_target_mapping():
    labels = np.repeat([0, 1, 2], 20)
    source_class = np.array([3, 0, 1])[labels]  # each target class is one source class
    theta = np.full((60, 5), 1e-6)
    theta[np.arange(60), source_class] = 1.0
    theta /= theta.sum(axis=1, keepdims=True)
    assert -1e-4 < leep(theta, labels) <= 0.0


def test_leep_is_at_most_zero():
    labels = np.random.default_rng(2).integers(0, 3, size=50)
    assert leep(_source_probs(50, 4, labels, seed=3), labels) <= 0.0


def test_leep_is_invariant_to_the_order_of_source_classes():
    labels = np.random.default_rng(4).integers(0, 3, size=80)
    theta = _source_probs(80, 7, labels, seed=5)
    columns = np.random.default_rng(6).permutation(7)
    assert leep(theta[:, columns], labels) == pytest.approx(leep(theta, labels), rel=1e-12)


def test_leep_ignores_source_classes_no_image_activates():
    labels = np.random.default_rng(7).integers(0, 3, size=40)
    theta = _source_probs(40, 4, labels, seed=8)
    padded = np.hstack([theta, np.zeros((40, 2))])  # P(z) = 0: no 0/0 in P(y | z)
    assert leep(padded, labels) == pytest.approx(leep(theta, labels), rel=1e-12)


def test_leep_rejects_logits_and_says_to_pass_softmax_probabilities():
    labels = np.array([0, 1, 0, 1])
    logits = np.random.default_rng(9).normal(size=(4, 3))
    with pytest.raises(ProbeError, match="source_probs.*softmax"):
        leep(logits, labels)


def test_leep_rejects_rows_that_do_not_sum_to_one():
    theta = np.array([[0.5, 0.4], [0.5, 0.5], [0.2, 0.8]])
    with pytest.raises(ProbeError, match="source_probs: row 0 sums to 0.9"):
        leep(theta, np.array([0, 1, 1]))


def test_leep_accepts_rows_off_by_float32_rounding():
    labels = np.random.default_rng(10).integers(0, 3, size=30)
    theta = _source_probs(30, 5, labels, seed=11)
    assert leep(theta * (1 + 1e-5), labels) == pytest.approx(leep(theta, labels), rel=1e-9)


def test_leep_rejects_a_label_count_that_differs_from_the_rows():
    theta = _softmax(np.zeros((5, 3)))
    with pytest.raises(ProbeError, match="labels: got 4 labels for 5 samples"):
        leep(theta, np.array([0, 1, 0, 1]))


def test_leep_takes_the_log_of_the_likelihood():
    # Some copies average the expected empirical likelihood without the log: not LEEP.
    theta = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8]])
    labels = np.array([0, 0, 1, 1])
    without_log = 0.5 * (47 / 66 + 43 / 66)
    assert leep(theta, labels) == pytest.approx(0.5 * np.log(47 * 43 / 66**2), rel=1e-12)
    assert leep(theta, labels) != pytest.approx(without_log, rel=1e-3)


def test_leep_ignores_which_values_name_the_classes():
    # With y.max() + 1 classes, skipped values become empty classes.
    labels = np.random.default_rng(12).integers(0, 3, size=60)
    theta = _source_probs(60, 5, labels, seed=13)
    skipped = np.array([0, 4, 90])[labels]
    assert leep(theta, skipped) == pytest.approx(leep(theta, labels), rel=1e-12)
