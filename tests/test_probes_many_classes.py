"""Probes on many classes of few samples: scikit-learn's warnings never reach the user."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import probes


@pytest.fixture(scope="module")
def many_classes() -> dict[str, np.ndarray]:
    """400 classes of 2 samples, D=32: most classes have one sample in each training fold."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(400), 2)
    n, d = labels.size, 32
    logits = rng.normal(size=(n, 1000))
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return {
        "features": rng.normal(size=(400, d))[labels] + rng.normal(size=(n, d)),
        "random_features": rng.normal(size=(n, d)),
        "source_probs": probs / probs.sum(axis=1, keepdims=True),
        "labels": labels,
        "bn_stats": rng.lognormal(size=(4, 3 * d)),
    }


@pytest.mark.parametrize("probe", probes.list_probes(), ids=lambda p: p.name)
def test_probe_leaks_no_warning_on_many_classes_of_two_samples(probe, many_classes):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = probes.compute(probe, **many_classes).value
    assert np.isfinite(value)
