"""A Ctrl-C that lands while the process forks, for the tests of recommender.signals' users."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

_ARMED = {"armed": False, "registered": False}


def _send_sigint() -> None:
    if _ARMED["armed"]:
        _ARMED["armed"] = False
        os.kill(os.getpid(), signal.SIGINT)


@contextmanager
def sigint_in_the_next_fork() -> Iterator[None]:
    """SIGINT sent from an after-fork hook of this process, the next time it forks: where
    Python, unguarded, prints "Exception ignored" and goes on. Python's own SIGINT handler
    while inside (a test runner may have another)."""
    if not _ARMED["registered"]:  # a hook cannot be removed: registered once, then armed
        os.register_at_fork(after_in_parent=_send_sigint)
        _ARMED["registered"] = True
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    _ARMED["armed"] = True
    try:
        yield
    finally:
        _ARMED["armed"] = False
        signal.signal(signal.SIGINT, previous)
