"""Saves without the cyclic garbage collector's interruptions (issue 13, branch ``hotpath``).

A chunk save allocates a few container objects per event (stored events, recordings, the
notes keep_current remembers, rows) and keeps some of them until the run's read tables catch
up. CPython's collector runs a young collection every 700 net container allocations and,
as survivors pile up, full collections that walk every object of the process: measured, 5-11 %
of the write path's client CPU (docs/performance.md). None of it is cyclic garbage of the save:
its objects are freed by reference counting.

``paused()`` switches automatic collection off while a save and its after-write hooks run and
back on when the last overlapping save ends (threads share the collector), unless it was off
before the first one. Garbage made meanwhile is collected as usual afterwards (the next
allocation past the threshold triggers a young collection), so memory stays bounded by what
one save makes. It never collects anything itself, and never turns on a collector someone
turned off.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextmanager
def paused() -> Iterator[None]:
    """Automatic garbage collection off for the block (and any overlapping one)."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
