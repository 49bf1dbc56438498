"""Source-head confidence and entropy: label-free measures of how source-like images look."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import entropy

from probes import ProbeError, source_confidence, source_entropy

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_source_confidence_is_the_mean_top_probability():
    theta = np.array([[0.7, 0.2, 0.1], [0.2, 0.3, 0.5]])
    assert source_confidence(theta) == pytest.approx(0.6, rel=1e-12)


def test_source_entropy_is_the_mean_entropy_over_log_of_the_source_classes():
    theta = _softmax(np.random.default_rng(0).normal(size=(50, 7)))
    expected = np.mean([entropy(row) for row in theta]) / np.log(7)
    assert source_entropy(theta) == pytest.approx(expected, rel=1e-12)


def test_source_entropy_is_one_for_uniform_and_zero_for_certain_predictions():
    assert source_entropy(np.full((4, 5), 0.2)) == pytest.approx(1.0, rel=1e-12)
    assert source_entropy(np.eye(5)[[0, 3, 3]]) == 0.0


def test_source_confidence_ranges_from_one_over_the_classes_to_one():
    assert source_confidence(np.full((4, 5), 0.2)) == pytest.approx(0.2, rel=1e-12)
    assert source_confidence(np.eye(5)[[0, 3, 3]]) == 1.0


def test_source_entropy_rejects_a_single_source_class():
    with pytest.raises(ProbeError, match="source_probs: has 1 column"):
        source_entropy(np.ones((4, 1)))


def test_source_head_measures_reject_logits():
    logits = np.random.default_rng(1).normal(size=(4, 3))
    for measure in (source_confidence, source_entropy):
        with pytest.raises(ProbeError, match="source_probs.*softmax"):
            measure(logits)
