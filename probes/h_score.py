"""H-score and shrinkage H-score: between-class variance in units of the feature covariance."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from probes._checks import centre, check_features, encode_labels, unit_peak
from probes.registry import Probe, register

# Bao et al.'s code inverts cov(F) with numpy.linalg.pinv(..., rcond=1e-15).
PINV_RCOND = 1e-15
_EPS = np.finfo(np.float64).eps


def h_score(features: np.ndarray, labels: np.ndarray) -> float:
    r"""H-score: the trace of the between-class covariance in units of the feature covariance.

    With features F (N, D) and G (N, D) the features replaced by their class means,
    :math:`G_i = \mu_{y_i}`,

    .. math::

        H = \operatorname{tr}\bigl(\operatorname{cov}(F)^{+}\,\operatorname{cov}(G)\bigr)
          = \frac{1}{N-1}\sum_c n_c\,(\mu_c - \mu)^T \operatorname{cov}(F)^{+} (\mu_c - \mu),

    with unbiased covariances (``np.cov``) and the pseudo-inverse of a matrix product
    (not an element-wise one). Eigenvalues of cov(F) at most ``1e-15`` times the largest
    are treated as zero, as by ``np.linalg.pinv(cov, rcond=1e-15)``, and so are those at
    rounding level: below ``max(N, D) * eps`` times the largest (numpy's rank tolerance).
    Without that, the direction that centring removes, zero only up to rounding, would be
    inverted when N <= D. Features constant up to rounding score 0.

    Computed from one eigendecomposition of the smaller of the two Gram matrices of the
    centred features, :math:`O(N D \min(N, D))`.

    Parameters
    ----------
    features : array of shape (N, D)
        Frozen features, finite.
    labels : array of shape (N,)
        Class labels of any hashable values; at least 2 classes.

    Returns
    -------
    float
        In [0, C - 1]; higher means the class means are further apart relative to the
        spread of the features. It reaches C - 1 whenever N <= D (then any labels are
        linearly separable), so it rewards high D/N: compare models at equal D/N or use
        :func:`shrinkage_h_score`. Invariant to invertible linear maps of the features.

    Raises
    ------
    ProbeError
        If the features are not a finite 2-D array, or the labels do not match them or
        hold fewer than 2 classes.

    References
    ----------
    Y. Bao, Y. Li, S.-L. Huang, L. Zhang, L. Zheng, A. Zamir, L. Guibas. "An
    Information-Theoretic Approach to Transferability in Task Transfer Learning."
    ICIP 2019.
    """
    spectrum = _class_spectrum(features, labels)
    n = spectrum.n_samples
    variance = spectrum.eigenvalues / (n - 1)  # eigenvalues of cov(F)
    return float(np.sum(spectrum.between / variance) / (n - 1))


def shrinkage_h_score(features: np.ndarray, labels: np.ndarray) -> float:
    r"""Shrinkage H-score: the H-score with a Ledoit-Wolf estimate of the feature covariance.

    With F centred, S = F^T F / N its (biased) covariance, :math:`\bar s = \operatorname{tr}
    S / D` and a the Ledoit-Wolf shrinkage (as ``sklearn.covariance.ledoit_wolf``),

    .. math::

        \Sigma_{LW} = (1 - a)\,S + a\,\bar s\,I, \qquad
        H_{LW} = \operatorname{tr}\bigl(\Sigma_{LW}^{+}\,(1 - a)\operatorname{cov}(G)\bigr),

    cov(G) unbiased as in :func:`h_score`. The class-mean differences lie in the span of
    the centred features, so only the eigen-directions of S within that span contribute;
    the computation uses the smaller Gram matrix, and the shrinkage is computed from its
    eigenvalues and the row norms (the same formula as scikit-learn's, in O(N D)).
    Directions at rounding level are dropped as in :func:`h_score`.

    Parameters
    ----------
    features : array of shape (N, D)
        Frozen features, finite.
    labels : array of shape (N,)
        Class labels of any hashable values; at least 2 classes.

    Returns
    -------
    float
        At least 0 and at most about C - 1 (N/(N - 1) times it: S is biased, cov(G) is
        not); higher means better-separated class means. Unlike the H-score it stays
        near 0 for features unrelated to the labels, also when N <= D.

    Raises
    ------
    ProbeError
        If the features are not a finite 2-D array, or the labels do not match them or
        hold fewer than 2 classes.

    References
    ----------
    S. Ibrahim, N. Ponomareva, R. Mazumder. "Newer is not always better: Rethinking
    transferability metrics, their peculiarities, stability and performance." ECML-PKDD
    2022 (arXiv:2110.06893). O. Ledoit, M. Wolf. "A well-conditioned estimator for
    large-dimensional covariance matrices." J. Multivariate Analysis 88, 2004.
    """
    spectrum = _class_spectrum(features, labels)
    n, d = spectrum.n_samples, spectrum.n_dims
    shrinkage = _ledoit_wolf_shrinkage(spectrum)
    mean_variance = spectrum.total_square / (n * d)  # tr(S) / D
    shrunk = (1.0 - shrinkage) * spectrum.eigenvalues / n + shrinkage * mean_variance
    return float((1.0 - shrinkage) * np.sum(spectrum.between / shrunk) / (n - 1))


@dataclass(frozen=True)
class _ClassSpectrum:
    """Eigenvalues of F_c^T F_c above rounding level (F_c the centred features), and the
    between-class scatter along each eigenvector v_i: sum_c n_c ((mu_c - mu) . v_i)^2."""

    eigenvalues: np.ndarray
    between: np.ndarray
    n_samples: int
    n_dims: int
    total_square: float  # ||F_c||_F^2
    row_norms4: float  # sum_i ||F_c[i]||^4, for the Ledoit-Wolf shrinkage
    gram_square: float  # ||F_c^T F_c||_F^2 = sum of all squared eigenvalues


def _class_spectrum(features: np.ndarray, labels: np.ndarray) -> _ClassSpectrum:
    """The spectrum of :func:`_spectrum`, memoised by the inputs' content: the H-score and
    the shrinkage H-score of one block share one eigendecomposition (the costliest step:
    a 1280 x 1280 one for a neck's features at N > 1280) instead of computing it twice."""
    key = _content_key(features, labels)
    with _MEMO_LOCK:  # probes may run in threads (one block each)
        if key in _MEMO:
            _MEMO.move_to_end(key)
            return _MEMO[key]
    spectrum = _spectrum(features, labels)
    with _MEMO_LOCK:
        _MEMO[key] = spectrum
        while len(_MEMO) > _MEMO_SIZE:
            _MEMO.popitem(last=False)
    return spectrum


_MEMO_SIZE = 4
_MEMO: OrderedDict[bytes, _ClassSpectrum] = OrderedDict()
_MEMO_LOCK = threading.Lock()


def _content_key(features: np.ndarray, labels: np.ndarray) -> bytes:
    digest = hashlib.blake2b(digest_size=20)
    for array in (np.asarray(features), np.asarray(labels)):
        digest.update(str((array.dtype, array.shape)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.digest()


def _spectrum(features: np.ndarray, labels: np.ndarray) -> _ClassSpectrum:
    """Validate, then the spectrum. The validated float64 copy is dropped once scaled (no
    caller holds it), so two (N, D) float64 arrays are alive at once, not three."""
    f = check_features(features)
    codes, n_classes = encode_labels(labels, n_samples=f.shape[0])
    n, d = f.shape
    f = unit_peak(f)  # both scores are scale-free; this keeps the squares finite
    centred = centre(f)
    if n > d:
        eigenvalues, vectors = np.linalg.eigh(centred.T @ centred)
    else:
        eigenvalues, left = np.linalg.eigh(centred @ centred.T)
    eigenvalues = np.maximum(eigenvalues, 0.0)
    keep = eigenvalues > max(PINV_RCOND, max(n, d) * _EPS) * eigenvalues[-1]
    if n > d:
        vectors = vectors[:, keep]
    else:  # right singular vectors from the left ones: v = F_c^T u / sigma
        vectors = (centred.T @ left[:, keep]) / np.sqrt(eigenvalues[keep])
    counts = np.bincount(codes, minlength=n_classes)
    one_hot = (codes == np.arange(n_classes)[:, None]).astype(np.float64)  # (C, N)
    offsets = (one_hot @ f) / counts[:, None] - f.mean(axis=0)  # mu_c - mu, (C, D)
    between = counts @ (offsets @ vectors) ** 2
    row_square = np.einsum("ij,ij->i", centred, centred)
    return _ClassSpectrum(
        eigenvalues=eigenvalues[keep],
        between=between,
        n_samples=n,
        n_dims=d,
        total_square=float(row_square.sum()),
        row_norms4=float(np.sum(row_square**2)),
        gram_square=float(np.sum(eigenvalues**2)),
    )


def _ledoit_wolf_shrinkage(spectrum: _ClassSpectrum) -> float:
    """Ledoit-Wolf shrinkage of the centred features, as sklearn.covariance.ledoit_wolf.

    In scikit-learn's notation, beta_ = sum(X2^T X2) = sum_i ||x_i||^4 and
    delta_ = ||X^T X||_F^2 / N^2; both are O(N D) given the Gram eigenvalues.
    """
    n, d = spectrum.n_samples, spectrum.n_dims
    if d == 1:  # scikit-learn: "the result is the same whatever the shrinkage"
        return 0.0
    mu = spectrum.total_square / (n * d)
    delta_ = spectrum.gram_square / n**2
    beta = (spectrum.row_norms4 / n - delta_) / (d * n)
    delta = (delta_ - d * mu**2) / d  # ||S - mu I||_F^2 / D
    if delta <= 0.0:  # S = mu I: nothing to shrink
        return 0.0
    return float(np.clip(min(beta, delta) / delta, 0.0, 1.0))


register(
    Probe(
        name="h_score",
        func=h_score,
        needs=("features", "labels"),
        higher_is_better=True,
        meaning="between-class variance over feature covariance, tr(cov(F)^+ cov(E[F|y])); "
        "higher is better, saturates at C-1 when N <= D",
        reference="Bao et al., An Information-Theoretic Approach to Transferability, ICIP 2019",
        label="H-score",
        unit="score",
    )
)

register(
    Probe(
        name="shrinkage_h_score",
        func=shrinkage_h_score,
        needs=("features", "labels"),
        higher_is_better=True,
        meaning="H-score with a Ledoit-Wolf shrunk feature covariance, near 0 for noise; "
        "higher is better",
        reference="Ibrahim et al., Newer is not always better, ECML-PKDD 2022",
        label="shrink H",
        unit="score",
    )
)
