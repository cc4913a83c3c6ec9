"""A rebuild's bulk inserts, written on a second connection by a thread while the first goes on.

In a PostgreSQL rebuild the main connection reads the log, decodes and folds; the rows of
append-only tables (``Batch.bulk_insert``: simulation_results) go to this writer, which COPYs
them on its own connection while the main one prepares the next batch. The server inserts one
batch while Python decodes the next: two cores at work instead of one at a time.

Only for staging tables, whose rows need not commit together with anything else: the staging
positions live in the rebuilding process, nobody reads staging tables, and the swap happens
after ``finish``. Each COPY is a transaction of its own (autocommit), committed without waiting
for the WAL flush (the swap's durable commit flushes it). A batch's rows are handed over only
once the batch that made them has committed on the main connection (``submit``; ``discard`` if
it rolled back), so a batch that is retried never writes twice. A
failed insert is not traced to its event here: ``finish`` raises ``BackgroundFailed`` and the
rebuild runs again without this writer, where the failing batch stops at the event that wrote it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from typing import Any

from domain.errors import Picklable
from infrastructure.settings import Database
from projections.store import Store

DEPTH = 2
"""Batches queued at most: the main connection runs at most this far ahead of the writer."""

Job = tuple[str, Sequence[str], list[Any], Sequence[str] | None]


class BackgroundFailed(Picklable, BaseException):
    """A background insert failed; ``cause`` is its error.

    A BaseException, like KeyboardInterrupt: it is not an event's error, so the handlers that
    look for the event at fault let it through, up to ``Projector.rebuild``, which loads again
    without the background writer."""

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause
        super().__init__(f"a background insert failed: {type(cause).__name__}: {cause}")


class BackgroundWriter:
    def __init__(self, database: Database) -> None:
        self._store = Store(database)
        # Each COPY is its own transaction (the connection is in autocommit), committed
        # without waiting for the WAL flush: one statement per batch instead of four.
        self._store.pg.execute("SET synchronous_commit = off")
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=DEPTH)
        self._pending: list[Job] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="twinledger-bulk", daemon=True)
        self._thread.start()

    def insert(
        self, table: str, columns: Sequence[str], rows: list[Any], kinds: Sequence[str] | None
    ) -> None:
        """Keep rows for ``table`` until the batch that made them commits (``submit``)."""
        self._pending.append((table, columns, rows, kinds))

    def check(self) -> None:
        """Raise BackgroundFailed if an insert failed (the fast load is then abandoned)."""
        if self._error is not None:
            raise BackgroundFailed(self._error)

    def submit(self) -> None:
        """The batch committed: queue its rows (waits while DEPTH batches are queued)."""
        pending, self._pending = self._pending, []
        self.check()
        for job in pending:
            self._jobs.put(job)

    def mark(self) -> int:
        """Where the batch's rows end now: ``forget_since`` drops what came after (a savepoint)."""
        return len(self._pending)

    def forget_since(self, mark: int) -> None:
        """The rows queued since ``mark`` were rolled back to a savepoint: forget them."""
        del self._pending[mark:]

    def discard(self) -> None:
        """The batch rolled back: forget its rows."""
        self._pending = []

    def _work(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                if self._error is not None:
                    continue  # drain; the rebuild learns of it at submit() or finish()
                try:
                    with self._store.pg.cursor() as cursor:
                        self._store.bulk_insert(cursor, *job)
                except BaseException as error:
                    self._error = error
        finally:
            self._store.close()

    def finish(self) -> None:
        """Wait until every submitted insert has committed; BackgroundFailed if one failed."""
        self._stop()
        if self._error is not None:
            raise BackgroundFailed(self._error)

    def abandon(self) -> None:
        """Stop after the insert under way (the rebuild failed or was interrupted)."""
        if self._error is None:
            self._error = RuntimeError("abandoned")
        self._stop()

    def _stop(self) -> None:
        self._pending = []
        while self._thread.is_alive():
            try:
                self._jobs.put(None, timeout=0.1)
            except queue.Full:
                continue
            self._thread.join()
