"""GBC: overlap of per-class Gaussians in the principal subspace of the features."""

from __future__ import annotations

import numpy as np

from probes._checks import centre, check_features, encode_labels, unit_peak
from probes.registry import Probe, register

# Pandy et al. (2022) reduce features to 64 principal components before fitting Gaussians.
PCA_DIMS = 64
# A class's variance is floored at this fraction of the data's variance only to keep the
# logarithm finite: a class of zero variance (one sample, or identical samples) then has
# coefficient ~0 with any class of positive variance and 1 with an identical one, its limits.
VARIANCE_FLOOR = 1e-12


def gbc(features: np.ndarray, labels: np.ndarray) -> float:
    r"""Gaussian Bhattacharyya coefficient: minus the total pairwise overlap of the classes.

    The centred features are projected onto their first k = min(64, D, N - 1) principal
    components (the centred data has rank at most N - 1). Each class c is modelled as a
    spherical Gaussian :math:`N(\mu_c, s_c I_k)`, :math:`\mu_c` its mean and :math:`s_c`
    the mean over the k dimensions of its per-dimension variance (maximum likelihood,
    ddof = 0). The Bhattacharyya distance between two such Gaussians, with
    :math:`s = (s_i + s_j)/2`, is

    .. math::

        D_B(i, j) = \frac{\lVert\mu_i - \mu_j\rVert^2}{8 s}
                    + \frac{k}{2}\log\frac{s}{\sqrt{s_i s_j}},

    and :math:`\mathrm{GBC} = -\sum_{i \ne j} \exp(-D_B(i, j))` over ordered pairs.

    The log-determinant term carries the factor k of a k-dimensional Gaussian; the
    reference code's spherical variant sums the log of a scalar variance, which drops it.
    Each :math:`s_c` is floored at ``1e-12`` times the mean per-dimension variance of all
    projected features, only to keep the logarithm finite (the reference code floors each
    dimension's variance at an absolute 1e-4, which depends on the scale of the features).
    Features constant up to rounding give every pair coefficient 1, i.e. :math:`-C(C-1)`.
    The principal subspace comes from an eigendecomposition of the covariance (or of the
    Gram matrix when N <= D); GBC does not depend on the signs or rotation of its basis.

    Parameters
    ----------
    features : array of shape (N, D)
        Frozen features, finite.
    labels : array of shape (N,)
        Class labels of any hashable values; at least 2 classes.

    Returns
    -------
    float
        In [-C(C - 1), 0]; higher (closer to 0) means less overlap between classes.
        Invariant to the scale, translation and rotation of the features.

    Raises
    ------
    ProbeError
        If the features are not a finite 2-D array, or the labels do not match them or
        hold fewer than 2 classes.

    References
    ----------
    M. Pandy, A. Agostinelli, J. Uijlings, V. Ferrari, T. Mensink. "Transferability
    Estimation using Bhattacharyya Class Separability." CVPR 2022.
    """
    # GBC is scale-free; scaling keeps the squares finite. Scaled at once, the validated
    # float64 copy is not kept alive beside the scaled and centred ones.
    f = unit_peak(check_features(features))
    codes, n_classes = encode_labels(labels, n_samples=f.shape[0])
    projected = _principal_components(f, min(PCA_DIMS, f.shape[1], f.shape[0] - 1))
    return float(-np.sum(_bhattacharyya_coefficients(projected, codes, n_classes)))


def _principal_components(f: np.ndarray, k: int) -> np.ndarray:
    """The centred features (``f`` scaled by :func:`unit_peak`) in the basis of their first
    k principal axes (N, k).

    With k = D this is a rotation, which GBC ignores: the centred features are returned.
    A zero matrix when the features are constant up to the rounding of their mean.
    """
    n, d = f.shape
    centred = centre(f)
    if not centred.any():
        return np.zeros((n, k))
    if k == d:
        return centred
    from scipy.linalg import eigh  # on first use; only the top k eigenpairs are computed

    gram = centred.T @ centred if n > d else centred @ centred.T
    eigenvalues, vectors = eigh(gram, subset_by_index=(gram.shape[0] - k, gram.shape[0] - 1))
    if n > d:
        return centred @ vectors
    # F_c V = U diag(sigma): the scores along each axis, from the left singular vectors.
    return vectors * np.sqrt(np.maximum(eigenvalues, 0.0))


def _bhattacharyya_coefficients(x: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    """exp(-D_B) between the spherical Gaussians of every ordered pair of classes, (C, C)
    with a zero diagonal."""
    k = x.shape[1]
    counts = np.bincount(codes, minlength=n_classes)
    one_hot = (codes == np.arange(n_classes)[:, None]).astype(np.float64)  # (C, N)
    means = (one_hot @ x) / counts[:, None]
    residual = x - means[codes]
    spread = (one_hot @ np.einsum("ij,ij->i", residual, residual)) / (counts * k)
    floor = VARIANCE_FLOOR * float(np.mean(x * x))
    variance = np.maximum(spread, floor) if floor > 0 else np.ones(n_classes)
    pair = 0.5 * (variance[:, None] + variance[None, :])
    sq_dist = np.sum((means[:, None, :] - means[None, :, :]) ** 2, axis=2)
    log_ratio = np.log(pair) - 0.5 * (np.log(variance)[:, None] + np.log(variance)[None, :])
    distance = sq_dist / (8.0 * pair) + 0.5 * k * log_ratio
    coefficients = np.exp(-distance)
    np.fill_diagonal(coefficients, 0.0)
    return coefficients


register(
    Probe(
        name="gbc",
        func=gbc,
        needs=("features", "labels"),
        higher_is_better=True,
        meaning="minus the pairwise Bhattacharyya overlap of per-class Gaussians in 64 PCA "
        "dims; 0 (separated) is best",
        reference="Pandy et al., Transferability Estimation using Bhattacharyya Class "
        "Separability, CVPR 2022",
        label="GBC",
        unit="score",
    )
)
