"""Ctrl-C around the places where nbtl forks worker processes."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def ctrl_c_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) while worker processes are forked; it takes effect just after.

    A SIGINT that lands in a fork's own hooks (``os.register_at_fork`` callbacks, e.g.
    logging's lock release) raises there, where Python prints "Exception ignored" and carries
    on, so the run went on to the end; one that lands in the middle of a DataLoader's worker
    start left a half-built iterator whose clean-up printed a traceback. Inside, SIGINT is
    only noted; on the way out the handler that was there gets it. (A handler, not a signal
    mask: torch's threads would take a signal the main thread blocks, and Python raises it in
    the main thread all the same.) The children inherit the noting handler, so they never act
    on the Ctrl-C: the parent stops them. Outside the main thread, where Python neither takes
    signals nor lets the handler change, nothing is done.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: noted.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if noted:
            if callable(previous):
                previous(signal.SIGINT, None)  # Python's own: KeyboardInterrupt, here
            elif previous == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)
