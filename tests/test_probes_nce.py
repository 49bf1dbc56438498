"""NCE (Tran et al. 2019): minus the conditional entropy of target given source prediction."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import entropy
from sklearn.metrics import mutual_info_score

from probes import nce

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _source_probs(labels: np.ndarray, n_source: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(labels.size, n_source))
    logits[np.arange(labels.size), labels % n_source] += 1.0
    return _softmax(logits)


def test_nce_matches_a_hand_computed_example():
    # Predicted source classes z = [0, 0, 1, 1, 1]; targets y = [a, a, a, b, b].
    # H(Y | Z) = P(z=0) * 0 + P(z=1) * H(1/3, 2/3).
    theta = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7], [0.1, 0.9]])
    labels = np.array(["a", "a", "a", "b", "b"])
    expected = -0.6 * -(np.log(1 / 3) / 3 + 2 * np.log(2 / 3) / 3)
    assert nce(theta, labels) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("n", "n_classes", "n_source"), [(100, 4, 6), (50, 3, 2), (300, 10, 20)])
def test_nce_is_mutual_information_minus_label_entropy(n, n_classes, n_source):
    # -H(Y | Z) = I(Y; Z) - H(Y), both from counts.
    labels = np.random.default_rng(n).integers(0, n_classes, size=n)
    theta = _source_probs(labels, n_source, seed=n + 1)
    predicted = theta.argmax(axis=1)
    expected = mutual_info_score(labels, predicted) - entropy(np.bincount(labels))
    assert nce(theta, labels) == pytest.approx(expected, rel=1e-10)


def test_nce_is_zero_when_the_source_prediction_determines_the_target():
    labels = np.repeat([0, 1, 2], 10)
    theta = np.full((30, 5), 0.05)
    theta[np.arange(30), np.array([4, 0, 2])[labels]] = 0.8
    assert nce(theta, labels) == 0.0


def test_nce_is_minus_the_label_entropy_when_the_source_predicts_one_class():
    labels = np.repeat([0, 1, 2], [5, 10, 15])
    theta = np.tile([0.7, 0.2, 0.1], (30, 1))
    assert nce(theta, labels) == pytest.approx(-entropy([5, 10, 15]), rel=1e-12)


def test_nce_ignores_source_classes_never_predicted():
    labels = np.random.default_rng(1).integers(0, 3, size=40)
    theta = _source_probs(labels, 4, seed=2)
    padded = np.hstack([theta, np.zeros((40, 3))])
    assert nce(padded, labels) == pytest.approx(nce(theta, labels), rel=1e-12)


def test_nce_ignores_which_values_name_the_classes():
    labels = np.random.default_rng(3).integers(0, 3, size=40)
    theta = _source_probs(labels, 4, seed=4)
    assert nce(theta, np.array([3, 50, 7])[labels]) == pytest.approx(nce(theta, labels))
