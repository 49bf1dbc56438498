"""Validation at the front door of every probe.

Each public probe calls these once, then hands plain float64 arrays and integer class
codes to its private core, which does no further checking (scikit-learn's
``check_array`` / private-core split).
"""

from __future__ import annotations

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
    """Re-encode labels of any sortable values to codes 0..C-1; return ``(codes, C)``.

    The class count comes from the distinct values present, never from ``max + 1``, so
    labels that skip a value, are negative, or are strings all work.

    Raises
    ------
    ProbeError
        If labels are not 1-D, their length is not ``n_samples``, they hold NaN, their
        values cannot be compared with each other, or fewer than 2 classes are present.
    """
    y = np.asarray(labels)
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
    if y.dtype.kind in "fc" and np.isnan(y).any():
        raise ProbeError(
            f"labels: {int(np.isnan(y).sum())} label(s) are NaN; drop the unlabelled samples first."
        )
    try:
        classes, codes = np.unique(y, return_inverse=True)
    except TypeError as err:
        raise ProbeError(
            f"labels: values of different types cannot be sorted ({err}); "
            "use labels of one type, e.g. all str or all int."
        ) from err
    if classes.size < 2:
        raise ProbeError(
            f"labels: found {classes.size} class(es), need at least 2; "
            "a measure of class separability needs two or more classes."
        )
    return codes.reshape(-1).astype(np.intp), int(classes.size)


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
