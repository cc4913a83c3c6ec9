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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from infrastructure.locks import StoreLock
from infrastructure.settings import Database
from projections.catchup import TRANSIENT, ProjectionsStopped, ProjectionStopped
from projections.parking import Parked, describe
from projections.rebuild import RebuildBusy
from projections.store import Store

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
    from projections.runner import Projector  # runner imports FollowLoop from here

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


class FollowLoop:
    """Following the log in this process, a part of ``Projector`` (projections/runner.py):
    ``follow`` above decides whether this process follows; this is how it does."""

    if TYPE_CHECKING:
        database: Database
        store: Store
        parked_now: list[Parked]
        _prepared: bool

        def catch_up(self, names: Sequence[str] | None = None) -> dict[str, int]: ...

    def run_forever(
        self,
        *,
        poll_seconds: float = 1.0,
        stop: threading.Event | None = None,
        report: Callable[[str], None] = print,
    ) -> None:
        """Keep the tables current until ``stop`` is set.

        PostgreSQL: LISTEN on the channel eventsourcing NOTIFYs on each write, so tables follow
        within a batch of the write; ``poll_seconds`` is only a fallback. SQLite (no
        LISTEN/NOTIFY): poll every ``poll_seconds``. A stopped projection is reported once (and
        retried each round: the fix may be a data repair); connection errors are reported and
        retried.
        """
        stop = stop or threading.Event()
        listener = self._listen() if self.store.postgres else None
        last = ""
        try:
            while not stop.is_set():
                message = ""
                try:
                    self.catch_up()
                    if self.parked_now:
                        report(describe(self.parked_now))
                    self.parked_now.clear()
                except (ProjectionsStopped, ProjectionStopped, RebuildBusy) as stopped:
                    message = str(stopped)
                except TRANSIENT as error:
                    message = f"database error, retrying: {error}"
                    self._prepared = False
                    self.store.reconnect()
                    if listener is not None and listener.closed:
                        listener = self._listen()
                if message and message != last:
                    report(message)
                last = message
                if listener is not None and not listener.closed:
                    try:
                        for _ in listener.notifies(timeout=poll_seconds, stop_after=1):
                            pass
                    except psycopg.OperationalError:
                        stop.wait(poll_seconds)
                else:
                    stop.wait(poll_seconds)
        finally:
            if listener is not None:
                listener.close()

    def _listen(self) -> psycopg.Connection[Any]:
        connection = psycopg.connect(self.database.psycopg_conninfo(), autocommit=True)
        channel = self.store.events_table.replace(".", "_")
        connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        return connection
