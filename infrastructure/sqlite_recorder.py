"""The SQLite application recorder with the hash chain (docs/integrity.md).

The library's recorder, plus: the batch's chained SHA-256s go into ``stored_event_chain`` in
the same transaction as the events, one chain record per stream (its first version and its
events' hashes concatenated; SQLite serialises writers, so the previous hash read there is the
stream's head). A store whose chain is in the per-event ``stored_event_hashes`` of earlier
releases has it moved, verbatim, into chain records, and a store made before any chain gets
the chain of every stored event, once, when it is first opened (infrastructure/integrity.py,
docs/integrity.md).

Durability: a save may pass ``durable=False`` (execute_run does for every chunk of years but
the last, as on PostgreSQL, infrastructure/pg_recorder.py). That transaction then commits with
``PRAGMA synchronous = NORMAL``: in WAL mode the commit is written to the log but the log is not
fsynced. Nothing is lost that is not re-made: a process crash loses nothing (the frames are in
the operating system's hands), and the next commit at the usual FULL level (the run's last
chunk, RunCompleted, a projection's catch-up in the same file, any other writer) fsyncs the
whole log, so the earlier chunk with it. Only a power loss or an OS crash in between can lose
such chunks, whole (SQLite recovers the log up to its last complete commit) and only the run's
latest ones; a resumed run records the years missing, re-simulated from RunQueued (same events,
same digest). The connection goes back to its level before it returns to the pool.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import OperationalError, StoredEvent
from eventsourcing.sqlite import (
    SQLiteConnection,
    SQLiteCursor,
    SQLiteDatastore,
)

from infrastructure.integrity import (
    Chainer,
    RecentLinks,
    chain_batch,
    chain_records,
    chain_table_name,
    hash_in_record,
    hashes_table_name,
    previous_links,
    split_records,
)
from infrastructure.sqlite_events import ManySQLiteRecorder

BACKFILL = 5000
RECORD = 1000  # hashes per chain record when converting or backfilling a store
NORMAL = 1  # PRAGMA synchronous: 1 NORMAL, 2 FULL (the default, every commit fsyncs the WAL)


def _synchronous(connection: SQLiteConnection, level: int | None) -> int:
    """Set the connection's ``PRAGMA synchronous`` to ``level``, or read it (None)."""
    cursor = connection.cursor()
    try:
        if level is None:
            cursor.execute("PRAGMA synchronous")
            return int(cursor.fetchone()[0])
        cursor.execute(f"PRAGMA synchronous = {int(level)}")
        return level
    except sqlite3.Error as error:  # as the library wraps its own statements' errors
        raise OperationalError(error) from error
    finally:
        cursor.sqlite_cursor.close()


class HashingSQLiteRecorder(ManySQLiteRecorder):
    def __init__(self, datastore: SQLiteDatastore, events_table_name: str = "stored_events"):
        self.chain_table_name = chain_table_name(events_table_name)
        self.hashes_table_name = hashes_table_name(events_table_name)  # older stores only
        self.recent = RecentLinks()
        self.written = threading.local()  # this thread's batch hashes, remembered once committed
        super().__init__(datastore, events_table_name)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        durable = bool(kwargs.pop("durable", True))
        self.written.rows = []
        if durable:
            ids = super().insert_events(stored_events, **kwargs)
        else:
            ids = self._insert_events_unsynced(stored_events, **kwargs)
        self.recent.remember(self.written.rows)  # committed: safe to chain onto
        return ids

    def _insert_events_unsynced(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The library's insert_events on a writer connection set to ``synchronous =
        NORMAL`` for this one transaction (it cannot change inside one)."""
        with self.datastore.get_connection(commit=True) as connection:
            level = _synchronous(connection, None)
            _synchronous(connection, NORMAL)
            try:
                with connection.transaction(commit=True) as c:
                    return self._insert_events(c, stored_events, **kwargs)
            finally:
                try:
                    _synchronous(connection, level)
                except BaseException:
                    connection.close()  # never back in the pool at the lower level
                    raise

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            # a rowid table: a record's hashes (8 KB for 250 events) are too large for the
            # rows of a WITHOUT ROWID b-tree
            f"CREATE TABLE IF NOT EXISTS {self.chain_table_name} (originator_id TEXT NOT NULL,"
            " first_version INTEGER NOT NULL, hashes BLOB NOT NULL,"
            " PRIMARY KEY (originator_id, first_version))",
        ]

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        previous, missing = self.recent.split(previous_links(stored_events))
        for ident, version in missing:
            c.execute(
                f"SELECT first_version, hashes FROM {self.chain_table_name}"
                " WHERE originator_id = ? AND first_version <= ?"
                " ORDER BY first_version DESC LIMIT 1",
                (ident.hex, version),
            )
            row = c.fetchone()
            stored = None if row is None else hash_in_record(row[0], row[1], version)
            if stored is not None:
                previous[(ident, version)] = stored
        rows = chain_batch(stored_events, previous)
        self._insert_records(c.sqlite_cursor, chain_records(rows))
        self.written.rows = rows
        return ids

    def _insert_records(
        self, cursor: sqlite3.Cursor, records: list[tuple[Any, int, bytes]]
    ) -> None:
        cursor.executemany(
            f"INSERT INTO {self.chain_table_name} VALUES (?, ?, ?)",
            [(i.hex, v, h) for i, v, h in records],
        )

    def _create_table(self, c: SQLiteCursor) -> None:
        """The tables first (their CREATEs take the write lock as in the library); then, once,
        on a store whose chain is in the per-event table of earlier releases, that table's
        hashes moved verbatim into chain records and the table dropped (``_convert``), or on a
        store made before any chain, the chain of every stored event (``_backfill``). This runs
        only when the chain records' table was missing at open (infrastructure/application.py),
        so hashes deleted later are never recomputed here."""
        c.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
            (self.chain_table_name,),
        )
        had_chain = bool(c.fetchone()[0])
        c.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
            (self.hashes_table_name,),
        )
        had_hashes = bool(c.fetchone()[0])
        super()._create_table(c)
        if had_chain:
            return
        connection = c.sqlite_cursor.connection
        if had_hashes:
            self._convert(connection)
        else:
            self._backfill(connection)

    def _backfill(self, connection: sqlite3.Connection) -> None:
        chain = Chainer()
        reader = connection.execute(
            f"SELECT originator_id, originator_version, topic, state"
            f" FROM {self.events_table_name} ORDER BY originator_id, originator_version"
        )
        while batch := reader.fetchmany(BACKFILL):
            rows = [(UUID(i), v, chain(bytes.fromhex(i), v, t, bytes(s))) for i, v, t, s in batch]
            self._insert_records(connection.cursor(), split_records(rows, RECORD))

    def _convert(self, connection: sqlite3.Connection) -> None:
        """The per-event hashes, byte for byte, as chain records (never recomputed: a row
        deleted or changed before stays missing or wrong, and ``verify`` names it as before);
        then the old table is dropped, in the same transaction."""
        reader = connection.execute(
            f"SELECT originator_id, originator_version, hash FROM {self.hashes_table_name}"
            " ORDER BY originator_id, originator_version"
        )
        while batch := reader.fetchmany(BACKFILL):
            rows = [(UUID(i), v, bytes(h)) for i, v, h in batch]
            self._insert_records(connection.cursor(), split_records(rows, RECORD))
        connection.execute(f"DROP TABLE {self.hashes_table_name}")
