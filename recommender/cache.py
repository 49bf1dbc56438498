"""Where nbtl keeps what it can reuse: converted weights, extracted features, finished runs.

The user cache directory, never the dataset folder: ``$NBTL_CACHE_DIR`` when set,
else ``$XDG_CACHE_HOME/nbtl``, else ``~/.cache/nbtl``.

A cache only saves time, so it never costs a run: an entry that cannot be written (a file
where the folder should be, a read-only folder, a full disk, a home that does not exist) or
one that is damaged is a one-line :class:`~recommender.errors.NbtlWarning`, and the run goes
on in memory.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from recommender.errors import NbtlWarning

# A temporary file older than this is left over from an interrupted write (a write takes
# seconds), not one in progress in another process.
LEFTOVER_SECONDS = 3600


def cache_dir() -> Path:
    explicit = os.environ.get("NBTL_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "nbtl"


def digest(payload: Any) -> str:
    """A stable hex key for JSON-serialisable ``payload``."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            sha.update(block)
    return sha.hexdigest()[:32]


def files_identity(paths: Iterable[Path]) -> list[list]:
    """``[path, size, mtime_ns]`` per file, for a cache key: a file rewritten in place (same
    path, new pixels) changes its size or modification time, so the key changes with it."""
    identity = []
    for path in paths:
        stat = os.stat(path)
        identity.append([str(path), stat.st_size, stat.st_mtime_ns])
    return identity


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_path)`` then move the file into place, so readers never see half a file.

    The file gets the mode a plain ``open`` would give it (``0o666`` less the umask), not
    ``mkstemp``'s private ``0o600``, so that a cache shared between users stays readable.

    Raises
    ------
    OSError
        The folder or the file cannot be written; :func:`try_write` turns this into a warning.
    """
    make_folder(path.parent)
    _remove_leftovers(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def try_write(path: Path, write: Callable[[Path], Any], what: str) -> bool:
    """:func:`atomic_write`, with a cache that cannot be written costing one warning (naming
    ``what``, e.g. ``"extracted features"``) instead of the run. Returns whether ``path`` was
    written; a caller that writes many entries stops trying after ``False``."""
    try:
        atomic_write(path, write)
    except OSError as exc:
        warn_unwritable(path, what, exc)
        return False
    return True


def warn_unwritable(path: Path, what: str, exc: OSError) -> None:
    """One warning line: the cache at ``path`` cannot keep ``what``; the run goes on."""
    reason = exc.strerror or str(exc)
    warnings.warn(f"the cache cannot be written ({path}: {reason}), so the {what} of this run "
                  "are not kept; set NBTL_CACHE_DIR to a writable folder, or pass --no-cache.",
                  NbtlWarning, stacklevel=3)


def discard(path: Path, what: str, reason: str) -> None:
    """A damaged cache entry: one warning line, and the file is deleted (when it can be) so
    that it is made again rather than tripping every later run."""
    warnings.warn(f"a damaged {what} in the cache was ignored ({path}: {reason}); it is made "
                  "again.", NbtlWarning, stacklevel=3)
    with contextlib.suppress(OSError):
        path.unlink()


def make_folder(folder: Path) -> None:
    """Create ``folder`` and its parents, but never a home directory that does not exist
    (``HOME`` pointing nowhere): that is not the cache's to create."""
    with contextlib.suppress(RuntimeError):  # no home at all: nothing to guard
        home = Path.home()
        if folder.is_relative_to(home) and not home.is_dir():
            raise FileNotFoundError(errno.ENOENT, "the home directory does not exist",
                                    str(home))
    folder.mkdir(parents=True, exist_ok=True)


def _remove_leftovers(folder: Path) -> None:
    """Delete the temporary files of writes interrupted long ago (one listing per write)."""
    cutoff = time.time() - LEFTOVER_SECONDS
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)


def _umask() -> int:
    """The process's umask (reading it means setting it: put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
