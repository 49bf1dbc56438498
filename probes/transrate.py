"""TransRate: mutual information between features and labels, estimated by coding rates."""

from __future__ import annotations

import numpy as np

from probes._checks import ProbeError, centre, check_features, encode_labels, unit_peak
from probes.registry import Probe, register

# Huang et al. (2022) use eps = 1e-4 throughout.
DEFAULT_EPS = 1e-4


def transrate(
    features: np.ndarray, labels: np.ndarray, eps: float = DEFAULT_EPS, *, normalise: bool = True
) -> float:
    r"""TransRate: coding rate of all features minus the mean coding rate of each class.

    With F (N, D) the features centred by their overall mean and :math:`F_c` (n_c, D) the
    rows of class c (of that globally centred F, not re-centred),

    .. math::

        R(Z) = \tfrac12 \log\det\Bigl(I + \frac{Z^T Z}{n\,\epsilon}\Bigr), \qquad
        \mathrm{TrR} = R(F) - \frac1C \sum_c R(F_c),

    where n is the number of rows of Z: N for R(F), :math:`n_c` for :math:`R(F_c)`, and
    classes weigh equally (1/C), as in the paper's algorithm and code. The log-determinant
    is :math:`\sum_i \log(1 + \lambda_i / (n \epsilon))` over the eigenvalues of the
    smaller of :math:`Z^T Z` and :math:`Z Z^T` (Sylvester's identity), so the cost is
    :math:`O(N D \min(N, D))`.

    On raw features TrR depends on their scale (scaling F by s acts as
    :math:`\epsilon / s^2`), so values of models or blocks with different feature scales
    do not compare. By default the centred F is therefore scaled to unit total variance,
    :math:`\frac1N \lVert F \rVert_F^2 = 1`; eps is then a fraction of the total
    variance, and TrR is invariant to the translation, rotation and scale of the
    features. It still grows with the number of directions that carry more than ~eps of
    the variance, i.e. with the effective rank. ``normalise=False`` gives the paper's
    value on the raw features.

    Parameters
    ----------
    features : array of shape (N, D)
        Frozen features, finite.
    labels : array of shape (N,)
        Class labels of any hashable values; at least 2 classes.
    eps : float, default 1e-4
        Distortion of the coding rate, > 0.
    normalise : bool, default True
        Scale the centred features to unit total variance first.

    Returns
    -------
    float
        In nats; higher means the features carry more information about the labels
        (the classes are compact and spread apart). Features constant up to rounding
        give 0.

    Raises
    ------
    ProbeError
        If the features are not a finite 2-D array, the labels do not match them or hold
        fewer than 2 classes, or ``eps`` is not a positive number.

    References
    ----------
    L.-K. Huang, J. Huang, Y. Rong, Q. Yang, Y. Wei. "Frustratingly Easy Transferability
    Estimation." ICML 2022.
    """
    f = check_features(features)
    codes, n_classes = encode_labels(labels, n_samples=f.shape[0])
    if (
        isinstance(eps, bool)
        or not isinstance(eps, (int, float, np.number))
        or not (np.isfinite(eps) and eps > 0)
    ):
        raise ProbeError(f"eps: expected a finite positive number, got {eps!r}.")
    # Work on F / scale and carry the scale in eps (as log eps), so that neither squares
    # of large features overflow nor the normalisation needs a second pass.
    peak = max(float(f.max()), -float(f.min()))  # max |f| without an |f| copy
    f = unit_peak(f)  # rebound, so that the validated copy is freed before centring
    z = centre(f)
    del f
    if not z.any():
        return 0.0
    if normalise:
        z /= np.sqrt(np.mean(np.einsum("ij,ij->i", z, z)))  # z is centre's own copy
        log_eps = np.log(eps)
    else:
        log_eps = np.log(eps) - 2.0 * np.log(peak)
    rate_by_class = [_coding_rate(z[codes == c], log_eps) for c in range(n_classes)]
    return float(_coding_rate(z, log_eps) - np.mean(rate_by_class))


def _coding_rate(z: np.ndarray, log_eps: float) -> float:
    """R(Z) = 1/2 logdet(I + Z^T Z / (n eps)) from the eigenvalues of the smaller Gram,
    as 1/2 sum log(1 + exp(log lambda - log(n eps)))."""
    n, d = z.shape
    gram = z.T @ z if n > d else z @ z.T
    eigenvalues = np.linalg.eigvalsh(gram)
    eigenvalues = eigenvalues[eigenvalues > 0]  # the others are 0 up to rounding
    return 0.5 * float(np.sum(np.logaddexp(0.0, np.log(eigenvalues) - np.log(n) - log_eps)))


register(
    Probe(
        name="transrate",
        func=transrate,
        needs=("features", "labels"),
        higher_is_better=True,
        meaning="coding rate of all features minus that within classes, features scaled to "
        "unit total variance; higher is better",
        reference="Huang et al., Frustratingly Easy Transferability Estimation, ICML 2022",
        label="TransRate",
        unit="nats",
    )
)
