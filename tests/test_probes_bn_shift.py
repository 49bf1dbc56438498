"""BatchNorm statistics shift: the mean symmetric KL between target and stored statistics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from probes import ProbeError, bn_shift

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def _kl_by_integration(m_p: float, v_p: float, m_q: float, v_q: float) -> float:
    """KL(p || q) of two normal densities by numerical integration of p log(p / q)."""
    p, q = stats.norm(m_p, np.sqrt(v_p)), stats.norm(m_q, np.sqrt(v_q))
    width = 12 * np.sqrt(max(v_p, v_q))
    value, _ = integrate.quad(
        lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)),
        min(m_p, m_q) - width,
        max(m_p, m_q) + width,
        epsabs=1e-13,
        epsrel=1e-12,
        limit=200,
    )
    return value


def _stats(n_channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    source_mean, source_var = rng.normal(size=n_channels), rng.uniform(0.2, 3.0, n_channels)
    target_mean = source_mean + rng.normal(scale=0.5, size=n_channels)
    target_var = source_var * rng.uniform(0.5, 2.0, n_channels)
    return np.stack([target_mean, target_var, source_mean, source_var])


def test_bn_shift_is_the_mean_over_channels_of_kl_both_ways():
    bn_stats = _stats(4, seed=0)
    per_channel = [
        _kl_by_integration(mt, vt, ms, vs) + _kl_by_integration(ms, vs, mt, vt)
        for mt, vt, ms, vs in bn_stats.T
    ]
    assert bn_shift(bn_stats) == pytest.approx(np.mean(per_channel), rel=1e-8)


def test_bn_shift_is_zero_when_target_and_source_statistics_agree():
    bn_stats = _stats(10, seed=1)
    bn_stats[0], bn_stats[1] = bn_stats[2], bn_stats[3]
    assert bn_shift(bn_stats) == 0.0


def test_bn_shift_is_symmetric_in_target_and_source():
    bn_stats = _stats(10, seed=2)
    assert bn_shift(bn_stats[[2, 3, 0, 1]]) == pytest.approx(bn_shift(bn_stats), rel=1e-12)


def test_bn_shift_is_invariant_to_the_order_of_the_channels():
    bn_stats = _stats(30, seed=3)
    order = np.random.default_rng(4).permutation(30)
    assert bn_shift(bn_stats[:, order]) == pytest.approx(bn_shift(bn_stats), rel=1e-12)


def test_bn_shift_grows_with_the_distance_between_the_means():
    bn_stats = _stats(10, seed=5)
    farther = bn_stats.copy()
    farther[0] = bn_stats[2] + 2 * (bn_stats[0] - bn_stats[2])
    assert bn_shift(farther) > bn_shift(bn_stats)


@pytest.mark.parametrize("shape", [(3, 5), (4, 0), (5, 4), (4,), (4, 2, 2)])
def test_bn_shift_rejects_arrays_not_of_shape_four_by_channels(shape):
    with pytest.raises(ProbeError, match=r"bn_stats: expected a 2-D array of shape \(4, "):
        bn_shift(np.ones(shape))


@pytest.mark.parametrize("row", [1, 3])
@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_bn_shift_rejects_variances_that_are_not_positive(row, bad):
    bn_stats = _stats(5, seed=6)
    bn_stats[row, 2] = bad
    with pytest.raises(ProbeError, match=f"bn_stats: row {row} .* <= 0 .*channel 2"):
        bn_shift(bn_stats)


def test_bn_shift_rejects_non_finite_values_naming_row_and_channel():
    bn_stats = _stats(5, seed=7)
    bn_stats[2, 4] = np.nan
    with pytest.raises(ProbeError, match="bn_stats: 1 value.s. are NaN or inf .*row 2, channel 4"):
        bn_shift(bn_stats)
