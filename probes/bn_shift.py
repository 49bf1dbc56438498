"""BatchNorm statistics shift: how far the target's activations are from the source's."""

from __future__ import annotations

import numpy as np

from probes._checks import ProbeError
from probes.registry import Probe, register

# Rows of a bn_stats array, the contract with the feature extractor that fills it.
TARGET_MEAN, TARGET_VAR, SOURCE_MEAN, SOURCE_VAR = range(4)


def bn_shift(bn_stats: np.ndarray) -> float:
    r"""Mean over BatchNorm channels of the symmetric KL divergence, target vs source.

    Each channel's input is summarised by a Gaussian: :math:`N(m_t, v_t)` from the target
    images, :math:`N(m_s, v_s)` from the layer's stored running statistics (the source).
    The symmetric KL (Jeffreys) divergence, :math:`KL(t\|s) + KL(s\|t)`, not halved, is

    .. math::

        J = \frac12\Bigl[\frac{(v_t - v_s)^2}{v_t v_s}
            + (m_t - m_s)^2 \Bigl(\frac1{v_t} + \frac1{v_s}\Bigr)\Bigr],

    (the first term is :math:`v_t/v_s + v_s/v_t - 2`, written without cancellation), and
    the value is its mean over the K channels of all BN layers of a block.

    Parameters
    ----------
    bn_stats : array of shape (4, K)
        Row 0: target per-channel mean; row 1: target per-channel variance; row 2: the
        layer's ``running_mean``; row 3: its ``running_var``; the K channels of every
        BatchNorm layer in the block, concatenated. Variances include the layer's eps,
        so they are > 0.

    Returns
    -------
    float
        In nats, >= 0; lower means the target's activations are closer to the source's
        (0: identical statistics). Invariant to the order of the channels.

    Raises
    ------
    ProbeError
        If ``bn_stats`` is not a finite array of shape (4, K), K >= 1, or a variance is
        not positive.

    References
    ----------
    Y. Li, N. Wang, J. Shi, J. Liu, X. Hou. "Revisiting Batch Normalization For Practical
    Domain Adaptation." ICLR workshop 2017 (arXiv:1603.04779, AdaBN), which adapts a model
    by replacing these statistics with the target's.
    """
    stats = _check_bn_stats(bn_stats)
    m_t, v_t, m_s, v_s = stats
    jeffreys = 0.5 * ((v_t - v_s) ** 2 / (v_t * v_s) + (m_t - m_s) ** 2 * (1 / v_t + 1 / v_s))
    return float(np.mean(jeffreys))


def _check_bn_stats(bn_stats: object) -> np.ndarray:
    """``bn_stats`` as a float64 (4, K) array with positive variances, or ProbeError."""
    try:
        stats = np.asarray(bn_stats)
    except Exception as err:  # ragged nested lists and the like
        raise ProbeError(f"bn_stats: could not be read as an array ({err}).") from err
    layout = "(target mean, target variance, running_mean, running_var)"
    if stats.ndim != 2 or stats.shape[0] != 4 or stats.shape[1] == 0:
        raise ProbeError(
            f"bn_stats: expected a 2-D array of shape (4, n_channels) {layout}, got shape "
            f"{stats.shape}; stack the four rows of per-channel statistics."
        )
    if not (np.issubdtype(stats.dtype, np.number) or stats.dtype == bool) or np.iscomplexobj(stats):
        raise ProbeError(f"bn_stats: expected real numbers, got dtype {stats.dtype}.")
    stats = np.asarray(stats, dtype=np.float64)
    bad = np.argwhere(~np.isfinite(stats))
    if bad.size:
        raise ProbeError(
            f"bn_stats: {len(bad)} value(s) are NaN or inf (first: row {bad[0][0]}, channel "
            f"{bad[0][1]}); check the BatchNorm layers' running statistics and the target "
            "pass that measured the others."
        )
    for row, name in ((TARGET_VAR, "target variance"), (SOURCE_VAR, "running_var")):
        bad = np.flatnonzero(stats[row] <= 0)
        if bad.size:
            raise ProbeError(
                f"bn_stats: row {row} ({name}) has {bad.size} value(s) <= 0 (first: channel "
                f"{bad[0]}, {stats[row, bad[0]]:.3g}); variances must include the layer's "
                "eps, which makes them > 0."
            )
    return stats


register(
    Probe(
        name="bn_shift",
        func=bn_shift,
        needs=("bn_stats",),
        higher_is_better=False,
        meaning="mean symmetric KL between target and stored BatchNorm channel statistics; "
        "lower is better (closer to the source)",
        reference="Li et al., AdaBN, arXiv:1603.04779 (2016)",
        label="BN shift",
        unit="nats",
    )
)
