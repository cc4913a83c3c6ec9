"""Where each projection is in the log: one row per projection in ``projection_tracking``.

The row is updated in the same transaction as the projection's tables, so rows and position
commit together or not at all. Writers of a projection first lock its row (``FOR UPDATE`` on
PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already holds the database's write lock), so two
processes catching the same projection up take turns: the second one reads the position the
first one committed and continues from there. ``advance`` refuses a position that does not move
forward from the one read (TrackingConflict): no event is applied twice whatever runs
concurrently.

Columns: projection_name, application_name, notification_id (the last position applied),
schema_version (projections/tables.py: a changed table definition means rebuild), updated_at,
and error / error_position when the projection stopped on an event it cannot handle.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from projections import parking
from projections.store import APPLICATION_NAME, Store

TABLE = "projection_tracking"


class TrackingConflict(Exception):
    """A projection's position did not advance from the one this transaction read."""


@dataclass(frozen=True)
class Position:
    name: str
    position: int
    schema_version: str
    updated_at: Any
    error: str | None
    error_position: int | None


def ensure_table(store: Store, cursor: Any) -> None:
    """The tracking table, and the parked events' tables beside it (projections/parking.py)."""
    timestamp = "timestamptz" if store.postgres else "TEXT"
    cursor.execute(
        store.sql(
            "CREATE TABLE IF NOT EXISTS {t} ("
            " projection_name text NOT NULL,"
            " application_name text NOT NULL,"
            " notification_id bigint NOT NULL,"
            " schema_version text NOT NULL,"
            f" updated_at {timestamp} NOT NULL,"
            " error text,"
            " error_position bigint,"
            " PRIMARY KEY (projection_name, application_name))",
            t=TABLE,
        )
    )
    parking.ensure_tables(store, cursor)


def _row(values: Any) -> Position:
    return Position(
        name=values[0],
        position=int(values[1]),
        schema_version=values[2],
        updated_at=values[3],
        error=values[4],
        error_position=values[5],
    )


_COLUMNS = "projection_name, notification_id, schema_version, updated_at, error, error_position"


def read(store: Store, cursor: Any, name: str, *, lock: bool = False) -> Position | None:
    """The projection's row; with ``lock``, held until the transaction ends (PostgreSQL)."""
    suffix = " FOR UPDATE" if lock and store.postgres else ""
    cursor.execute(
        store.sql(
            f"SELECT {_COLUMNS} FROM {{t}} WHERE projection_name = %s AND application_name = %s"
            + suffix,
            t=TABLE,
        ),
        (name, APPLICATION_NAME),
    )
    values = cursor.fetchone()
    return None if values is None else _row(values)


def read_all(store: Store, cursor: Any) -> dict[str, Position]:
    cursor.execute(
        store.sql(f"SELECT {_COLUMNS} FROM {{t}} WHERE application_name = %s", t=TABLE),
        (APPLICATION_NAME,),
    )
    return {row.name: row for row in map(_row, cursor.fetchall())}


def _in(store: Store, names: Sequence[str]) -> tuple[str, list[Any]]:
    """``projection_name`` among ``names``: the condition and its arguments."""
    if store.postgres:
        return "projection_name = ANY(%s)", [list(names)]
    return f"projection_name IN ({', '.join('?' * len(names))})", list(names)


def lock_all(store: Store, cursor: Any, names: Sequence[str]) -> tuple[dict[str, Position], int]:
    """Lock the rows of ``names`` in that order (dependency order, as one-by-one ``read(lock=
    True)`` and a rebuild's swap take them: no deadlock between them) in one statement, and
    read the head of the log in the same statement: (rows by name, head).

    PostgreSQL locks the rows as the sort emits them (LockRows above Sort), so in ``names``'
    order. SQLite's BEGIN IMMEDIATE already holds the database's write lock."""
    where, args = _in(store, names)
    if store.postgres:
        head = "(SELECT max(notification_id) FROM {e})"
        order = " ORDER BY array_position(%s::text[], projection_name) FOR UPDATE OF t"
        args = [*args, list(names)]
    else:
        head = "(SELECT max(rowid) FROM {e})"
        order = ""
    cursor.execute(
        store.sql(
            f"SELECT {_COLUMNS}, {head} FROM {{t}} AS t WHERE application_name = %s AND {where}"
            + order,
            t=TABLE,
            e=store.events_table,
        ),
        [APPLICATION_NAME, *args],
    )
    rows = cursor.fetchall()
    if not rows:
        return {}, 0
    return {row[0]: _row(row) for row in rows}, int(rows[0][-1] or 0)


def behind(store: Store, names: Sequence[str]) -> tuple[dict[str, int], int]:
    """Positions of ``names`` and the head of the log, in one statement outside any
    transaction (no lock, no commit): how an idle catch-up finds it has nothing to do."""
    where, args = _in(store, names)
    head = (
        "(SELECT max(notification_id) FROM {e})"
        if store.postgres
        else "(SELECT max(rowid) FROM {e})"
    )
    rows = store.read_once(
        store.sql(
            f"SELECT projection_name, notification_id, {head} FROM {{t}}"
            f" WHERE application_name = %s AND {where}",
            t=TABLE,
            e=store.events_table,
        ),
        [APPLICATION_NAME, *args],
    )
    head_value = int(rows[0][2] or 0) if rows else 0
    return {str(row[0]): int(row[1]) for row in rows}, head_value


def position(store: Store, cursor: Any, name: str) -> int:
    row = read(store, cursor, name)
    return 0 if row is None else row.position


def _now(store: Store) -> Any:
    return store.timestamp(datetime.now(UTC))


@contextmanager
def advancing_together(store: Store, cursor: Any) -> Iterator[None]:
    """``advance`` calls made inside move their positions when the block ends without an
    error, all in one statement on PostgreSQL (one round trip for a shared batch's
    projections instead of one each), each refused as ``advance`` alone refuses it
    (TrackingConflict, naming the projection). Used where nothing reads the positions in
    between: they are written, as ever, before the transaction commits."""
    moves: list[tuple[str, int, int]] = []
    store.pending_moves = moves  # the store's own: one connection, one transaction at a time
    try:
        yield
    finally:
        store.pending_moves = None
    _move(store, cursor, moves)


def advance(store: Store, cursor: Any, name: str, old: int, new: int) -> None:
    """Move the position from ``old`` to ``new`` (> old), or raise TrackingConflict (inside
    ``advancing_together``: when its block ends)."""
    if new <= old:
        raise TrackingConflict(f"projection {name}: position {new} does not advance from {old}")
    moves = store.pending_moves
    if moves is not None:
        moves.append((name, old, new))
        return
    _move(store, cursor, [(name, old, new)])


def _move(store: Store, cursor: Any, moves: list[tuple[str, int, int]]) -> None:
    """Each (name, old, new): the position from old to new, or TrackingConflict."""
    names = [name for name, _, _ in moves]
    if store.postgres and 1 < len(moves) == len(set(names)):
        cursor.execute(
            store.sql(
                "UPDATE {t} AS t SET notification_id = m.new, updated_at = %s, error = NULL,"
                " error_position = NULL FROM unnest(%s::text[], %s::bigint[], %s::bigint[])"
                " AS m(name, old, new) WHERE t.projection_name = m.name"
                " AND t.application_name = %s AND t.notification_id = m.old"
                " RETURNING t.projection_name",
                t=TABLE,
            ),
            (
                _now(store),
                names,
                [old for _, old, _ in moves],
                [new for _, _, new in moves],
                APPLICATION_NAME,
            ),
        )
        moved = {row[0] for row in cursor.fetchall()}
    else:
        moved = set()
        for name, old, new in moves:
            cursor.execute(
                store.sql(
                    "UPDATE {t} SET notification_id = %s, updated_at = %s, error = NULL,"
                    " error_position = NULL WHERE projection_name = %s"
                    " AND application_name = %s AND notification_id = %s",
                    t=TABLE,
                ),
                (new, _now(store), name, APPLICATION_NAME, old),
            )
            if cursor.rowcount != 1:
                break
            moved.add(name)
    for name, old, _ in moves:
        if name not in moved:
            raise TrackingConflict(
                f"projection {name}: position moved away from {old} under this transaction"
            )


_PUT = (
    "INSERT INTO {t} (projection_name, application_name, notification_id, schema_version,"
    " updated_at) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (projection_name, application_name)"
    " DO UPDATE SET notification_id = excluded.notification_id,"
    " schema_version = excluded.schema_version, updated_at = excluded.updated_at,"
    " error = NULL, error_position = NULL"
)
"""A row set outright, in place when it exists: a catch-up of another process waiting on its
lock (PostgreSQL, ``FOR UPDATE``) then reads the new row once this transaction commits. A row
deleted and inserted again (as ``put`` did) is, to a statement waiting on the old one, gone:
that catch-up found "no tracking row" and failed (tests/test_rebuild.py)."""


def put(store: Store, cursor: Any, name: str, position: int, schema_version: str) -> None:
    """Set a projection's row outright: used when its tables are (re)created or swapped in."""
    put_all(store, cursor, [(name, position, schema_version)])


def put_all(store: Store, cursor: Any, rows: Sequence[tuple[str, int, str]]) -> None:
    """``put`` for several projections, (name, position, schema_version) each: a rebuild's
    swap, in one executemany whatever their number."""
    if not rows:
        return
    now = _now(store)
    cursor.executemany(
        store.sql(_PUT, t=TABLE),
        [(name, APPLICATION_NAME, position, version, now) for name, position, version in rows],
    )


def record_error(store: Store, name: str, at: int, message: str) -> None:
    """Remember why a projection stopped (its own transaction: the batch was rolled back)."""
    with store.transaction() as cursor:
        cursor.execute(
            store.sql(
                "UPDATE {t} SET error = %s, error_position = %s, updated_at = %s"
                " WHERE projection_name = %s AND application_name = %s",
                t=TABLE,
            ),
            (message, at, _now(store), name, APPLICATION_NAME),
        )
