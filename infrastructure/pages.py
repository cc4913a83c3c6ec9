"""Keyset pagination over the read tables: a page of rows after a cursor, in a stable order.

A cursor is the sort key of the last row handed out (its timestamp and id), base64url-encoded
JSON, opaque to clients. The next page is ``WHERE (at, id) > (cursor)`` on an indexed order,
so a page costs the same at row 10 or row 1,000,000 and rows written meanwhile are neither
skipped nor repeated (OFFSET would do both).
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.errors import ValidationError
from projections.queries import plain
from projections.store import Store
from projections.tables import Table

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
MAX_CURSOR = 200


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValidationError("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    return limit


def encode_cursor(at: str, ident: str) -> str:
    raw = json.dumps([at, ident], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The (timestamp, id) a cursor holds; anything else is refused naming ``cursor``."""
    bad = ValidationError("cursor", "is not a cursor this server handed out")
    if len(cursor) > MAX_CURSOR or not cursor.isascii():
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, ident = json.loads(raw)
        moment = datetime.fromisoformat(at)
        key = UUID(ident)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise bad from None
    if moment.tzinfo is None:
        raise bad
    return moment, key


def page(
    store: Store,
    table: Table,
    at: str,
    where: list[tuple[str, Any]],
    *,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Rows of ``table`` matching ``where`` in (``at``, id) order after ``cursor``.

    ``where`` holds (SQL condition with %s, value) pairs naming columns of ``table`` only;
    values are always bound parameters. Returns the rows and the next cursor (None at the end).
    """
    check_limit(limit)
    conditions = [condition for condition, _ in where]
    params = [value for _, value in where]
    if cursor is not None:
        moment, key = decode_cursor(cursor)
        conditions.append(f'("{at}" > %s OR ("{at}" = %s AND id > %s))')
        params += [store.timestamp(moment), store.timestamp(moment), store.uuid(key)]
    kinds = table.kinds()
    cast = "::text" if store.postgres else ""  # JSON as its stored text, decoded by plain()
    names = ", ".join(
        f'"{c}"{cast}' if kinds[c] == "json" else f'"{c}"' for c in table.column_names
    )
    statement = f"SELECT {names} FROM {{t}}"
    if conditions:
        statement += " WHERE " + " AND ".join(conditions)
    statement += f' ORDER BY "{at}", id LIMIT %s'
    with store.reading() as cursor_:
        cursor_.execute(store.sql(statement, t=table.name), [*params, limit + 1])
        fetched = cursor_.fetchall()
    rows = [
        {
            name: plain(kinds[name], value)
            for name, value in zip(table.column_names, row, strict=True)
        }
        for row in fetched[:limit]
    ]
    more = len(fetched) > limit
    return rows, (encode_cursor(rows[-1][at], rows[-1]["id"]) if more and rows else None)
