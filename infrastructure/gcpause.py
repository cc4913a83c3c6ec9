"""Saves and rebuild loads with fewer of the cyclic garbage collector's interruptions (issue
13, branches ``hotpath`` and ``rebuild2``): the collector's policy on the hot paths, in one place.

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

``eased(threshold)`` raises the collector's first threshold while a rebuild loads (see there).
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


REBUILD_GC_THRESHOLD = 10_000
"""The cyclic garbage collector's first threshold while a rebuild loads (700 by default)."""


@contextmanager
def eased(threshold: int = REBUILD_GC_THRESHOLD) -> Iterator[None]:
    """The cyclic garbage collector run less often for the block, then as before.

    A rebuild's load allocates a few containers per event (notes, lean values, rows), all freed
    by reference counting (gc.collect() after a 20-run load with the collector off finds no
    unreachable object), yet each counts toward the collector's thresholds: at the default it
    ran every 700 allocations and walked the older generations every 70,000, a sixth of the
    load's CPU. With a first threshold of 10,000 it still runs, so a cycle made on an error
    path is still freed and memory stays bounded."""
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], threshold), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)
