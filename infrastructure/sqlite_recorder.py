"""The SQLite application recorder with the hash chain (docs/integrity.md).

The library's recorder, plus: each event's chained SHA-256 goes into ``stored_event_hashes``
in the same transaction as the event (SQLite serialises writers, so the previous hash read
there is the stream's head), and a store made before that table gets it, with the chain of
every stored event, once, when it is first opened (infrastructure/integrity.py).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteDatastore

from infrastructure.integrity import (
    Chainer,
    RecentLinks,
    chain_batch,
    hashes_table_name,
    previous_links,
)

BACKFILL = 5000


class HashingSQLiteRecorder(SQLiteApplicationRecorder):
    def __init__(self, datastore: SQLiteDatastore, events_table_name: str = "stored_events"):
        self.hashes_table_name = hashes_table_name(events_table_name)
        self.recent = RecentLinks()
        self.written = threading.local()  # this thread's batch hashes, remembered once committed
        super().__init__(datastore, events_table_name)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        self.written.rows = []
        ids = super().insert_events(stored_events, **kwargs)
        self.recent.remember(self.written.rows)  # committed: safe to chain onto
        return ids

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            f"CREATE TABLE IF NOT EXISTS {self.hashes_table_name} (originator_id TEXT,"
            " originator_version INTEGER, hash BLOB NOT NULL,"
            " PRIMARY KEY (originator_id, originator_version)) WITHOUT ROWID",
        ]

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        previous, missing = self.recent.split(previous_links(stored_events))
        for ident, version in missing:
            c.execute(
                f"SELECT hash FROM {self.hashes_table_name}"
                " WHERE originator_id = ? AND originator_version = ?",
                (ident.hex, version),
            )
            row = c.fetchone()
            if row is not None:
                previous[(ident, version)] = bytes(row[0])
        rows = chain_batch(stored_events, previous)
        c.executemany(
            f"INSERT INTO {self.hashes_table_name} VALUES (?, ?, ?)",
            [(i.hex, v, h) for i, v, h in rows],
        )
        self.written.rows = rows
        return ids

    def _create_table(self, c: SQLiteCursor) -> None:
        """The tables first (their CREATEs take the write lock as in the library), then the
        chain of a store made before the hashes table: events but no hashes. This runs only
        when the hashes table was missing at open (infrastructure/application.py), so hashes
        deleted later are never recomputed here."""
        super()._create_table(c)
        c.execute(
            f"SELECT NOT EXISTS (SELECT 1 FROM {self.hashes_table_name})"
            f" AND EXISTS (SELECT 1 FROM {self.events_table_name})"
        )
        if c.fetchone()[0]:
            self._backfill(c.sqlite_cursor.connection)

    def _backfill(self, connection: sqlite3.Connection) -> None:
        chain = Chainer()
        reader = connection.execute(
            f"SELECT originator_id, originator_version, topic, state"
            f" FROM {self.events_table_name} ORDER BY originator_id, originator_version"
        )
        while batch := reader.fetchmany(BACKFILL):
            connection.executemany(
                f"INSERT INTO {self.hashes_table_name} VALUES (?, ?, ?)",
                [(i, v, chain(bytes.fromhex(i), v, t, bytes(s))) for i, v, t, s in batch],
            )
