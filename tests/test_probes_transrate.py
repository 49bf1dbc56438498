"""TransRate (Huang et al., ICML 2022) against the paper's algorithm, written out with slogdet."""

from __future__ import annotations

import numpy as np
import pytest

from probes import ProbeError, transrate

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def _coding_rate(z: np.ndarray, eps: float) -> float:
    """R(Z) = 1/2 logdet(I_D + Z^T Z / (n eps)), n the rows of Z: the paper's Algorithm 1."""
    n, d = z.shape
    _, log_det = np.linalg.slogdet(np.eye(d) + z.T @ z / (n * eps))
    return 0.5 * log_det


def _reference_transrate(f: np.ndarray, labels: np.ndarray, eps: float = 1e-4) -> float:
    f = f - f.mean(axis=0)
    classes = np.unique(labels)
    by_class = [_coding_rate(f[labels == c], eps) for c in classes]
    return _coding_rate(f, eps) - sum(by_class) / len(classes)


def _unit_total_variance(f: np.ndarray) -> np.ndarray:
    centred = f - f.mean(axis=0)
    return centred / np.sqrt(np.sum(centred**2) / len(f))


def _blobs(n: int, d: int, n_classes: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    rng.shuffle(labels)
    return rng.normal(size=(n_classes, d))[labels] + rng.normal(size=(n, d)), labels


@pytest.mark.parametrize(("n", "d", "n_classes"), [(60, 5, 3), (200, 30, 4), (30, 50, 3)])
@pytest.mark.parametrize("eps", [1e-4, 1e-1])
def test_transrate_of_raw_features_equals_the_papers_algorithm(n, d, n_classes, eps):
    f, labels = _blobs(n, d, n_classes, seed=n)
    expected = _reference_transrate(f, labels, eps)
    assert transrate(f, labels, eps, normalise=False) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize(("n", "d"), [(80, 6), (20, 40)])
def test_transrate_by_default_scales_the_centred_features_to_unit_total_variance(n, d):
    f, labels = _blobs(n, d, 3, seed=1)
    assert transrate(f, labels) == pytest.approx(
        _reference_transrate(_unit_total_variance(f), labels), rel=1e-10
    )


def test_transrate_of_raw_features_depends_on_their_scale_through_eps_only():
    # Scaling F by s is the same as dividing eps by s^2: the reason to normalise.
    f, labels = _blobs(60, 8, 3, seed=2)
    scaled = transrate(1e-3 * f, labels, 1e-4, normalise=False)
    assert scaled == pytest.approx(transrate(f, labels, 1e2, normalise=False), rel=1e-10)
    assert scaled < 0.5 * transrate(f, labels, 1e-4, normalise=False)


def test_transrate_is_invariant_to_scale_translation_and_rotation_by_default():
    f, labels = _blobs(60, 8, 3, seed=3)
    rotation, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(8, 8)))
    moved = 1e3 * f @ rotation + 1e4
    assert transrate(moved, labels) == pytest.approx(transrate(f, labels), rel=1e-9)


@pytest.mark.parametrize("scale", [1e-150, 1e150])
def test_transrate_of_raw_features_is_exact_at_extreme_scales(scale):
    # transrate(s F, eps) = transrate(F, eps / s^2), without overflow or underflow.
    f, labels = _blobs(40, 5, 2, seed=5)
    scaled = transrate(scale * f, labels, 1e-4 * scale**2, normalise=False)
    assert scaled == pytest.approx(transrate(f, labels, 1e-4, normalise=False), rel=1e-10)


def test_transrate_ignores_which_values_name_the_classes():
    # With a y.max() + 1 class count the skipped values add empty classes (rate 0)
    # and shrink the mean conditional rate.
    f, labels = _blobs(60, 8, 3, seed=4)
    skipped = np.array([0, 5, 9])[labels]
    assert transrate(f, skipped) == pytest.approx(transrate(f, labels), rel=1e-12)


def test_transrate_is_higher_for_features_that_separate_the_classes():
    f, labels = _blobs(150, 10, 3, seed=5)
    noise = np.random.default_rng(6).normal(size=f.shape)
    assert transrate(f, labels) > transrate(noise, labels)


def test_transrate_of_constant_features_is_zero():
    assert transrate(np.full((20, 4), 0.3), np.arange(20) % 2) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("eps", [0.0, -1e-4, np.inf, np.nan, "small"])
def test_transrate_rejects_an_eps_that_is_not_a_positive_number(eps):
    f, labels = _blobs(20, 3, 2, seed=8)
    with pytest.raises(ProbeError, match="eps: expected a finite positive number"):
        transrate(f, labels, eps)
