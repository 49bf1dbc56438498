"""GBC (Pandy et al., CVPR 2022) against its definition: sklearn's PCA, then a loop over
pairs of spherical Gaussians."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.decomposition import PCA

from probes import gbc

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def _bhattacharyya_distance(mu1, mu2, s1, s2, k):
    """D_B between N(mu1, s1 I_k) and N(mu2, s2 I_k), from the general Gaussian formula
    1/8 dmu^T S^-1 dmu + 1/2 log(det S / sqrt(det S1 det S2)), S = (S1 + S2) / 2."""
    cov1, cov2 = s1 * np.eye(k), s2 * np.eye(k)
    cov = (cov1 + cov2) / 2
    diff = mu1 - mu2
    _, log_det = np.linalg.slogdet(cov)
    _, log_det1 = np.linalg.slogdet(cov1)
    _, log_det2 = np.linalg.slogdet(cov2)
    return diff @ np.linalg.solve(cov, diff) / 8 + 0.5 * (log_det - 0.5 * (log_det1 + log_det2))


def _reference_gbc(f: np.ndarray, labels: np.ndarray) -> float:
    k = min(64, f.shape[1], f.shape[0] - 1)
    x = PCA(n_components=k, svd_solver="full").fit_transform(f)
    stats = {
        c: (x[labels == c].mean(axis=0), np.var(x[labels == c], axis=0).mean())
        for c in np.unique(labels)
    }
    total = 0.0
    for c1, (mu1, s1) in stats.items():
        for c2, (mu2, s2) in stats.items():
            if c1 != c2:
                total += np.exp(-_bhattacharyya_distance(mu1, mu2, s1, s2, k))
    return -total


def _blobs(n: int, d: int, n_classes: int, seed: int, sep: float = 0.3):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    rng.shuffle(labels)
    scales = np.exp(-np.arange(d) / 20)
    f = sep * rng.normal(size=(n_classes, d))[labels] + rng.normal(size=(n, d)) * scales
    return f, labels


@pytest.mark.parametrize(
    ("n", "d", "n_classes"),
    [(60, 5, 3), (200, 100, 4), (300, 64, 3), (30, 80, 3), (10, 3, 2)],
    ids=["D<64", "PCA-to-64", "D=64", "N<D", "tiny"],
)
def test_gbc_equals_its_definition(n, d, n_classes):
    f, labels = _blobs(n, d, n_classes, seed=d)
    assert gbc(f, labels) == pytest.approx(_reference_gbc(f, labels), rel=1e-10)


def test_gbc_log_determinant_term_counts_every_dimension():
    # Two classes with equal means and variances 1 and 4 in k = 3 dimensions: D_B is
    # (k/2) log(2.5 / 2), so BC = 0.8^(3/2). The reference code's spherical variant takes
    # the log of the scalar variance once (k = 1), which would give 0.8^(1/2).
    rng = np.random.default_rng(0)
    unit = rng.normal(size=(4000, 3))
    unit = (unit - unit.mean(axis=0)) / unit.std(axis=0)  # ML variance exactly 1 per axis
    f = np.vstack([unit, 2.0 * unit])
    labels = np.repeat([0, 1], 4000)
    assert gbc(f, labels) == pytest.approx(-2 * 0.8**1.5, rel=1e-9)


def test_gbc_is_zero_for_classes_far_apart():
    f, labels = _blobs(60, 4, 3, seed=1, sep=1e3)
    assert gbc(f, labels) == pytest.approx(0.0, abs=1e-12)


def test_gbc_is_minus_the_number_of_ordered_pairs_for_identical_classes():
    rng = np.random.default_rng(2)
    f = np.tile(rng.normal(size=(20, 5)), (3, 1))
    labels = np.repeat([0, 1, 2], 20)
    assert gbc(f, labels) == pytest.approx(-6.0, rel=1e-12)


def test_gbc_of_constant_features_is_minus_the_number_of_ordered_pairs():
    assert gbc(np.full((30, 4), 0.1), np.arange(30) % 3) == -6.0


def test_gbc_is_invariant_to_scale_rotation_and_translation():
    f, labels = _blobs(120, 8, 3, seed=3)
    rotation, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(8, 8)))
    moved = 1e3 * f @ rotation + 5.0
    assert gbc(moved, labels) == pytest.approx(gbc(f, labels), rel=1e-9)


def test_gbc_treats_a_class_of_one_sample_as_separate_from_the_others():
    f, labels = _blobs(40, 4, 2, seed=5)
    f = np.vstack([f, f[:1]])  # a copy of a sample of class 0, in its own class
    labels = np.r_[labels, 7]
    assert gbc(f, labels) == pytest.approx(gbc(f[:-1], labels[:-1]), abs=1e-9)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    n=st.integers(4, 40),
    d=st.integers(1, 80),
    n_classes=st.integers(2, 4),
    seed=st.integers(0, 2**16),
)
def test_gbc_lies_between_minus_the_ordered_pairs_and_zero(n, d, n_classes, seed):
    f, labels = _blobs(n, d, n_classes, seed)
    c = np.unique(labels).size
    assert -c * (c - 1) - 1e-9 <= gbc(f, labels) <= 0.0
