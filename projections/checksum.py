"""Canonical rows and table checksums: the same events give the same checksum on both back ends.

A row is normalised column by column from its kind (projections/tables.py):
- uuid: the lower-case hyphenated string;
- timestamp: ISO 8601 in UTC with microseconds;
- json: the decoded value with every number as a float (PostgreSQL's jsonb prints the float
  6.4171e23 as the integer 641710000000000000000000, SQLite keeps the text as written), then
  encoded with sorted keys;
- int, bigint, float, text: themselves.

The checksum is SHA-256 over the canonical rows, one JSON line each, in primary-key order
(compared the same way on both back ends: ``_order``), so it does not depend on physical row
order. Rows are streamed (a server-side cursor on PostgreSQL): memory stays bounded whatever
the table's size. A rebuild must give the same checksum as the tables it
replaces; SQLite and PostgreSQL tables folded from the same events give the same checksum.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec

from projections.store import Store
from projections.tables import Table

_encode = msgspec.json.Encoder(order="sorted").encode
FETCH_ROWS = 2000
"""Rows a PostgreSQL checksum fetches at a time."""


def _number(value: Any) -> Any:
    return value if isinstance(value, bool) else float(value)


def canonical_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): canonical_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [canonical_json(item) for item in value]
    if isinstance(value, int | float):
        return _number(value)
    return value


def normalise(kind: str, value: Any) -> Any:
    """A stored value (from either back end) in its canonical, comparable form."""
    if value is None:
        return None
    if kind == "uuid":
        return str(value if isinstance(value, UUID) else UUID(str(value)))
    if kind == "timestamp":
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
        return moment.astimezone(UTC).isoformat(timespec="microseconds")
    if kind == "json":
        decoded = msgspec.json.decode(value) if isinstance(value, str | bytes) else value
        return canonical_json(decoded)
    if kind == "float":
        return float(value)
    if kind in ("int", "bigint"):
        return int(value)
    return value


def canonical_line(kinds: Sequence[str], row: Sequence[Any]) -> bytes:
    """One row as a canonical JSON line (no newline)."""
    return _encode([normalise(kind, value) for kind, value in zip(kinds, row, strict=True)])


def _order(store: Store, table: Table) -> str:
    """The primary key, compared the same way on both back ends.

    uuid: PostgreSQL compares the 16 bytes, SQLite the lower-case hyphenated text; both give
    the order of the text. int: numbers. text: bytes of UTF-8 (SQLite's BINARY; PostgreSQL's
    "C" collation, whatever the column's or the database's collation says).
    """
    kinds = table.kinds()
    keys = []
    for name in table.primary_key:
        text = kinds[name] == "text" and store.postgres
        keys.append(f'"{name}"' + (' COLLATE "C"' if text else ""))
    return ", ".join(keys)


def canonical_rows(store: Store, cursor: Any, table: Table, physical: str = "") -> Iterator[bytes]:
    """Every row of the table as one canonical JSON line, in primary-key order, streamed.

    PostgreSQL: a server-side cursor in the caller's transaction, read ``FETCH_ROWS`` at a
    time; SQLite: its cursor steps through the rows. Memory stays bounded however big the
    table (docs/performance.md, "Checksums").
    """
    names = ", ".join(f'"{c.name}"' for c in table.columns)
    query = store.sql(
        f"SELECT {names} FROM {{t}} ORDER BY {_order(store, table)}", t=physical or table.name
    )
    kinds = [c.kind for c in table.columns]
    if store.postgres:
        with cursor.connection.cursor(name="twinledger_checksum") as rows:
            rows.itersize = FETCH_ROWS
            rows.execute(query)
            for row in rows:
                yield canonical_line(kinds, row)
        return
    for row in cursor.execute(query):
        yield canonical_line(kinds, row)


def table_checksum(store: Store, cursor: Any, table: Table) -> tuple[int, str]:
    """(row count, sha256 of the canonical rows in key order, one line each)."""
    digest = hashlib.sha256()
    count = 0
    for line in canonical_rows(store, cursor, table):
        digest.update(line)
        digest.update(b"\n")
        count += 1
    return count, digest.hexdigest()
