"""Find the images of a dataset, check each one decodes, and say what was left out.

Two layouts are read:

* ImageFolder (torchvision's convention): one sub-folder per class, sorted;
  images found recursively inside each class folder, in a sorted walk; hidden
  files and folders (a name starting with ``.``) ignored; symbolic links followed
  while they stay inside the root, one that leads outside it skipped.
* A labels file (``--labels FILE.csv``): a header row with columns ``path`` and
  ``label`` (others ignored); paths relative to the dataset root, never outside it.

Every candidate image is fully decoded with :func:`~recommender.images.open_rgb`
before it is kept, so unreadable files are found here, listed with a reason and
counted, instead of failing a model run later. Nothing is ever written into the
dataset folder.
"""

from __future__ import annotations

import csv
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recommender.data.images import IMAGE_EXTENSIONS, UnreadableImage, open_rgb
from recommender.errors import DatasetError, UsageError

SOURCE_FOLDER = "folder"
MIN_IMAGES_PER_CLASS = 2  # one image cannot be compared with another of its class
MIN_CLASSES = 2
LABEL_COLUMNS = ("path", "label")
LINK_OUTSIDE_ROOT = "symbolic link leading outside the dataset root"
_MAX_WORKERS = 8

_LAYOUT_HINT = (
    "Put the images of each class in its own sub-folder (ImageFolder layout), "
    "or pass --labels FILE.csv with columns path,label."
)


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of the dataset; ``path`` is relative to the root when inside it."""

    path: str
    reason: str

    def to_dict(self) -> dict:
        return {"path": self.path, "reason": self.reason}


@dataclass(frozen=True)
class Dataset:
    """The usable images of a dataset and an account of everything left out."""

    root: Path
    source: str  # SOURCE_FOLDER, or the labels CSV's path
    classes: tuple[str, ...]  # sorted; only the classes kept
    samples: tuple[tuple[Path, int], ...]  # (absolute path, class index), sorted by (class, path)
    skipped: tuple[SkippedFile, ...]  # sorted by path
    dropped_classes: tuple[str, ...]  # classes left with fewer than MIN_IMAGES_PER_CLASS images
    warnings: tuple[str, ...]
    max_per_class: int | None = None
    seed: int = 0

    def class_counts(self) -> dict[str, int]:
        """Number of kept images per class, in class order."""
        counts = dict.fromkeys(self.classes, 0)
        for _, index in self.samples:
            counts[self.classes[index]] += 1
        return counts

    def to_dict(self) -> dict:
        """A JSON-ready view of the dataset (without the per-image list)."""
        return {
            "root": str(self.root),
            "source": self.source,
            "num_images": len(self.samples),
            "num_classes": len(self.classes),
            "classes": list(self.classes),
            "class_counts": self.class_counts(),
            "skipped": [skipped.to_dict() for skipped in self.skipped],
            "num_skipped": len(self.skipped),
            "dropped_classes": list(self.dropped_classes),
            "warnings": list(self.warnings),
            "max_per_class": self.max_per_class,
            "seed": self.seed,
        }


def load_dataset(
    root: str | os.PathLike[str],
    *,
    labels_csv: str | os.PathLike[str] | None = None,
    max_per_class: int | None = None,
    seed: int = 0,
    workers: int | None = None,
) -> Dataset:
    """Scan ``root``, decode every candidate image, and return the usable ones.

    Parameters
    ----------
    root : str or os.PathLike
        The dataset folder: one sub-folder per class, or the folder that the
        paths in ``labels_csv`` are relative to.
    labels_csv : str or os.PathLike, optional
        A CSV file with a header row naming columns ``path`` and ``label``.
    max_per_class : int, optional
        Keep at most this many images per class, drawn at random (``seed``);
        files are decoded in the drawn order until enough usable ones are found,
        so unreadable files do not reduce the count.
    seed : int, default 0
        Seed of the per-class draw; only used with ``max_per_class``.
    workers : int, optional
        Threads that decode images; default ``min(8, os.cpu_count())``. The
        result does not depend on it.

    Returns
    -------
    Dataset

    Raises
    ------
    UsageError
        If ``max_per_class`` is below 2, ``workers`` below 1, or ``seed`` negative.
    DatasetError
        If the path or the labels file is missing or unusable, a labels path
        leaves the root, or fewer than 2 classes keep at least 2 usable images.
    """
    _check_options(max_per_class, seed, workers)
    root_path = _check_root(Path(root).expanduser())
    if labels_csv is None:
        by_class, skipped = _scan_folder(root_path)
        source = SOURCE_FOLDER
    else:
        csv_path = Path(labels_csv).expanduser().absolute()
        by_class, skipped = _read_labels_csv(csv_path, root_path)
        source = str(csv_path)

    n_workers = workers if workers is not None else min(_MAX_WORKERS, os.cpu_count() or 1)
    with _thread_map(n_workers) as mapper:
        usable, unreadable = _select_usable(by_class, root_path, max_per_class, seed, mapper)
    skipped = sorted(skipped + unreadable, key=lambda s: (s.path, s.reason))

    kept = sorted(name for name, rels in usable.items() if len(rels) >= MIN_IMAGES_PER_CLASS)
    dropped = sorted(set(usable) - set(kept))
    if len(kept) < MIN_CLASSES:
        raise _too_few_classes(root_path, source, by_class, usable, skipped)

    warnings = [
        f"Class {name!r} dropped: {_images(len(usable[name]))} usable "
        f"(at least {MIN_IMAGES_PER_CLASS} needed)."
        for name in dropped
    ]
    if max_per_class is not None:
        short = [
            f"{name} ({len(usable[name])})" for name in kept if len(usable[name]) < max_per_class
        ]
        if short:
            warnings.append(
                f"{len(short)} of {len(kept)} classes have fewer than --max-per-class "
                f"{max_per_class} usable images: {', '.join(short)}."
            )

    samples = tuple(
        (root_path / rel, index) for index, name in enumerate(kept) for rel in sorted(usable[name])
    )
    return Dataset(
        root=root_path,
        source=source,
        classes=tuple(kept),
        samples=samples,
        skipped=tuple(skipped),
        dropped_classes=tuple(dropped),
        warnings=tuple(warnings),
        max_per_class=None if max_per_class is None else int(max_per_class),
        seed=int(seed),
    )


# --- the front door ------------------------------------------------------------------------


def _check_options(max_per_class: int | None, seed: int, workers: int | None) -> None:
    # One image per class would leave every class dropped (MIN_IMAGES_PER_CLASS).
    too_few = max_per_class is not None and (
        not _is_int(max_per_class) or max_per_class < MIN_IMAGES_PER_CLASS
    )
    if too_few:
        raise UsageError(
            f"--max-per-class must be a whole number of at least {MIN_IMAGES_PER_CLASS}, "
            f"got {max_per_class!r}.",
            "Leave it out to use every image, or pass e.g. --max-per-class 100.",
        )
    if not _is_int(seed) or seed < 0:
        raise UsageError(f"--seed must be a whole number of at least 0, got {seed!r}.")
    if workers is not None and (not _is_int(workers) or workers < 1):
        raise UsageError(f"workers must be a whole number of at least 1, got {workers!r}.")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_root(root: Path) -> Path:
    if not root.exists():
        raise DatasetError(
            f"Dataset path not found: {root}",
            "Check the path; it should be a folder with one sub-folder of images per class.",
        )
    if not root.is_dir():
        hint = "Pass the folder that holds the images."
        if root.suffix.lower() == ".csv":
            hint += " A labels file goes with --labels: nbtl-recommend FOLDER --labels FILE.csv."
        raise DatasetError(f"Dataset path is a file, not a folder: {root}", hint)
    return root.resolve()


# --- candidates: class name -> paths relative to the root ----------------------------------

Candidates = dict[str, list[str]]


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _scan_folder(root: Path) -> tuple[Candidates, list[SkippedFile]]:
    """Candidates of an ImageFolder layout, and the files skipped by name alone."""
    by_class: Candidates = {}
    skipped: list[SkippedFile] = []
    try:
        with os.scandir(root) as scan:
            entries = sorted(scan, key=lambda e: e.name)
    except OSError as exc:
        raise DatasetError(f"Cannot list the dataset folder {root}: {exc.strerror or exc}") from exc
    for entry in entries:
        if _is_hidden(entry.name) or _skip_link_outside(root, Path(entry.name), skipped):
            continue
        if entry.is_dir():
            # A class folder without images is still a class: it is dropped with a warning.
            by_class[entry.name] = _walk_class_folder(root, entry.name, skipped)
        else:
            skipped.append(SkippedFile(entry.name, "not inside a class folder"))
    return by_class, skipped


def _leaves_root(path: Path, root: Path) -> bool:
    """Whether ``path`` is a symbolic link that resolves outside ``root`` (``root`` resolved)."""
    # os.path.realpath, not Path.resolve: it returns on a symlink loop instead of raising.
    return path.is_symlink() and not Path(os.path.realpath(path)).is_relative_to(root)


def _walk_class_folder(root: Path, name: str, skipped: list[SkippedFile]) -> list[str]:
    images: list[str] = []
    seen_dirs: set[str] = set()
    # Links are followed only while they stay inside the root: the walk never leaves it.
    for dirpath, dirnames, filenames in os.walk(root / name, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a symlink loop
            dirnames.clear()
            continue
        seen_dirs.add(real)
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = [
            d for d in sorted(dirnames)
            if not _is_hidden(d) and not _skip_link_outside(root, rel_dir / d, skipped)
        ]
        for filename in sorted(f for f in filenames if not _is_hidden(f)):
            rel = (rel_dir / filename).as_posix()
            if _skip_link_outside(root, rel_dir / filename, skipped):
                continue
            extension = Path(filename).suffix.lower()
            if extension in IMAGE_EXTENSIONS:
                images.append(rel)
            else:
                what = f"unsupported extension {extension}" if extension else "no extension"
                skipped.append(SkippedFile(rel, f"not an image file: {what}"))
    return images


def _skip_link_outside(root: Path, rel: Path, skipped: list[SkippedFile]) -> bool:
    """Whether ``root / rel`` is a link leading outside the root; if so it is listed as skipped."""
    if not _leaves_root(root / rel, root):
        return False
    skipped.append(SkippedFile(rel.as_posix(), LINK_OUTSIDE_ROOT))
    return True


def _read_labels_csv(csv_path: Path, root: Path) -> tuple[Candidates, list[SkippedFile]]:
    """Candidates listed in a labels file, and the rows skipped before decoding."""
    rows = _read_csv_rows(csv_path)
    if not rows:
        raise DatasetError(
            f"The labels file {csv_path} lists no images, only a header row.",
            "Add one row per image: its path relative to the dataset root, and its label.",
        )
    by_class: Candidates = {}
    skipped: list[SkippedFile] = []
    first_seen: dict[str, tuple[int, str]] = {}
    for line, raw_path, label in rows:
        where = f"{csv_path.name} line {line}"
        if not raw_path:
            skipped.append(SkippedFile(where, "empty path"))
            continue
        rel = _contained_relative_path(raw_path, root, csv_path, line)
        if not label:
            skipped.append(SkippedFile(rel, f"no label ({where})"))
            continue
        if rel in first_seen:
            first_line, first_label = first_seen[rel]
            reason = f"duplicate row ({where} repeats line {first_line}"
            if label != first_label:
                reason += f", with label {label!r} instead of {first_label!r}"
            skipped.append(SkippedFile(rel, reason + ")"))
            continue
        first_seen[rel] = (line, label)
        target = root / rel
        if not target.exists():
            skipped.append(SkippedFile(rel, "file not found"))
        elif not target.is_file():
            skipped.append(SkippedFile(rel, "not a file"))
        else:
            by_class.setdefault(label, []).append(rel)
    return by_class, skipped


def _read_csv_rows(csv_path: Path) -> list[tuple[int, str, str]]:
    """(line number, path, label) of every non-blank row, values stripped."""
    if not csv_path.is_file():
        what = "is a folder, not a file" if csv_path.is_dir() else "not found"
        raise DatasetError(
            f"Labels file {what}: {csv_path}",
            "Pass --labels a CSV file whose header row names the columns path,label.",
        )
    try:
        # utf-8-sig: spreadsheet programs often start a UTF-8 CSV with a byte-order mark.
        with open(csv_path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            checked = _without_nul(reader, csv_path)
            header = [cell.strip().lower() for cell in next(checked, [])]
            missing = [column for column in LABEL_COLUMNS if column not in header]
            if missing:
                found = ", ".join(repr(cell) for cell in header if cell) or "none"
                raise DatasetError(
                    f"The labels file {csv_path} has no {' or '.join(missing)} column "
                    f"(columns found: {found}).",
                    "Its first row must name the columns path,label (other columns are ignored).",
                )
            path_at, label_at = header.index("path"), header.index("label")
            rows = []
            for row in checked:
                cells = [cell.strip() for cell in row]
                if not any(cells):
                    continue
                path = cells[path_at] if path_at < len(cells) else ""
                label = cells[label_at] if label_at < len(cells) else ""
                rows.append((reader.line_num, path, label))
            return rows
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"The labels file {csv_path} is not UTF-8 text.", "Save it as a UTF-8 CSV file."
        ) from exc
    except csv.Error as exc:  # a field over csv's size limit; on Python 3.10, a NUL byte too
        raise DatasetError(
            f"The labels file {csv_path} is not valid CSV at line {reader.line_num}: {exc}.",
            "Save it as a UTF-8 CSV file with one row per image: path,label.",
        ) from exc


def _without_nul(reader: Iterator[list[str]], csv_path: Path) -> Iterator[list[str]]:
    """The rows of ``reader``; a NUL character, which no path can hold, is a DatasetError."""
    for row in reader:
        if any("\0" in cell for cell in row):
            raise DatasetError(
                f"The labels file {csv_path} line {reader.line_num} contains a NUL byte, "
                "which no path or label can hold.",
                "Save it as plain UTF-8 text (a NUL byte on every other character means "
                "UTF-16: re-save it as UTF-8 CSV).",
            )
        yield row


def _contained_relative_path(raw_path: str, root: Path, csv_path: Path, line: int) -> str:
    """``raw_path`` as a POSIX path relative to ``root``; refused if it leaves the root."""
    path = Path(raw_path)
    # realpath follows ".." and symlinks, so a link that points out of the root is caught too;
    # the resolved path also names the file actually read, so two spellings of it are duplicates.
    # (Path.resolve would raise on a symlink loop; realpath leaves it to be found unreadable.)
    resolved = Path(os.path.realpath(root / path))
    if path.is_absolute() or path.drive:
        problem = "is absolute"
    elif not resolved.is_relative_to(root):
        problem = "leads outside the dataset root"
    else:
        return resolved.relative_to(root).as_posix()
    raise DatasetError(
        f"{csv_path} line {line}: the path {raw_path!r} {problem}, so it was refused.",
        f"Paths in the labels file must be relative to the dataset root ({root}) "
        "and stay inside it.",
    )


# --- decoding ------------------------------------------------------------------------------

Mapper = Callable[[Callable[[Path], str | None], Sequence[Path]], Iterable[str | None]]


@contextmanager
def _thread_map(workers: int) -> Iterator[Mapper]:
    """An order-keeping ``map``: over a thread pool (PIL decodes without the GIL), or plain."""
    if workers == 1:
        yield map
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield pool.map


def _unreadable_reason(path: Path) -> str | None:
    """None when ``path`` decodes to a usable image, else why not."""
    try:
        open_rgb(path).close()
    except UnreadableImage as exc:
        return exc.reason
    return None


def _select_usable(
    by_class: Candidates,
    root: Path,
    max_per_class: int | None,
    seed: int,
    mapper: Mapper,
) -> tuple[Candidates, list[SkippedFile]]:
    """Decode candidates, per class in draw order, until each class has enough.

    Each round decodes, for every class still short, as many files as it still
    needs, all classes together on the pool. What is kept and what is listed as
    unreadable depend on the seed only, never on thread timing or the pool size.
    """
    queues = {
        name: _draw_order(sorted(rels), name, max_per_class, seed)
        for name, rels in by_class.items()
    }
    usable: Candidates = {name: [] for name in by_class}
    unreadable: list[SkippedFile] = []
    taken = dict.fromkeys(by_class, 0)  # how far each queue has been read
    while True:
        batch: list[tuple[str, str]] = []
        for name in sorted(queues):
            short = (
                len(queues[name]) if max_per_class is None else max_per_class - len(usable[name])
            )
            batch += [(name, rel) for rel in queues[name][taken[name] : taken[name] + short]]
            taken[name] += short
        if not batch:
            return usable, unreadable
        reasons = mapper(_unreadable_reason, [root / rel for _, rel in batch])
        for (name, rel), reason in zip(batch, reasons, strict=True):
            if reason is None:
                usable[name].append(rel)
            else:
                unreadable.append(SkippedFile(rel, reason))


def _draw_order(rels: list[str], name: str, max_per_class: int | None, seed: int) -> list[str]:
    if max_per_class is None:
        return rels
    # One stream per (seed, class): a class's draw does not change when other classes do.
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8", "surrogateescape"))])
    return [rels[i] for i in rng.permutation(len(rels))]


# --- when too little is left -------------------------------------------------------------


def _images(count: int) -> str:
    return f"{count} image" if count == 1 else f"{count} images"


def _too_few_classes(
    root: Path,
    source: str,
    by_class: Candidates,
    usable: Candidates,
    skipped: list[SkippedFile],
) -> DatasetError:
    """The error for a dataset left with fewer than MIN_CLASSES classes: what was found."""
    n_candidates = sum(len(rels) for rels in by_class.values())
    if source == SOURCE_FOLDER and not by_class:
        message = (
            f"No class folders with images in {root}: found {len(skipped)} files and 0 sub-folders."
        )
    elif source == SOURCE_FOLDER and n_candidates == 0:
        message = (
            f"No images in the {len(by_class)} class folders of {root}: found {len(skipped)} "
            f"other files; image files end in {', '.join(IMAGE_EXTENSIONS)}."
        )
    elif n_candidates == 0:
        message = f"No image listed in {source} was found under {root}."
    else:
        counts = ", ".join(f"{name} {len(usable[name])}" for name in sorted(usable))
        message = (
            f"Fewer than {MIN_CLASSES} classes in {root} have at least {MIN_IMAGES_PER_CLASS} "
            f"usable images (usable images per class: {counts})."
        )
    if skipped and by_class:
        examples = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:3])
        more = ", ..." if len(skipped) > 3 else ""
        were = "file was" if len(skipped) == 1 else "files were"
        message += f" {len(skipped)} {were} skipped ({examples}{more})."
    if source != SOURCE_FOLDER:
        return DatasetError(
            message,
            f"List at least {MIN_IMAGES_PER_CLASS} readable images for each of at least "
            f"{MIN_CLASSES} labels, with paths relative to {root}.",
        )
    return DatasetError(message, _LAYOUT_HINT)
