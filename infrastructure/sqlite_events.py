"""The SQLite recorder's insert of event rows: one ``executemany`` per save.

eventsourcing's SQLiteApplicationRecorder inserts a save's events with one ``execute`` per
event to read each ``lastrowid`` (its notification id): about 6 us of the interpreter and the
sqlite3 module per event, more than the row's insert itself (docs/performance.md, issue 13,
branch ``hotpath``). Here the first event is inserted with ``execute`` (its ``lastrowid`` is
the first id), the rest with one ``executemany``, and ``last_insert_rowid()`` gives the last.

Why the ids in between are ``first + 1 .. last``: the rows are inserted in one transaction
that holds the database's write lock from the first insert on (no other writer can insert in
between), and SQLite gives a row inserted without a rowid "one larger than the largest ROWID
in the table" (https://sqlite.org/autoinc.html), unless that largest is the largest integer
SQLite can hold, when it picks them at random. Then ``last - first`` would (almost surely) not
be ``count - 1``, and the save fails with nothing written rather than return wrong positions.
The same rows, the same ids, the same errors (a duplicate version raises IntegrityError and
the transaction rolls back whole) as the library's loop (tests/test_append_rows.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor


class RowidsNotConsecutive(IntegrityError):
    """The rows of one save did not get consecutive rowids (the table's largest rowid is at
    SQLite's limit): nothing is written."""


class ManySQLiteRecorder(SQLiteApplicationRecorder):
    """SQLiteApplicationRecorder whose ``_insert_events`` makes two statements, not one per
    event."""

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **_: Any
    ) -> Sequence[int] | None:
        if not stored_events:
            return []
        rows = [
            (
                s.originator_id.hex if type(s.originator_id) is UUID else _hex(s.originator_id),
                s.originator_version,
                s.topic,
                s.state,
            )
            for s in stored_events
        ]
        cursor = c.sqlite_cursor
        statement = self.insert_events_statement
        cursor.execute(statement, rows[0])
        first: int = cursor.lastrowid  # type: ignore[assignment]
        if len(rows) == 1:
            return [first]
        cursor.executemany(statement, rows[1:])
        cursor.execute("SELECT last_insert_rowid()")
        last = int(cursor.fetchone()[0])
        if last - first != len(rows) - 1:
            raise RowidsNotConsecutive(
                f"rowids {first}..{last} for {len(rows)} events: not consecutive; nothing written"
            )
        return list(range(first, last + 1))


def _hex(originator_id: Any) -> Any:
    """As the library's loop: a UUID (of any class) as hex, anything else as it is."""
    return originator_id.hex if isinstance(originator_id, UUID) else originator_id
