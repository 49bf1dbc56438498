"""Linear CKA, biased and debiased: exact against the plain N x N formulas, and its invariances."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ortho_group

from probes import ProbeError, block_cka, linear_cka
from probes import cka as cka_module


def _reference_hsic(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """tr(KHLH) / (n-1)^2 with the centring matrix H, as Kornblith et al. (2019) write it."""
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ l @ h)) / (n - 1) ** 2


def _reference_unbiased_hsic(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """Song et al. (2012), eq. 5, on uncentred kernels with their diagonals zeroed."""
    n = k.shape[0]
    kt, lt = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    one = np.ones(n)
    return float(np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
                 - 2.0 / (n - 2) * one @ kt @ lt @ one) / (n * (n - 3))


def _reference_cka(x: np.ndarray, y: np.ndarray, debiased: bool) -> float:
    hsic = _reference_unbiased_hsic if debiased else _reference_hsic
    k, l = x @ x.T, y @ y.T  # noqa: E741
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def _pair(n: int, d1: int, d2: int, seed: int = 0, shared: float = 1.0):
    """Two representations of n samples that share a 3-dimensional signal."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    x = z @ rng.normal(size=(3, d1)) + rng.normal(size=(n, d1)) + 2.0
    y = shared * z @ rng.normal(size=(3, d2)) + rng.normal(size=(n, d2)) - 5.0
    return x, y


@pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])
@pytest.mark.parametrize(("n", "d1", "d2"), [(40, 5, 7), (12, 30, 50), (30, 3, 400)],
                         ids=["D<N (feature space)", "D>N (kernels)", "mixed"])
def test_cka_equals_the_plain_kernel_formula(debiased, n, d1, d2):
    x, y = _pair(n, d1, d2)
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(
        _reference_cka(x, y, debiased), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])
def test_the_feature_space_and_kernel_forms_agree(debiased, monkeypatch):
    x, y = _pair(60, 8, 6, seed=3)
    feature_space = linear_cka(x, y, debiased=debiased)
    kernels = cka_module._frobenius_cross

    def always_kernels(xc, yc):
        return float(np.sum((xc @ xc.T) * (yc @ yc.T)))

    monkeypatch.setattr(cka_module, "_frobenius_cross", always_kernels)
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(feature_space, rel=1e-12)
    assert kernels is not always_kernels


def test_the_feature_space_form_builds_no_n_by_n_matrix():
    # 20 000 samples: one N x N float64 kernel would take 3.2 GB; numpy reports its
    # allocations to tracemalloc.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 8))
    y = x @ rng.normal(size=(8, 5)) + 0.1 * rng.normal(size=(20_000, 5))
    tracemalloc.start()
    try:
        value = linear_cka(x, y, debiased=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 0.5 < value <= 1.0
    assert peak < 20 * x.nbytes  # a few copies of the inputs, nothing N x N


@pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])
def test_a_representation_is_identical_to_itself(debiased):
    x, _ = _pair(25, 6, 6)
    assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), scale=st.sampled_from([1e-6, 0.3, 7.0, 1e5]),
       debiased=st.booleans(), n=st.integers(6, 40), d=st.integers(1, 9))
def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling(seed, scale, debiased,
                                                                         n, d):
    x, y = _pair(n, d, 4, seed=seed)
    q = ortho_group.rvs(d, random_state=seed) if d > 1 else np.array([[-1.0]])
    expected = linear_cka(x, y, debiased=debiased)
    assert linear_cka(scale * x @ q, y, debiased=debiased) == pytest.approx(
        expected, rel=1e-8, abs=1e-10)
    assert linear_cka(x, scale * y, debiased=debiased) == pytest.approx(
        expected, rel=1e-8, abs=1e-10)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), debiased=st.booleans(), n=st.integers(4, 30),
       d1=st.integers(1, 40), d2=st.integers(1, 40))
def test_cka_is_symmetric_and_bounded(seed, debiased, n, d1, d2):
    x, y = _pair(n, d1, d2, seed=seed, shared=0.5)
    value = linear_cka(x, y, debiased=debiased)
    assert value == pytest.approx(linear_cka(y, x, debiased=debiased), rel=1e-9, abs=1e-12)
    assert (-1.0 if debiased else 0.0) <= value <= 1.0


def test_cka_is_not_invariant_to_a_general_linear_transform():
    # What makes it CKA and not CCA: stretching one direction changes the similarity.
    x, y = _pair(50, 4, 4, seed=1)
    stretch = np.diag([30.0, 1.0, 1.0, 1.0])
    assert abs(linear_cka(x @ stretch, y) - linear_cka(x, y)) > 1e-3


def test_the_biased_estimate_is_inflated_for_unrelated_wide_features_and_the_debiased_is_not():
    # Nguyen et al. (2021): with N small next to D, biased CKA of independent noise is large.
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 500)), rng.normal(size=(30, 500))
    assert linear_cka(x, y) > 0.8
    assert abs(linear_cka(x, y, debiased=True)) < 0.1


def test_related_representations_are_more_similar_than_unrelated_ones():
    x, y = _pair(200, 10, 10, seed=2, shared=3.0)
    unrelated = np.random.default_rng(9).normal(size=(200, 10))
    assert linear_cka(x, y, debiased=True) > linear_cka(x, unrelated, debiased=True) + 0.3


def test_a_constant_representation_has_cka_zero():
    x, _ = _pair(20, 4, 4)
    assert linear_cka(x, np.full((20, 3), 0.1)) == 0.0
    assert linear_cka(np.full((20, 3), 0.1), x, debiased=True) == 0.0


def test_cka_survives_a_large_offset():
    x, y = _pair(30, 5, 6)
    assert linear_cka(1e8 + x, y, debiased=True) == pytest.approx(
        linear_cka(x, y, debiased=True), rel=1e-6)


def test_debiased_cka_needs_four_samples():
    x, y = _pair(3, 2, 2)
    with pytest.raises(ProbeError, match="at least 4 samples, got 3"):
        linear_cka(x, y, debiased=True)
    assert np.isfinite(linear_cka(x, y))


def test_cka_rejects_representations_of_different_sample_counts():
    x, y = _pair(10, 2, 2)
    with pytest.raises(ProbeError, match="^y: got 9 rows for 10 samples"):
        linear_cka(x, y[:-1])


def test_the_block_probe_is_the_debiased_cka_of_pretrained_and_random_features():
    x, y = _pair(40, 6, 6, seed=5)
    assert block_cka(x, y) == linear_cka(x, y, debiased=True)
    with pytest.raises(ProbeError, match="^random_features: got 39 rows"):
        block_cka(x, y[:-1])
