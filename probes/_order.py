"""The canonical order of samples that probes draw folds and subsets in.

A probe must not depend on the order its samples come in, so it first sorts them by
their content. The key is a fixed linear projection of each row (float64), ties broken
by the row's bytes (and then by label): a *continuous* key, so that features which differ
only by rounding (another thread count, another BLAS, a GPU) keep their order, or swap
a few neighbours, where a byte order — led by the lowest mantissa byte of the first
value — would reshuffle every fold (on a 120-image set that moved the linear probe by
up to 0.07; tests/test_probes_order.py).
"""

from __future__ import annotations

import numpy as np

# Rows projected at once: bounds the float64 copy.
_CHUNK_ROWS = 4096
# The projection's weights: a Weyl sequence (frac(j * golden ratio) - 1/2), fixed in
# closed form so the order does not depend on a random generator's version.
_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0


def projection_weights(n_columns: int) -> np.ndarray:
    """The fixed, zero-centred weights of the ordering key."""
    return np.mod(np.arange(1, n_columns + 1, dtype=np.float64) * _GOLDEN, 1.0) - 0.5


def row_order(rows: np.ndarray, codes: np.ndarray | None = None) -> np.ndarray:
    """A permutation putting the samples (the first axis of ``rows``) in canonical order.

    Sorted by ``rows @ projection_weights`` in float64 (summed by numpy, deterministic);
    equal keys by the rows' bytes, then by ``codes`` (identical rows with other labels).
    """
    if rows.shape[0] == 0:
        return np.zeros(0, dtype=np.intp)
    flat = np.ascontiguousarray(rows.reshape(rows.shape[0], -1))
    by_bytes = np.argsort(_byte_keys(flat), kind="stable")
    if codes is not None:
        by_bytes = _labels_break_ties(flat, codes, by_bytes)
    key = projection_key(flat)
    return by_bytes[np.argsort(key[by_bytes], kind="stable")]


def projection_key(flat: np.ndarray) -> np.ndarray:
    """Each row's projection on :func:`projection_weights`, in float64."""
    weights = projection_weights(flat.shape[1])
    key = np.empty(flat.shape[0], dtype=np.float64)
    for start in range(0, flat.shape[0], _CHUNK_ROWS):
        chunk = flat[start:start + _CHUNK_ROWS].astype(np.float64)
        key[start:start + _CHUNK_ROWS] = (chunk * weights).sum(axis=1)
    return key


def _byte_keys(flat: np.ndarray) -> np.ndarray:
    return flat.view(np.dtype((np.void, flat.itemsize * flat.shape[1]))).ravel()


def _labels_break_ties(flat: np.ndarray, codes: np.ndarray, order: np.ndarray) -> np.ndarray:
    sorted_keys = _byte_keys(flat)[order]
    group = np.concatenate(([0], np.cumsum(sorted_keys[1:] != sorted_keys[:-1])))
    if group[-1] == len(order) - 1:  # no two rows alike: nothing for the labels to break
        return order
    return order[np.lexsort((codes[order], group))]
