"""Canonical rows and table checksums: the same events give the same checksum on both back ends.

A row is normalised column by column from its kind (projections/tables.py):
- uuid: the lower-case hyphenated string;
- timestamp: ISO 8601 in UTC with microseconds;
- json: the decoded value with every number as a float (PostgreSQL's jsonb prints the float
  6.4171e23 as the integer 641710000000000000000000, SQLite keeps the text as written), then
  encoded with sorted keys;
- int, bigint, float, text: themselves.

The checksum is SHA-256 over the canonical rows, one JSON line each, in sorted order, so it
does not depend on physical row order. A rebuild must give the same checksum as the tables it
replaces; SQLite and PostgreSQL tables folded from the same events give the same checksum.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec

from projections.store import Store
from projections.tables import Table

_encode = msgspec.json.Encoder(order="sorted").encode


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


def canonical_rows(store: Store, cursor: Any, table: Table, physical: str = "") -> list[bytes]:
    """Every row of the table as one canonical JSON line, sorted."""
    names = ", ".join(f'"{c.name}"' for c in table.columns)
    cursor.execute(store.sql(f"SELECT {names} FROM {{t}}", t=physical or table.name))
    kinds = [c.kind for c in table.columns]
    lines = [
        _encode([normalise(kind, value) for kind, value in zip(kinds, row, strict=True)])
        for row in cursor.fetchall()
    ]
    lines.sort()
    return lines


def table_checksum(store: Store, cursor: Any, table: Table) -> tuple[int, str]:
    """(row count, sha256 of the canonical rows)."""
    digest = hashlib.sha256()
    lines = canonical_rows(store, cursor, table)
    for line in lines:
        digest.update(line)
        digest.update(b"\n")
    return len(lines), digest.hexdigest()
