"""Validation at the front door of every probe.

Each public probe calls these once, then hands plain float64 arrays and integer class
codes to its private core, which does no further checking (scikit-learn's
``check_array`` / private-core split).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import numpy as np

# A row of softmax probabilities may be off by float32 rounding over thousands of classes,
# but not by more: a larger gap means logits or unnormalised scores were passed.
PROBS_ROW_SUM_TOL = 1e-3


class ProbeError(ValueError):
    """An input a probe cannot use; the message names the input, what was found and the fix."""


def check_features(
    features: object, name: str = "features", columns: str = "n_dimensions"
) -> np.ndarray:
    """Return ``features`` as a finite 2-D float64 array of shape (N, D).

    ``name`` and ``columns`` are what error messages call the array and its second axis.

    Raises
    ------
    ProbeError
        If the array is not 2-D, is empty, is not numeric, or holds NaN or inf.
    """
    try:
        x = np.asarray(features)
    except Exception as err:  # ragged nested lists and the like
        raise ProbeError(
            f"{name}: could not be read as an array ({err}); "
            f"pass a 2-D array of shape (n_samples, {columns})."
        ) from err
    if x.ndim != 2:
        raise ProbeError(
            f"{name}: expected a 2-D array of shape (n_samples, {columns}), got shape "
            f"{x.shape}; reshape it (one row per sample)."
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ProbeError(f"{name}: the array is empty (shape {x.shape}); pass at least one row.")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.iscomplexobj(x):
        raise ProbeError(
            f"{name}: expected real numbers, got dtype {x.dtype}; convert it to float."
        )
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        raise ProbeError(
            f"{name}: {bad.size} row(s) hold NaN or inf (first: row {bad[0]}); "
            "drop or repair those samples before computing the probe."
        )
    return x


def encode_labels(labels: object, n_samples: int) -> tuple[np.ndarray, int]:
    """Re-encode labels of any hashable values to codes 0..C-1; return ``(codes, C)``.

    The class count comes from the distinct values present, never from ``max + 1``, so
    labels that skip a value, are negative, or are strings all work. Values that sort
    (numbers, strings, tuples of those) keep ``np.unique``'s order. Values that cannot be
    compared with each other (mixed types, arbitrary objects) are told apart by hash and
    equality and ordered by type name and ``repr``, so the codes do not depend on the order
    of the samples either. A sequence of tuples is one label per tuple, not a 2-D array.
    Every probe is invariant to renaming the classes; nothing relies on the codes' order.

    Raises
    ------
    ProbeError
        If labels are not 1-D, their length is not ``n_samples``, they hold NaN or None
        (unlabelled samples) or unhashable values, or fewer than 2 classes are present.
    """
    y = _label_array(labels)
    if y.ndim != 1:
        hint = " (one-hot? pass labels.argmax(axis=1))" if y.ndim == 2 else ""
        raise ProbeError(
            f"labels: expected a 1-D array of class labels, got shape {y.shape}{hint}."
        )
    if y.shape[0] != n_samples:
        raise ProbeError(
            f"labels: got {y.shape[0]} labels for {n_samples} samples; "
            "pass exactly one label per sample, in the same order."
        )
    missing = _missing(y)
    if missing.any():
        raise ProbeError(
            f"labels: {int(missing.sum())} label(s) are NaN or None (first at position "
            f"{int(np.argmax(missing))}); drop the unlabelled samples first."
        )
    try:
        classes, codes = np.unique(y, return_inverse=True)
    except TypeError:  # values of types that do not compare with each other
        classes, codes = _encode_by_hash(y)
    n_classes = len(classes)
    if n_classes < 2:
        raise ProbeError(
            f"labels: found {n_classes} class(es), need at least 2; "
            "a measure of class separability needs two or more classes."
        )
    return codes.reshape(-1).astype(np.intp), n_classes


def _label_array(labels: object) -> np.ndarray:
    """``labels`` as an array. A sequence of hashable values that numpy would read as 2-D
    or ragged (tuples, mixed types) becomes a 1-D object array, one label per item."""
    if isinstance(labels, np.ndarray):
        return labels
    try:
        y = np.asarray(labels)
    except (ValueError, TypeError):  # ragged sequences, e.g. tuples of different lengths
        y = None
    # numpy also turns [1, "1"] into two equal strings: keep mixed values as they are.
    if y is not None and y.ndim <= 1 and not (y.dtype.kind in "US" and _not_all_str(labels)):
        return y
    items = list(labels) if isinstance(labels, Iterable) else [labels]
    if items and all(isinstance(item, Hashable) for item in items):
        return np.fromiter(items, dtype=object, count=len(items))
    if y is None:
        raise ProbeError(
            "labels: could not be read as a sequence of class labels; pass a 1-D array "
            "or list with one hashable label per sample."
        )
    return y


def _not_all_str(labels: object) -> bool:
    return isinstance(labels, Iterable) and not all(
        isinstance(item, (str, bytes)) for item in labels
    )


def _missing(y: np.ndarray) -> np.ndarray:
    """Mask of labels that mean "unlabelled": NaN, or None in an object array."""
    if y.dtype.kind in "fc":
        return np.isnan(y)
    if y.dtype == object:
        return np.fromiter(
            (v is None or (isinstance(v, (float, np.floating)) and v != v) for v in y),
            dtype=bool,
            count=y.size,
        )
    return np.zeros(y.shape, dtype=bool)


def _encode_by_hash(y: np.ndarray) -> tuple[list, np.ndarray]:
    """Distinct values by hash and equality, ordered by (type name, repr): the order of
    the samples does not enter (objects without a custom repr order by address, which is
    still fixed within a run)."""
    first_code: dict = {}
    try:
        per_sample = [first_code.setdefault(v, len(first_code)) for v in y]
    except TypeError as err:
        bad = next(i for i, v in enumerate(y) if not _is_hashable(v))
        raise ProbeError(
            f"labels: label at position {bad} is a {type(y[bad]).__name__}, which cannot "
            f"name a class ({err}); use hashable labels such as str, int or tuple."
        ) from err
    classes = list(first_code)
    order = sorted(range(len(classes)), key=lambda i: _sort_key(classes[i]))
    rank = np.empty(len(classes), dtype=np.intp)
    rank[order] = np.arange(len(classes))
    return [classes[i] for i in order], rank[np.asarray(per_sample, dtype=np.intp)]


def _is_hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _sort_key(value: object) -> tuple[str, str]:
    kind = type(value)
    return (f"{kind.__module__}.{kind.__qualname__}", repr(value))


def check_source_probs(source_probs: object) -> np.ndarray:
    """Return the source head's softmax output as float64 (N, Cs), rows renormalised to 1.

    Raises
    ------
    ProbeError
        If the array is not 2-D, is not finite, has negative entries, or has rows that
        do not sum to 1 within ``PROBS_ROW_SUM_TOL``.
    """
    p = check_features(source_probs, name="source_probs", columns="n_source_classes")
    softmax_hint = "pass softmax probabilities (e.g. logits.softmax(-1)), not logits or scores."
    if (p < 0).any():
        raise ProbeError(
            f"source_probs: found negative entries (min {p.min():.3g}); {softmax_hint}"
        )
    sums = p.sum(axis=1)
    off = np.abs(sums - 1.0)
    if (off > PROBS_ROW_SUM_TOL).any():
        worst = int(np.argmax(off))
        raise ProbeError(
            f"source_probs: row {worst} sums to {sums[worst]:.6g}, expected 1 within "
            f"{PROBS_ROW_SUM_TOL:g}; {softmax_hint}"
        )
    return p / sums[:, None]


def check_same_samples(name: str, array: np.ndarray, n_samples: int) -> None:
    """Raise ProbeError unless ``array`` has one row per sample."""
    if array.shape[0] != n_samples:
        raise ProbeError(
            f"{name}: got {array.shape[0]} rows for {n_samples} samples in features; "
            "compute both from the same images, in the same order."
        )


def unit_peak(features: np.ndarray) -> np.ndarray:
    """``features`` divided by their largest absolute value (zeros stay zeros).

    For scores that do not depend on the scale of the features: squares and Gram
    matrices of values near 1e150 would overflow, of values near 1e-170 underflow.
    """
    # max(|x|) without an |x| copy of the array: the same number.
    peak = max(float(features.max()), -float(features.min()))
    return features / peak if peak > 0 else features


def centre(features: np.ndarray) -> np.ndarray:
    """``features`` minus their mean row; exactly zero if they are constant up to rounding.

    Subtracting a rounded mean leaves ~eps * |mean| in every entry of a constant
    feature matrix: an identical tiny row that scale-free scores would blow up into a
    direction of variance. Below ``(max(N, D) * eps)^2 * ||F||^2`` in total squares
    (features scaled by :func:`unit_peak` first, so this cannot overflow) the centred
    matrix is taken as zero.
    """
    n, d = features.shape
    centred = features - features.mean(axis=0)
    # Sums of squares by einsum: no squared copy of an (N, D) array.
    rounding = (max(n, d) * np.finfo(np.float64).eps) ** 2 * _sum_of_squares(features)
    if _sum_of_squares(centred) <= rounding:
        return np.zeros_like(centred)
    return centred


def _sum_of_squares(x: np.ndarray) -> float:
    return float(np.einsum("ij,ij->", x, x))
