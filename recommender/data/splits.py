"""Train / validation / test splits of a dataset's images: one stratified splitter for all.

A *data split* here is always a partition of images; it has nothing to do with the
``split_block`` hyperparameter (the block where the lower learning-rate group ends).
:func:`stratified_split` serves ``--validate`` (60/20/20), the scratch training (75/25) and
the benchmark; :func:`split_from_folders` takes the user's own ``train/``, ``val/``,
``test/`` folders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recommender.errors import DatasetError

if TYPE_CHECKING:
    from recommender.data.dataset import Dataset

SPLIT_FRACTIONS = (0.6, 0.2, 0.2)  # train, validation, test, per class
VAL_FRACTION_OF_TRAIN = 0.25  # with split folders but no validation folder
MIN_PER_CLASS = 3  # one image per class in each part
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


@dataclass(frozen=True)
class DataSplit:
    """Indices into one list of samples: train, validation and test."""

    samples: tuple[tuple[Path, int], ...]
    classes: tuple[str, ...]
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    source: str  # "stratified" or "folders"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "n_train": int(self.train.size),
                "n_val": int(self.val.size), "n_test": int(self.test.size),
                "fractions": list(SPLIT_FRACTIONS) if self.source == "stratified" else None}


def stratified_split(codes: np.ndarray, held_out: Sequence[float], seed: int
                     ) -> tuple[np.ndarray, ...]:
    """Indices ``(rest, *parts)``: per class, the members drawn in a random order (``seed``)
    and cut into one part per fraction of ``held_out``, in that order, then the rest.

    Each part takes ``round(fraction * n)`` images of a class of ``n``, at least one, and
    leaves at least one for the rest (none where the class has a single image). Indices are
    sorted within each part.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(len(held_out) + 1)]
    for cls in np.unique(codes):
        members = rng.permutation(np.flatnonzero(codes == cls))
        start = 0
        for i, fraction in enumerate(held_out, 1):
            room = members.size - start - 1
            k = max(0, min(max(1, round(fraction * members.size)), room))
            parts[i].extend(members[start:start + k])
            start += k
        parts[0].extend(members[start:])
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)


def split_dataset(samples: Sequence[tuple[Path, int]], classes: Sequence[str],
                  seed: int) -> DataSplit:
    """A stratified :data:`SPLIT_FRACTIONS` split of ``samples`` drawn with ``seed``."""
    codes = np.array([c for _, c in samples])
    counts = np.bincount(codes, minlength=len(classes))
    short = [classes[i] for i in np.flatnonzero(counts < MIN_PER_CLASS)]
    if short:
        raise DatasetError(
            f"--validate needs at least {MIN_PER_CLASS} images per class (train, validation, "
            f"test); too few in: {', '.join(short[:5])}.",
            "Add images to those classes, or give your own split as train/, val/ and test/ "
            "folders.")
    _, val_share, test_share = SPLIT_FRACTIONS
    train, test, val = stratified_split(codes, (test_share, val_share), seed)
    return DataSplit(tuple(samples), tuple(classes), train, val, test, "stratified")


def find_split_folders(path: Path) -> dict[str, Path] | None:
    """``{"train": ..., "test": ..., ["val": ...]}`` when ``path`` holds split folders
    (``train/`` and ``test/``, optionally ``val/``, each with one sub-folder per class)."""
    path = Path(path)
    if not path.is_dir():
        return None
    found = {}
    for role, names in SPLIT_FOLDERS.items():
        for name in names:
            if (path / name).is_dir():
                found[role] = path / name
                break
    if "train" not in found or "test" not in found:
        return None
    if not any(p.is_dir() and not p.name.startswith(".") for p in found["train"].iterdir()):
        return None
    return found


def split_from_folders(parts: Mapping[str, Dataset], seed: int) -> DataSplit:
    """A split from loaded ``train``/``test`` (and optional ``val``) datasets; without a
    validation folder, a stratified :data:`VAL_FRACTION_OF_TRAIN` of train is held out."""
    classes = parts["train"].classes
    for role in ("val", "test"):
        if role in parts and parts[role].classes != classes:
            missing = sorted(set(classes) ^ set(parts[role].classes))
            raise DatasetError(
                f"The class folders of {parts[role].root} differ from those of "
                f"{parts['train'].root} (not in both: {', '.join(missing[:5])}).",
                "Give train/, val/ and test/ the same class sub-folders.")
    samples = list(parts["train"].samples)
    n_train = len(samples)
    if "val" in parts:
        samples += parts["val"].samples
        train, val = np.arange(n_train), np.arange(n_train, len(samples))
    else:
        codes = np.array([c for _, c in samples])
        train, val = stratified_split(codes, (VAL_FRACTION_OF_TRAIN,), seed)
    start = len(samples)
    samples += parts["test"].samples
    test = np.arange(start, len(samples))
    return DataSplit(tuple(samples), tuple(classes), train, val, test, "folders")
