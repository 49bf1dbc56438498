"""The seeded, stratified subset a probe with ``max_samples`` runs on when N is larger.

Probes whose cost grows faster than N (leave-one-out kNN is O(N^2 D), the cross-validated
linear probe fits many models) declare a cap in the registry; :func:`probes.compute` then
hands them the rows :func:`subsample_rows` picks, and records how many in the Measurement.

The rule, in full:

1. rows are put in a canonical order (:mod:`probes._order`: a fixed projection of the probe's
   first sample-wise array — ``features``, else ``source_probs``, else ``random_features`` —
   ties broken by its bytes, then by label), so the subset does not depend on the order the
   samples come in, nor on the features' rounding;
2. every class is kept, with ``min(count, 2)`` rows at least (1 when 2 per class would not
   fit in the cap; when even 1 per class does not fit, one row of every class is taken and
   the subset exceeds the cap), and the rest of the cap is shared in proportion to the
   class sizes (largest remainders, ties to the smaller class code);
3. within each class, rows are drawn uniformly without replacement by
   ``numpy.random.default_rng(SUBSAMPLE_SEED)``, classes in code order.

Inputs of N <= max_samples are passed through untouched, so the value is exactly the
uncapped one. Two probes with the same cap and the same features and labels get the same
rows (the linear probe and the pre-training gain share their fits that way).
"""

from __future__ import annotations

import numpy as np

from probes._checks import ProbeError, check_features, check_source_probs, encode_labels
from probes._order import row_order

SUBSAMPLE_SEED = 0
# The arrays with one row per sample, in the order that decides which one orders the rows.
SAMPLE_INPUTS = ("features", "source_probs", "random_features")
# Rows validated at once before subsampling: bounds the float64 copy the checks make.
_CHECK_ROWS = 4096


def subsample_rows(
    order_by: np.ndarray, codes: np.ndarray | None, max_samples: int,
    seed: int = SUBSAMPLE_SEED,
) -> np.ndarray:
    """Indices of the stratified subset of at most ``max_samples`` rows (see the module).

    Parameters
    ----------
    order_by : array of shape (N, ...)
        The rows that put the samples in canonical order.
    codes : array of shape (N,) of ints 0..C-1, or None
        Class codes (from :func:`probes._checks.encode_labels`); None: one stratum.
    max_samples : int
        The cap, >= 1.
    seed : int
        Seed of the draw within each class.

    Returns
    -------
    array of int
        Increasing indices into the canonical order's rows, mapped back to the input's
        rows: ``order_by[idx]`` is the subset, in canonical order. All rows (``arange(N)``
        in canonical order) when N <= max_samples.
    """
    n = order_by.shape[0]
    if codes is None:
        codes = np.zeros(n, dtype=np.intp)
    order = canonical_order(order_by, codes)
    if n <= max_samples:
        return order
    sorted_codes = codes[order]
    counts = np.bincount(sorted_codes)
    take = allocate(counts, max_samples)
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.flatnonzero(take):
        members = np.flatnonzero(sorted_codes == cls)  # positions in canonical order
        chosen.append(rng.choice(members, size=int(take[cls]), replace=False))
    return order[np.sort(np.concatenate(chosen))]


def canonical_order(rows: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """A permutation putting the samples in canonical order (see :mod:`probes._order`)."""
    return row_order(rows, codes)


def allocate(counts: np.ndarray, max_samples: int) -> np.ndarray:
    """Rows to take from each class: every present class kept, ``min(count, 2)`` at least
    where 2 per class fit in ``max_samples`` (else 1), the rest in proportion to ``counts``
    by largest remainders (ties to the smaller class code). Sums to ``max_samples`` unless
    the classes alone outnumber it (then one row each)."""
    counts = np.asarray(counts, dtype=np.int64)
    present = counts > 0
    floor = np.minimum(counts, 2)
    if floor.sum() > max_samples:
        floor = np.minimum(counts, 1)
    if floor.sum() >= max_samples:
        return floor
    total = int(counts.sum())
    ideal = max_samples * counts / total
    take = np.clip(np.floor(ideal).astype(np.int64), floor, counts)
    # Too many (the floors lifted small classes): take back from the classes furthest above
    # their share; too few: give to the largest remainders. Each step moves one row.
    while take.sum() > max_samples:
        excess = np.where(take > floor, take - ideal, -np.inf)
        take[int(np.argmax(excess))] -= 1
    while take.sum() < max_samples:
        remainder = np.where((take < counts) & present, ideal - take, -np.inf)
        take[int(np.argmax(remainder))] += 1
    return take


def sample_inputs(needs: tuple[str, ...], inputs: dict, max_samples: int
                  ) -> tuple[dict, int | None]:
    """The inputs a probe needs, cut to the stratified subset when N > ``max_samples``.

    Returns ``(inputs, n_used)``: n_used is None when nothing was cut. Inputs that are not
    valid for the probe are passed through whole, so the probe reports them with the
    message (and row numbers) it gives without a cap.
    """
    kwargs = {need: inputs[need] for need in needs}
    sample_wise = [name for name in SAMPLE_INPUTS if name in kwargs]
    if not sample_wise:
        return kwargs, None
    try:
        first = np.asarray(kwargs[sample_wise[0]])
    except (ValueError, TypeError):  # ragged: the probe's own check says what is wrong
        return kwargs, None
    if first.ndim < 1 or first.shape[0] <= max_samples:
        return kwargs, None
    n = first.shape[0]
    try:
        for name in sample_wise:
            _check_in_chunks(name, kwargs[name], n)
        codes = encode_labels(kwargs["labels"], n)[0] if "labels" in kwargs else None
    except ProbeError:
        return kwargs, None
    keep = subsample_rows(first, codes, max_samples)
    subset = {name: np.asarray(kwargs[name])[keep] for name in sample_wise}
    if "labels" in kwargs:
        subset["labels"] = _label_rows(kwargs["labels"], keep)
    return {**kwargs, **subset}, int(keep.size)


def _check_in_chunks(name: str, array: object, n: int) -> None:
    """ProbeError if ``array`` is not what the probe accepts, checked ``_CHECK_ROWS`` rows
    at a time (the checks make a float64 copy)."""
    try:
        x = np.asarray(array)
    except (ValueError, TypeError) as err:
        raise ProbeError(f"{name}: not an array") from err
    if x.ndim != 2 or x.shape[0] != n:
        raise ProbeError(f"{name}: not subsampled")
    check = check_source_probs if name == "source_probs" else check_features
    for start in range(0, n, _CHECK_ROWS):
        check(x[start:start + _CHECK_ROWS])


def _label_rows(labels: object, keep: np.ndarray) -> object:
    """The labels of the kept rows, of the same kind: a list stays a list (numpy would turn
    a list of tuples into a 2-D array)."""
    if isinstance(labels, np.ndarray):
        return labels[keep]
    items = list(labels)
    return [items[i] for i in keep]
