"""Fleet-wide named locks that die with their holder (docs/scale-out.md).

One run executed by one process at a time, one active projection follower, one scheduled
operation at a time: each is a named lock the store's home enforces, and none outlives the
process that holds it, so nothing waits on a dead worker.

- PostgreSQL: a session advisory lock held on a connection of its own. When the holder dies its
  connection closes and the server releases the lock at once; when its host vanishes without
  closing, TCP keepalives (both ways, a few seconds apart: the heartbeat) end the session.
- SQLite (one machine by definition): ``flock`` on a file beside the database; the kernel
  releases it when the holding process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import psycopg

from infrastructure.settings import Database

# The heartbeat: how fast a vanished holder is noticed (about idle + interval * count seconds).
KEEPALIVE_IDLE_SECONDS = 5
KEEPALIVE_INTERVAL_SECONDS = 2
KEEPALIVE_COUNT = 3


def lock_key(database: Database, name: str) -> int:
    """A signed 64-bit advisory-lock key for ``name`` in this store (schema included)."""
    digest = hashlib.sha256(f"twinledger:{database.schema}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def nobody_holds(database: Database, locks: list[StoreLock]) -> list[bool]:
    """For each lock, whether nobody holds it (taken and let go at once). On PostgreSQL one
    connection probes them all, in one statement: a server looking for orphans every few
    seconds would otherwise open a connection per running run."""
    if not locks:
        return []
    if not database.is_postgres:
        free = []
        for lock in locks:
            got = lock.try_acquire()
            if got:
                lock.release()
            free.append(got)
        return free
    keys = [lock_key(database, lock.name) for lock in locks]
    with psycopg.connect(database.psycopg_conninfo(), autocommit=True) as connection:
        # Each taken here is let go before the connection closes, so no taker finds it held
        # for the moment a closing backend keeps its locks (as StoreLock.release).
        rows = connection.execute(
            "SELECT k, pg_try_advisory_lock(k) FROM unnest(%s::bigint[]) WITH ORDINALITY"
            " AS u(k, n) ORDER BY n",
            (keys,),
        ).fetchall()
        taken = [key for key, free in rows if free]
        if taken:
            connection.execute(
                "SELECT pg_advisory_unlock(k) FROM unnest(%s::bigint[]) AS u(k)", (taken,)
            )
    return [bool(free) for _, free in rows]


class StoreLock:
    """A named lock across every process using the store; released when its holder dies."""

    def __init__(self, database: Database, name: str) -> None:
        self.database = database
        self.name = name
        self._connection: psycopg.Connection[Any] | None = None
        self._file: IO[bytes] | None = None

    # --- acquiring -------------------------------------------------------------------------------

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False (at once) if another holder has it."""
        if self.held:
            return True
        if self.database.is_postgres:
            return self._try_postgres()
        return self._try_file()

    def acquire(
        self,
        *,
        timeout: float | None = None,
        poll_seconds: float = 0.25,
        stop: threading.Event | None = None,
    ) -> bool:
        """Wait for the lock (polling); False if ``timeout`` passed or ``stop`` was set first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.try_acquire():
            if stop is not None and stop.is_set():
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if stop is not None:
                stop.wait(poll_seconds)
            else:
                time.sleep(poll_seconds)
        return True

    @property
    def held(self) -> bool:
        return self._connection is not None or self._file is not None

    def alive(self) -> bool:
        """Still held? (PostgreSQL: the lock's session still answers; lost session, lost lock.)"""
        if self._connection is not None:
            try:
                self._connection.execute("SELECT 1")
                return True
            except psycopg.Error:
                self.release()
                return False
        return self._file is not None

    def release(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            with contextlib.suppress(psycopg.Error):
                # Unlock first: closing alone returns before the server's backend has exited
                # and dropped the lock, so the next taker (another process, or this one at
                # once) could find it still held for a moment.
                connection.execute(
                    "SELECT pg_advisory_unlock(%s)", (lock_key(self.database, self.name),)
                )
            with contextlib.suppress(psycopg.Error):
                connection.close()  # ends the session: the server drops its advisory locks
        if self._file is not None:
            file, self._file = self._file, None
            fcntl.flock(file, fcntl.LOCK_UN)
            file.close()

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    # --- back ends -------------------------------------------------------------------------------

    def _try_postgres(self) -> bool:
        connection = psycopg.connect(
            self.database.psycopg_conninfo(),
            autocommit=True,
            keepalives=1,
            keepalives_idle=KEEPALIVE_IDLE_SECONDS,
            keepalives_interval=KEEPALIVE_INTERVAL_SECONDS,
            keepalives_count=KEEPALIVE_COUNT,
            application_name=f"twinledger lock {self.name}"[:63],
        )
        try:
            # The server's side of the heartbeat: it drops a session whose client vanished.
            connection.execute(f"SET tcp_keepalives_idle = {KEEPALIVE_IDLE_SECONDS}")
            connection.execute(f"SET tcp_keepalives_interval = {KEEPALIVE_INTERVAL_SECONDS}")
            connection.execute(f"SET tcp_keepalives_count = {KEEPALIVE_COUNT}")
            row = connection.execute(
                "SELECT pg_try_advisory_lock(%s)", (lock_key(self.database, self.name),)
            ).fetchone()
        except BaseException:
            connection.close()
            raise
        if row is None or not row[0]:
            connection.close()
            return False
        self._connection = connection
        return True

    def _try_file(self) -> bool:
        path = self._lock_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        file = open(path, "ab")  # noqa: SIM115 (held open while the lock is held)
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return False
        except BaseException:
            file.close()
            raise
        self._file = file
        return True

    def _lock_path(self) -> Path:
        store = self.database.sqlite_path
        if store.startswith("file:"):  # a private in-memory store: one process, locks in /tmp
            base = Path(os.environ.get("TMPDIR", "/tmp")) / "twinledger-locks" / store[5:37]
        else:
            base = Path(f"{store}.locks")
        name = hashlib.sha256(self.name.encode()).hexdigest()[:32]
        return base / f"{name}.lock"
