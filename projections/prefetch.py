"""A rebuild's next page of notifications, read on a connection of its own ahead of time.

While the rebuild decodes and folds one page, a thread reads the next one (psycopg waits for
the server without holding the GIL), so the server's reading overlaps the client's Python
instead of following it. Only committed notifications are read ahead: a page never goes past
the cap of the batch that asked for it, which is at most the head that batch read, and
notifications at or below a visible head never change (projections/catchup.py, "No gaps"). A
page is used only for exactly the request it was read for (same start, topics skipped and
limit; the same end, or a full page, which the first ``limit`` notifications of a later end
begin with); anything else, or a failed read, is read again on the batch's own cursor.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from infrastructure.settings import Database
from projections.store import Note, Store

Request = tuple[int, int, tuple[str, ...], int]  # start, end, topics skipped, limit


class Prefetch:
    def __init__(self, database: Database) -> None:
        self._store = Store(database)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="twinledger-prefetch")
        self._pending: tuple[Request, Future[list[Note]]] | None = None

    def take(self, start: int, upto: int, skip: Sequence[str], limit: int) -> list[Note] | None:
        """The page read ahead for this request, or None (then the caller reads it)."""
        if self._pending is None:
            return None
        (first, end, skipped, size), future = self._pending
        self._pending = None
        try:
            notes = future.result()
        except Exception:
            return None  # read again on the batch's cursor, which reports a real error
        if first != start or skipped != tuple(skip) or size != limit:
            return None
        if end == upto or (len(notes) == limit and end <= upto):
            return notes
        return None

    def ahead(self, start: int, upto: int, skip: Sequence[str], limit: int) -> None:
        """Start reading notifications in (start, upto] (committed: ``upto`` <= a read head)."""
        self._drop()
        request: Request = (start, upto, tuple(skip), limit)
        self._pending = (request, self._executor.submit(self._read, request))

    def _read(self, request: Request) -> list[Note]:
        start, upto, skip, limit = request
        with self._store.reading() as cursor:
            return self._store.notes(cursor, start, upto, skip, limit)

    def _drop(self) -> None:
        if self._pending is not None:
            _, future = self._pending
            self._pending = None
            future.cancel()

    def close(self) -> None:
        """Wait for the read under way (its connection is closed after it), then close."""
        self._drop()
        self._executor.shutdown(wait=True)
        self._store.close()
