"""Centred kernel alignment (CKA): how alike two representations of the same images are."""

from __future__ import annotations

import numpy as np

from probes._checks import ProbeError, check_features, check_same_samples, unit_peak
from probes.registry import Probe, register

# Below this many samples the unbiased HSIC is undefined (its normaliser is n(n-3)).
MIN_SAMPLES_DEBIASED = 4
# A representation whose centred values are this small next to its raw values is constant
# (up to the rounding of its mean): it has no structure to compare.
CONSTANT_TOL = 1e-10


def linear_cka(x: np.ndarray, y: np.ndarray, *, debiased: bool = False) -> float:
    """Linear CKA between two representations of the same N samples.

    With the columns of ``x`` (N, D1) and ``y`` (N, D2) centred, linear kernels
    :math:`K = XX^T`, :math:`L = YY^T` and :math:`H = I - \\frac{1}{n}11^T`,

    .. math::

        \\mathrm{HSIC}(K, L) = \\frac{\\operatorname{tr}(KHLH)}{(n-1)^2}
                            = \\frac{\\lVert Y^T X \\rVert_F^2}{(n-1)^2}, \\qquad
        \\mathrm{CKA} = \\frac{\\mathrm{HSIC}(K, L)}
                             {\\sqrt{\\mathrm{HSIC}(K, K)\\,\\mathrm{HSIC}(L, L)}}.

    With ``debiased``, the HSIC is the unbiased estimator of Song et al. (2012), as
    Nguyen et al. (2021) use it for CKA; with :math:`\\tilde K` the kernel with its
    diagonal set to zero,

    .. math::

        \\mathrm{HSIC}_1 = \\frac{1}{n(n-3)} \\Big[ \\operatorname{tr}(\\tilde K \\tilde L)
            + \\frac{1^T \\tilde K 1 \\; 1^T \\tilde L 1}{(n-1)(n-2)}
            - \\frac{2}{n-2} 1^T \\tilde K \\tilde L 1 \\Big].

    The biased estimate of CKA rises towards 1 for any two representations when N is small
    next to their widths (Nguyen et al. 2021, Fig. 2); the debiased one does not, which is
    what the probes' few hundred images need. Both are invariant to an orthogonal transform
    and an isotropic scaling of either representation, and to the order of the samples.

    Computed in feature space (D1 x D2 products, no N x N matrix) when that is smaller, so
    that memory does not grow as N^2: with centred features the three terms of the
    unbiased HSIC reduce to :math:`\\lVert X^T Y \\rVert_F^2 - d_x^T d_y`,
    :math:`(\\sum d_x)(\\sum d_y)` and :math:`d_x^T d_y`, :math:`d` the squared row norms.

    Parameters
    ----------
    x : array of shape (N, D1)
    y : array of shape (N, D2)
        The same N samples, in the same order; the widths may differ.
    debiased : bool
        Use the unbiased HSIC (needs N >= 4).

    Returns
    -------
    float
        In [0, 1] (biased) or [-1, 1] (debiased; near 0 for unrelated representations);
        1 when one is an orthogonal transform and scaling of the other. 0 when either is
        constant over the samples (it shares no structure with anything).

    Raises
    ------
    ProbeError
        If either array is not a finite 2-D array, they differ in sample count, or
        ``debiased`` is asked with fewer than 4 samples.

    References
    ----------
    Kornblith et al., "Similarity of Neural Network Representations Revisited", ICML 2019.
    Song et al., "Feature Selection via Dependence Maximization", JMLR 2012 (unbiased HSIC).
    Nguyen, Raghu, Kornblith, "Do Wide and Deep Networks Learn the Same Things?", ICLR 2021.
    """
    x, y = check_features(x, name="x"), check_features(y, name="y")
    check_same_samples("y", y, x.shape[0])
    if debiased and x.shape[0] < MIN_SAMPLES_DEBIASED:
        raise ProbeError(f"x: debiased CKA needs at least {MIN_SAMPLES_DEBIASED} samples, got "
                         f"{x.shape[0]}; pass more samples or debiased=False.")
    xc, yc = _centred(x), _centred(y)
    if xc is None or yc is None:
        return 0.0
    return _cka(xc, yc, debiased)


def block_cka(features: np.ndarray, random_features: np.ndarray) -> float:
    """Debiased linear CKA between a block's pre-trained and random-init features.

    How much of the block's representation of the target's images the pre-training leaves
    as the untrained architecture had it: near 1, pre-training changed little there;
    near 0, the block computes something else entirely. See :func:`linear_cka`.

    Raises
    ------
    ProbeError
        As :func:`linear_cka`, naming ``features`` or ``random_features``.
    """
    x = check_features(features)
    x_random = check_features(random_features, name="random_features")
    check_same_samples("random_features", x_random, x.shape[0])
    if x.shape[0] < MIN_SAMPLES_DEBIASED:
        raise ProbeError(f"features: CKA needs at least {MIN_SAMPLES_DEBIASED} images, got "
                         f"{x.shape[0]}; pass more images.")
    xc, rc = _centred(x), _centred(x_random)
    if xc is None or rc is None:
        return 0.0
    return _cka(xc, rc, debiased=True)


def _centred(x: np.ndarray) -> np.ndarray | None:
    """Columns minus their means, scaled to a peak of 1 (CKA ignores the scale; squares of
    large values would overflow); None when ``x`` is constant over the samples."""
    x = unit_peak(x)
    xc = x - x.mean(axis=0)
    if np.linalg.norm(xc) <= CONSTANT_TOL * max(np.linalg.norm(x), 1e-300):
        return None
    return unit_peak(xc)


def _cka(xc: np.ndarray, yc: np.ndarray, debiased: bool) -> float:
    """CKA of centred features (unvalidated core)."""
    cross = _hsic(xc, yc, debiased)
    norm = np.sqrt(_hsic(xc, xc, debiased) * _hsic(yc, yc, debiased))
    if not norm > 0:  # a debiased self-HSIC of 0: no variance the estimator can see
        return 0.0
    return float(np.clip(cross / norm, -1.0, 1.0))  # the clip only removes rounding


def _hsic(xc: np.ndarray, yc: np.ndarray, debiased: bool) -> float:
    """HSIC of linear kernels of centred features, times the normaliser CKA cancels."""
    n = xc.shape[0]
    cross = _frobenius_cross(xc, yc)
    if not debiased:
        return cross
    dx, dy = np.einsum("ij,ij->i", xc, xc), np.einsum("ij,ij->i", yc, yc)
    diag = float(dx @ dy)
    return (cross - diag + dx.sum() * dy.sum() / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * diag) / (n * (n - 3))


def _frobenius_cross(xc: np.ndarray, yc: np.ndarray) -> float:
    """``||X^T Y||_F^2 = tr(X X^T Y Y^T)``, from whichever products are smaller: (D1, D2)
    when the widths are small next to N, else the two N x N kernels."""
    n, d1, d2 = xc.shape[0], xc.shape[1], yc.shape[1]
    if d1 * d2 <= n * n:
        return float(np.sum(np.square(xc.T @ yc)))
    return float(np.sum((xc @ xc.T) * (yc @ yc.T)))


register(
    Probe(
        name="cka_random_init",
        func=block_cka,
        needs=("features", "random_features"),
        higher_is_better=False,
        meaning="debiased linear CKA between the block's pre-trained and random-init features "
        "of the target images; 1: pre-training left it as untrained, lower is better (more "
        "shaped by pre-training)",
        reference="Kornblith et al., ICML 2019 (CKA); Nguyen et al., ICLR 2021 (debiased)",
        label="CKA rand",
        unit="similarity in [-1, 1]",
    )
)
