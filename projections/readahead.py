"""A rebuild's next page of the log, read on a connection of its own while this page is decoded.

In a PostgreSQL rebuild the main thread reads a page of notifications, then decodes and folds
it, and the server sits idle while Python works, and Python while the server reads. The reader
asks, in a thread of its own (psycopg releases the GIL while it waits on the network), for the
page the main thread will ask for next, so that page is there when asked for.

The same rows the main thread would read, in the same order: the same query (``Store.notes``,
ordered by position) for the same window, (after, upto] with ``upto`` at or below a head read
before, the same topics left out and the same limit. A page is handed over only for exactly the
request it was read for; any other request is read on the main thread's cursor, as without the
reader. Ids at or below a head already read are committed or never will be (projections/
catchup.py, "No gaps"), so such a window holds the same rows whichever connection reads it and
whenever: the query runs as a statement of its own (autocommit), with its own snapshot, as each
statement of a batch's READ COMMITTED transaction has.

Bounded: one page ahead at most (a request waits for the one before it). A failed read is not an
event's error: the page is then read on the main thread, where an error surfaces as it would
have without the reader, and the reader asks for nothing more. Decoding, which names an event at
fault, stays on the main thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from infrastructure.settings import Database
from projections.store import Note, Store

Request = tuple[int, int, tuple[str, ...], int]
"""(after, upto, topics left out, limit): ``Store.notes``'s window and filter."""


class ReadAhead:
    def __init__(self, database: Database) -> None:
        self._store: Store | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="twinledger-read")
        self._pool.submit(self._connect, database)  # on the thread, while the rebuild goes on
        self._asked: Request | None = None
        self._page: Future[Any] | None = None  # a cursor holding the page's rows
        self._failed = False

    def ask(self, after: int, upto: int, skip: Sequence[str], limit: int) -> None:
        """Start reading (after, upto] for the next ``take`` (the page before it is dropped)."""
        if self._failed:
            return
        self._drop()
        self._asked = (after, upto, tuple(skip), limit)
        self._page = self._pool.submit(self._read, self._asked)

    def take(self, after: int, upto: int, skip: Sequence[str], limit: int) -> list[Note] | None:
        """The page read ahead for exactly this request, or None (the caller reads it)."""
        page, asked = self._page, self._asked
        if page is None or asked != (after, upto, tuple(skip), limit):
            self._drop()
            return None
        self._page = self._asked = None
        try:
            with page.result() as cursor:
                return Store.fetched_notes(cursor)
        except Exception:
            self._failed = True  # read on the main thread from now on, which reports errors
            return None

    def close(self) -> None:
        """Wait for the read under way (one page at most), then close the connection."""
        self._drop()
        self._pool.shutdown(wait=True)
        if self._store is not None:
            self._store.close()

    def _drop(self) -> None:
        page, self._page, self._asked = self._page, None, None
        if page is not None and page.exception() is None:  # waits: one read in flight at most
            page.result().close()

    def _connect(self, database: Database) -> None:
        store = Store(database)
        try:
            store.keep_index_order()
        except BaseException:
            store.close()
            raise
        self._store = store

    def _read(self, request: Request) -> Any:
        """The page's query, on this thread; its rows stay in the cursor until taken (turning
        them into Notes needs the GIL: the taker does it, not this thread mid-way)."""
        after, upto, skip, limit = request
        store = self._store
        if store is None:
            raise RuntimeError("the read-ahead's connection did not open")
        cursor = store.pg.cursor()
        try:
            store.send_notes(cursor, after, upto, skip, limit)
        except BaseException:
            cursor.close()
            raise
        return cursor
