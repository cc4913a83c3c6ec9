"""Following the log with many processes: one active follower per store, the rest on standby.

Any number of ``projections run`` processes may run on any hosts. Each waits for the store's
follower lock (infrastructure/locks.py: a PostgreSQL advisory lock, or flock beside a SQLite
file); the holder keeps the read tables current, the others stand by and poll the lock. When the
holder dies its session ends, the lock is free, and a standby takes over within a poll. Exactly
once still rests on the tracking table, not on the lock: a zombie and its successor cannot both
apply an event (docs/projections.md), the lock only keeps them from doing the work twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from infrastructure.locks import StoreLock
from infrastructure.settings import Database
from projections.runner import Projector

FOLLOWER_LOCK = "projections:follower"


def follow(
    database: Database,
    *,
    poll_seconds: float = 1.0,
    stop: threading.Event | None = None,
    report: Callable[[str], None] = print,
) -> None:
    """Stand by until this process holds the follower lock, then follow the log until ``stop``
    is set; if the lock's session is lost, stop following and stand by again."""
    stop = stop or threading.Event()
    lock = StoreLock(database, FOLLOWER_LOCK)
    while not stop.is_set():
        if not lock.try_acquire():
            report("standing by: another projections process is active")
            if not lock.acquire(poll_seconds=poll_seconds, stop=stop):
                return
        report("active: following the log")
        lost = threading.Event()
        following = threading.Event()

        def watch(following: threading.Event = following, lost: threading.Event = lost) -> None:
            while not stop.wait(poll_seconds) and not following.is_set():
                if not lock.alive():
                    lost.set()
                    break
            following.set()  # tells run_forever to return

        watcher = threading.Thread(target=watch, name="follower-lock", daemon=True)
        watcher.start()
        try:
            with Projector(database) as projector:
                projector.run_forever(poll_seconds=poll_seconds, stop=following, report=report)
        finally:
            following.set()
            watcher.join()
            lock.release()
        if lost.is_set():
            report("lost the follower lock (database session ended); standing by")
