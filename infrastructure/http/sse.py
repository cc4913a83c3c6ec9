"""Following the log for the server: the read tables kept current, and live progress fanned out.

One ``LogFollower`` thread per server. It waits for the log to move (PostgreSQL: LISTEN on the
channel eventsourcing NOTIFYs on each write, on one dedicated connection; SQLite, which has no
notifications: polling the head of the log), catches the projections up (so the read tables
follow writes made by any process: the server's workers, the CLI), then wakes every waiting
Server-Sent Events client. A client re-reads its run's row and sends what changed. So N
clients cost one listener connection and one catch-up per change, not N.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from infrastructure.settings import Database
from projections.runner import (
    TRANSIENT,
    ProjectionsStopped,
    ProjectionStopped,
    Projector,
    RebuildBusy,
)
from projections.store import POSTGRES_EVENTS_TABLE

log = logging.getLogger("twinledger.http")

HEARTBEAT_SECONDS = 15.0
MAX_CLIENTS = 200


class LogFollower:
    """Catches the read tables up whenever the log moves, and tells the waiting clients."""

    def __init__(self, database: Database, *, poll_seconds: float = 0.25) -> None:
        self.database = database
        self.poll_seconds = poll_seconds
        self.version = 0  # bumped after each catch-up that saw a new head
        self.clients = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="twinledger-follower", daemon=True)
        self.last_error = ""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    # --- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        projector = Projector(self.database)
        listener: psycopg.Connection[Any] | None = None
        head = -1
        try:
            while not self._stop.is_set():
                if self.database.is_postgres and (listener is None or listener.closed):
                    listener = self._listen()
                try:
                    projector.catch_up()
                    self.last_error = ""
                except (ProjectionsStopped, ProjectionStopped, RebuildBusy) as stopped:
                    self._report(str(stopped))
                except TRANSIENT as error:
                    self._report(f"database error, retrying: {error}")
                    projector.store.reconnect()
                try:
                    with projector.store.reading() as cursor:
                        now = projector.store.head(cursor)
                except TRANSIENT:
                    now = head
                if now != head:
                    head = now
                    self._wake()
                self._wait(listener)
        except Exception:  # never die silently: the tables would stop following
            log.exception("the log follower stopped")
            raise
        finally:
            if listener is not None:
                listener.close()
            projector.close()

    def _report(self, message: str) -> None:
        if message != self.last_error:
            log.warning("read tables are behind: %s", message)
        self.last_error = message

    def _listen(self) -> psycopg.Connection[Any] | None:
        try:
            connection = psycopg.connect(self.database.psycopg_conninfo(), autocommit=True)
            channel = POSTGRES_EVENTS_TABLE.replace(".", "_")  # eventsourcing's channel name
            connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            return connection
        except psycopg.OperationalError as error:
            self._report(f"cannot LISTEN, polling instead: {error}")
            return None

    def _wait(self, listener: psycopg.Connection[Any] | None) -> None:
        if listener is None or listener.closed:
            self._stop.wait(self.poll_seconds)
            return
        try:  # a notification, or the poll interval as a fallback (and to see ``stop``)
            for _ in listener.notifies(timeout=max(self.poll_seconds, 1.0), stop_after=1):
                pass
        except psycopg.OperationalError:
            listener.close()
            self._stop.wait(self.poll_seconds)

    def _wake(self) -> None:
        with self._lock:
            self.version += 1
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that client's loop has closed
                loop.call_soon_threadsafe(event.set)

    # --- the clients ----------------------------------------------------------------------------

    def subscribe(self) -> Subscription:
        """Start listening for changes now (before reading what to compare them with)."""
        return Subscription(self)


class Subscription:
    """One client's wake-ups: set by the follower thread, awaited in the client's event loop."""

    def __init__(self, follower: LogFollower) -> None:
        self.follower = follower
        self.event = asyncio.Event()
        self.entry = (asyncio.get_running_loop(), self.event)
        with follower._lock:
            follower._waiters.add(self.entry)

    async def wait(self, timeout: float) -> bool:
        """True after a change of the log since the last wait, False after ``timeout``."""
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except TimeoutError:
            return False
        self.event.clear()  # before the caller reads: a change during its read wakes it again
        return True

    def close(self) -> None:
        with self.follower._lock:
            self.follower._waiters.discard(self.entry)


def message(event: str, data: Any) -> bytes:
    """One Server-Sent Events message; ``data`` as one line of JSON."""
    return b"event: " + event.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"


async def progress_stream(
    follower: LogFollower,
    read: Callable[[], Awaitable[dict[str, Any]]],
) -> AsyncIterator[bytes]:
    """A run's progress as Server-Sent Events: ``progress`` whenever its row changes, ``end``
    once it has ended (then the stream closes), a comment line as a heartbeat when idle."""
    follower.clients += 1
    subscription = follower.subscribe()  # before the first read: no change can slip between
    try:
        yield b"retry: 2000\n\n"
        last: tuple[Any, ...] | None = None
        while True:
            row = await read()
            key = (row["status"], row["years_recorded"])
            if key != last:
                last = key
                yield message("progress", row)
            if row["ended"]:
                yield message("end", row)
                return
            if not await subscription.wait(HEARTBEAT_SECONDS):
                yield b": heartbeat\n\n"
    finally:
        subscription.close()
        follower.clients -= 1
