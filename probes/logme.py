"""LogME: the maximum evidence of a Bayesian linear model from features to one-hot labels."""

from __future__ import annotations

import numpy as np

from probes._checks import check_features, encode_labels
from probes.registry import Probe, register

# Convergence of the evidence fixed point. The reference code stops after 11 steps from
# alpha = beta = 1, which leaves the answer depending on the scale of the features.
RTOL = 1e-10
MAX_ITER = 1000
# Once alpha/beta is this far below the smallest (or above the largest) eigenvalue, the
# evidence equals its limit on that side to ~1e-12 relative: stop following the drift.
_BOUNDARY = 1e12


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    r"""LogME: mean over classes of the maximum log evidence per sample.

    For each class c, with :math:`t = 1[y = c]` (N,) and features F (N, D), the Bayesian
    linear model :math:`t = F w + e`, :math:`w \sim N(0, I/\alpha)`,
    :math:`e \sim N(0, I/\beta)` has evidence

    .. math::

        L(\alpha, \beta) = \log N(t;\ 0,\ F F^T/\alpha + I/\beta)
        = \tfrac{D}{2}\log\alpha + \tfrac{N}{2}\log\beta - \tfrac{N}{2}\log 2\pi
          - \tfrac{\beta}{2}\lVert F m - t\rVert^2 - \tfrac{\alpha}{2}\lVert m\rVert^2
          - \tfrac12 \log\lvert A\rvert,

    :math:`A = \alpha I_D + \beta F^T F`, :math:`m = \beta A^{-1} F^T t`. With
    :math:`\sigma_i` the k = rank(F) non-zero eigenvalues of :math:`F^T F` and
    :math:`z = U^T t` the labels in the matching left singular basis,
    :math:`\log|A| = \sum_i \log(\alpha + \beta\sigma_i) + (D - k)\log\alpha`. The maximum
    is found by the MacKay fixed point
    :math:`\gamma = \sum_i \beta\sigma_i / (\alpha + \beta\sigma_i)`,
    :math:`\alpha = \gamma / \lVert m\rVert^2`,
    :math:`\beta = (N - \gamma) / \lVert F m - t\rVert^2`, iterated to a relative change
    below 1e-10 (all classes at once). The supremum can lie on the boundary
    (:math:`\alpha \to \infty`: the features explain nothing; :math:`\beta \to \infty`
    when rank(F) = N: the labels are fitted exactly); those limits are closed-form and
    taken when larger. LogME is :math:`\frac{1}{C}\sum_c \max L / N`.

    Parameters
    ----------
    features : array of shape (N, D)
        Frozen features of the target images, finite.
    labels : array of shape (N,)
        Class labels of any sortable values; at least 2 classes.

    Returns
    -------
    float
        Log evidence per sample, in nats; higher means the features explain the labels
        better. Invariant to the scale of the features, to the order of samples and to
        the names of the classes.

    Raises
    ------
    ProbeError
        If the features are not a finite 2-D array, or the labels do not match them or
        hold fewer than 2 classes.

    Notes
    -----
    If a class indicator lies exactly in the column space of F while rank(F) < N (e.g.
    one-hot labels among the features), its evidence has no maximum: it grows without
    bound as beta -> inf. The value returned is then finite but large, set by where the
    iteration stops (alpha/beta = smallest eigenvalue / 1e12).

    References
    ----------
    K. You, Y. Liu, J. Wang, M. Long. "LogME: Practical Assessment of Pre-trained Models
    for Transfer Learning." ICML 2021.
    """
    f = check_features(features)
    codes, n_classes = encode_labels(labels, n_samples=f.shape[0])
    return float(np.mean(_max_log_evidence(f, codes, n_classes)) / f.shape[0])


def _spectrum(f: np.ndarray, codes: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-zero eigenvalues sigma (k,) of F^T F and the one-hot targets T in the matching
    left singular basis, z = U^T T (k, C).

    One eigendecomposition of the smaller Gram matrix: F^T F (D x D) when N >= D,
    else F F^T (N x N), whose non-zero eigenvalues are the same. Products with T are
    per-class sums of rows, so T is never formed.
    """
    n, d = f.shape
    if n >= d:
        sigma, v = np.linalg.eigh(f.T @ f)
    else:
        sigma, u = np.linalg.eigh(f @ f.T)
    # Eigenvalues of a Gram matrix are accurate to ~eps * largest: smaller ones are rank noise.
    keep = sigma > max(sigma[-1], 0.0) * max(n, d) * np.finfo(np.float64).eps
    sigma = sigma[keep]
    if n >= d:
        # U = F V diag(sigma)^-1/2, so U^T T = diag(sigma)^-1/2 V^T (F^T T).
        z = (v[:, keep].T @ _class_sums(f, codes, n_classes).T) / np.sqrt(sigma)[:, None]
    else:
        z = _class_sums(u[:, keep], codes, n_classes).T
    return sigma, z


def _class_sums(rows: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    """T^T rows: the sum of the rows of each class (C, columns), T as a sparse one-hot."""
    from scipy import sparse  # on first use: importing it takes a few tenths of a second

    n = codes.shape[0]
    one_hot_t = sparse.csr_array((np.ones(n), (codes, np.arange(n))), shape=(n_classes, n))
    return np.asarray(one_hot_t @ rows)


def _max_log_evidence(f: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    """Maximum of L(alpha, beta) for each class (C,), from one eigendecomposition."""
    n = f.shape[0]
    sigma, z = _spectrum(f, codes, n_classes)
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)  # ||t||^2
    # alpha -> inf: t ~ N(0, I/beta) with beta = N/||t||^2; the only value if F = 0.
    best = _evidence_of(n, counts, 0.0)
    if sigma.size == 0:
        return best
    z2 = z * z
    # ||t||^2 - ||z||^2 is the part of t outside the column space of F; rounding can
    # make it slightly negative, or leave a trace when F spans every direction.
    residual = np.maximum(counts - z2.sum(axis=0), 0.0)
    if sigma.size == n:
        residual[:] = 0.0

    lam = _fixed_point(sigma, z2, residual, counts, n)
    best = np.maximum(best, _profile_evidence(lam, sigma, z2, residual, n))
    if sigma.size == n:
        # beta -> inf exists when F F^T is invertible: t ~ N(0, F F^T/alpha).
        explained = (z2 / sigma[:, None]).sum(axis=0)
        best = np.maximum(best, _evidence_of(n, explained, 0.5 * np.log(sigma).sum()))
    return best


def _fixed_point(
    sigma: np.ndarray, z2: np.ndarray, residual: np.ndarray, counts: np.ndarray, n: int
) -> np.ndarray:
    """Iterate the MacKay updates for all classes at once; return lambda = alpha/beta (C,).

    Every quantity in the updates depends on alpha and beta only through lambda, and
    the starting point scales with the features, so the iterates are scale-equivariant.
    """
    n_classes = z2.shape[1]
    beta = n / counts  # the best beta when F explains nothing
    alpha = beta * sigma.mean()
    active = np.ones(n_classes, dtype=bool)
    lo, hi = sigma[0] / _BOUNDARY, sigma[-1] * _BOUNDARY
    for _ in range(MAX_ITER):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        lam = alpha[idx] / beta[idx]
        shrink = sigma[:, None] / (lam + sigma[:, None])  # beta sigma / (alpha + beta sigma)
        gamma = shrink.sum(axis=0)
        m2 = (shrink * shrink / sigma[:, None] * z2[:, idx]).sum(axis=0)  # ||m||^2
        fit2 = ((1.0 - shrink) ** 2 * z2[:, idx]).sum(axis=0) + residual[idx]  # ||Fm - t||^2
        with np.errstate(divide="ignore"):  # m = 0: t is orthogonal to F, alpha -> inf
            new_alpha = gamma / m2
        new_beta = (n - gamma) / fit2
        done = (np.abs(new_alpha - alpha[idx]) <= RTOL * new_alpha) & (
            np.abs(new_beta - beta[idx]) <= RTOL * new_beta
        )
        new_lam = new_alpha / new_beta
        done |= (new_lam < lo) | (new_lam > hi)
        alpha[idx], beta[idx] = new_alpha, new_beta
        active[idx[done]] = False
    return np.clip(alpha / beta, lo, hi)


def _profile_evidence(
    lam: np.ndarray, sigma: np.ndarray, z2: np.ndarray, residual: np.ndarray, n: int
) -> np.ndarray:
    """max over beta of L(lambda * beta, beta), in closed form (C,).

    With alpha = lambda beta the covariance is (F F^T/lambda + I)/beta; its best beta is
    N / Q with Q = sum_i lambda z_i^2 / (lambda + sigma_i) + residual, which the fixed
    point also reaches (beta Q = (N - gamma) + gamma at convergence).
    """
    lam_col = lam[None, :]
    quad = (lam_col * z2 / (lam_col + sigma[:, None])).sum(axis=0) + residual
    log_det = np.log1p(sigma[:, None] / lam_col).sum(axis=0)
    return _evidence_of(n, quad, 0.5 * log_det)


def _evidence_of(n: int, quad: np.ndarray, half_log_det: np.ndarray | float) -> np.ndarray:
    """log N(t; 0, S/beta) at the best beta = N/quad, where quad = t^T S^-1 t."""
    return -0.5 * n * (np.log(2.0 * np.pi) + 1.0) + 0.5 * n * np.log(n / quad) - half_log_det


register(
    Probe(
        name="logme",
        func=logme,
        needs=("features", "labels"),
        higher_is_better=True,
        meaning="Bayesian evidence that the features linearly explain the labels; higher is better",
        reference="You et al., LogME, ICML 2021",
        label="LogME",
        unit="nats",
    )
)
