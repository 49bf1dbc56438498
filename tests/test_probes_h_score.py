"""H-score (Bao et al. 2019) and shrinkage H-score (Ibrahim et al. 2022), against their
definitions written out with np.cov, np.linalg.pinv and sklearn's Ledoit-Wolf."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.covariance import ledoit_wolf

from probes import h_score, shrinkage_h_score

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def _class_mean_features(f: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """G: every row replaced by the mean of its class."""
    g = np.zeros_like(f)
    for c in np.unique(labels):
        g[labels == c] = f[labels == c].mean(axis=0)
    return g


def _reference_h_score(f: np.ndarray, labels: np.ndarray) -> float:
    cov_f = np.atleast_2d(np.cov(f, rowvar=False))
    cov_g = np.atleast_2d(np.cov(_class_mean_features(f, labels), rowvar=False))
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-15) @ cov_g))


def _reference_shrinkage_h_score(f: np.ndarray, labels: np.ndarray) -> float:
    f = f - f.mean(axis=0)
    cov_lw, shrinkage = ledoit_wolf(f)
    cov_g = np.atleast_2d(np.cov(_class_mean_features(f, labels), rowvar=False))
    return float(np.trace(np.linalg.pinv(cov_lw, rcond=1e-15) @ ((1 - shrinkage) * cov_g)))


def _blobs(n: int, d: int, n_classes: int, seed: int, sep: float = 1.0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    rng.shuffle(labels)
    scales = np.exp(-np.arange(d) / 10)  # a decaying spectrum, like real embeddings
    f = sep * rng.normal(size=(n_classes, d))[labels] + rng.normal(size=(n, d)) * scales
    return f, labels


@pytest.mark.parametrize(("n", "d", "n_classes"), [(60, 5, 3), (200, 30, 4), (12, 3, 2)])
@pytest.mark.parametrize("seed", [0, 1])
def test_h_score_equals_its_definition(n, d, n_classes, seed):
    f, labels = _blobs(n, d, n_classes, seed)
    assert h_score(f, labels) == pytest.approx(_reference_h_score(f, labels), rel=1e-10)


def test_h_score_is_the_trace_of_a_matrix_product_not_an_elementwise_one():
    # One public implementation multiplies pinv(cov F) and cov G element-wise instead of as
    # matrices (Bao et al. 2019 define tr(pinv(cov F) cov G)): 1226 instead of 3.43 on the
    # same data.
    f, labels = _blobs(100, 8, 4, seed=2)
    cov_f_pinv = np.linalg.pinv(np.cov(f, rowvar=False), rcond=1e-15)
    cov_g = np.cov(_class_mean_features(f, labels), rowvar=False)
    elementwise = float(np.trace(cov_f_pinv * cov_g))
    value = h_score(f, labels)
    assert value == pytest.approx(np.trace(cov_f_pinv @ cov_g), rel=1e-10)
    assert value != pytest.approx(elementwise, rel=1e-2)


@pytest.mark.parametrize(("n", "d"), [(30, 50), (40, 40), (10, 300)])
def test_h_score_saturates_at_classes_minus_one_when_samples_do_not_exceed_dimensions(n, d):
    rng = np.random.default_rng(3)
    labels = np.arange(n) % 4
    noise = rng.normal(size=(n, d))
    assert h_score(noise, labels) == pytest.approx(3.0, rel=1e-9)


def test_h_score_ignores_which_values_name_the_classes():
    # A y.max() + 1 class count makes the skipped values empty classes.
    f, labels = _blobs(80, 6, 3, seed=4)
    skipped = np.array([2, 9, 40])[labels]
    assert h_score(f, skipped) == pytest.approx(h_score(f, labels), rel=1e-12)


def test_h_score_is_invariant_to_invertible_affine_maps_of_the_features():
    f, labels = _blobs(120, 6, 3, seed=5)
    a = np.random.default_rng(6).normal(size=(6, 6))
    assert h_score(f @ a + 7.0, labels) == pytest.approx(h_score(f, labels), rel=1e-8)


def test_h_score_ignores_duplicated_and_constant_dimensions():
    f, labels = _blobs(60, 5, 3, seed=7)
    padded = np.hstack([f, f[:, :2], np.full((60, 3), 0.1)])
    assert h_score(padded, labels) == pytest.approx(h_score(f, labels), rel=1e-8)


@pytest.mark.parametrize("score", [h_score, shrinkage_h_score])
def test_constant_features_score_zero(score):
    assert score(np.full((20, 4), 0.1), np.arange(20) % 2) == 0.0


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    n=st.integers(4, 40),
    d=st.integers(1, 30),
    n_classes=st.integers(2, 4),
    seed=st.integers(0, 2**16),
)
def test_h_score_lies_between_zero_and_classes_minus_one(n, d, n_classes, seed):
    f, labels = _blobs(n, d, n_classes, seed)
    n_present = np.unique(labels).size
    assert -1e-9 <= h_score(f, labels) <= n_present - 1 + 1e-9


@pytest.mark.parametrize(
    ("n", "d", "n_classes"), [(60, 5, 3), (200, 30, 4), (30, 50, 3), (12, 3, 2), (40, 1, 2)]
)
@pytest.mark.parametrize("seed", [0, 1])
def test_shrinkage_h_score_equals_its_definition(n, d, n_classes, seed):
    f, labels = _blobs(n, d, n_classes, seed)
    expected = _reference_shrinkage_h_score(f, labels)
    assert shrinkage_h_score(f, labels) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_shrinkage_h_score_stays_near_zero_on_noise():
    rng = np.random.default_rng(8)
    labels = np.arange(400) % 4
    noise = rng.normal(size=(400, 20))
    assert shrinkage_h_score(noise, labels) < 0.05


def test_shrinkage_h_score_does_not_saturate_when_samples_do_not_exceed_dimensions():
    rng = np.random.default_rng(9)
    labels = np.arange(30) % 4
    noise = rng.normal(size=(30, 60))
    signal, signal_labels = _blobs(30, 60, 4, seed=9, sep=3.0)
    assert shrinkage_h_score(noise, labels) < 0.5 * shrinkage_h_score(signal, signal_labels)


def test_shrinkage_h_score_is_invariant_to_the_scale_of_the_features():
    f, labels = _blobs(80, 10, 3, seed=10)
    assert shrinkage_h_score(1e3 * f, labels) == pytest.approx(
        shrinkage_h_score(f, labels), rel=1e-9
    )


def test_both_scores_share_one_eigendecomposition_per_input(monkeypatch):
    """The spectrum is memoised by content: a block's two scores compute it once, other
    features or labels get their own, and a memoised value equals a fresh one."""
    import importlib

    module = importlib.import_module("probes.h_score")  # probes.h_score is the function
    rng = np.random.default_rng(3)
    f, labels = rng.normal(size=(80, 12)), np.arange(80) % 4
    module._MEMO.clear()
    fresh = (h_score(f, labels), shrinkage_h_score(f, labels))
    calls = []
    real = module._spectrum
    monkeypatch.setattr(module, "_spectrum", lambda *a: calls.append(1) or real(*a))
    module._MEMO.clear()
    assert (h_score(f, labels), shrinkage_h_score(f, labels)) == fresh
    assert len(calls) == 1
    h_score(f + 1e-3, labels)
    h_score(f, labels[::-1].copy())
    assert len(calls) == 3
