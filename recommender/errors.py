"""Errors that end a run with a clear message and a documented exit code.

The CLI catches :class:`NbtlError`, prints ``message`` and ``hint`` to stderr
and exits with ``exit_code``; nothing else reaches the user as a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2  # bad command-line usage (also what click uses for its own usage errors)
EXIT_DATA = 3  # the dataset cannot be used
EXIT_MODEL = 4  # the backbone or its weights cannot be had


class NbtlWarning(UserWarning):
    """Something the user should know that does not stop the run (e.g. a cache that cannot be
    written): the command prints it as one line, ``nbtl-recommend: warning: ...``."""


class NbtlError(Exception):
    """Base class: a problem the user can fix, with what to do about it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class UsageError(NbtlError):
    """An option or argument that cannot work as given."""

    exit_code = EXIT_USAGE


class DatasetError(NbtlError):
    """The dataset is missing, empty, or has too few usable classes."""

    exit_code = EXIT_DATA


class ModelUnavailableError(NbtlError):
    """The backbone or its weights cannot be created or loaded."""

    exit_code = EXIT_MODEL
