"""Parked events: an event a projection cannot apply is set aside, and the projection goes on.

As Axon's dead-letter queue and KurrentDB's parked messages do, one bad event never holds up
the store. When applying an event fails (its topic names no class this code knows, its state
does not decode, the database refuses its row, a handler raises), the runner finds that one
event, writes a row to ``projection_parked`` naming it (projection, position, originator id
and version, topic, error class and message, when) and moves the projection's position past
it, in the SAME transaction as the batch's other rows and the position: a parked event is
either applied or parked, exactly once, whatever crashes when.

``projection_audit`` is append-only: every deliberate decision about a parked event (a skip,
with who, when and why; a successful retry) is a row there. It is a table, not an event in the
log, because the decision is about the read side (the tables), not about a twin or a run: the
log holds what happened to the ledger's aggregates, and replay and digests read it; an
operator's "leave this event out of the tables" must not become part of that history, nor
need an aggregate to belong to. The audit table is never dropped or rebuilt.

Order per row: events for the rows a parked event would have written wait behind it, parked
too (``held``, like Axon's sequenced dead letters), so retrying in log order gives the rows a
clean rebuild gives. A skipped event holds nothing back.

A skip is remembered across rebuilds: a rebuild that parks the same event again (same
projection, position, aggregate and version) keeps it marked skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from projections.store import Note, Store

TABLE = "projection_parked"
AUDIT = "projection_audit"
MESSAGE_LIMIT = 4000


@dataclass(frozen=True)
class Parked:
    projection: str
    position: int
    originator_id: str
    originator_version: int
    topic: str
    error_class: str
    error_message: str
    parked_at: datetime
    skipped_at: datetime | None = None
    skipped_by: str | None = None
    skip_reason: str | None = None
    keys: tuple[str, ...] = ()
    """The rows it would write (their ids: its aggregate's, and e.g. the twin a RunQueued
    counts on): events for these rows wait behind it (``held``)."""

    @property
    def skipped(self) -> bool:
        return self.skipped_at is not None

    @property
    def key(self) -> tuple[str, int]:
        return self.projection, self.position


def clean(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """Text any back end stores: NUL written as ``\\x00`` (PostgreSQL text refuses it), capped."""
    text = text.replace("\x00", "\\x00")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def aggregate(originator_id: object) -> str:
    """An aggregate id as parking rows hold it: the hyphenated UUID (SQLite stores 32 hex)."""
    try:
        return str(UUID(str(originator_id)))
    except ValueError:
        return clean(str(originator_id))


class Held(Exception):
    """An event parked because an earlier event for one of its rows is parked."""


def held(projection: str, note: Note, behind: int, keys: Sequence[str]) -> Parked:
    """The parking record of an event held behind the parked event at ``behind``."""
    reason = f"an earlier event for the same rows is parked (position {behind}); retry that first"
    return parked(projection, note, Held(reason), keys)


def carry_skip(skipped: Parked, row: Parked) -> Parked:
    """``row`` with ``skipped``'s skip decision, if both are the same event."""
    if not _same_event(skipped, row):
        return row
    return replace(
        row,
        skipped_at=skipped.skipped_at,
        skipped_by=skipped.skipped_by,
        skip_reason=skipped.skip_reason,
    )


def parked(projection: str, note: Note, error: BaseException, keys: Sequence[str] = ()) -> Parked:
    """The parking record of ``note``, which ``projection`` could not apply because of ``error``."""
    cause: BaseException = error
    reason = getattr(error, "reason", None)  # UnhandledEvent: say why, not the event again
    if reason is not None and error.__cause__ is not None:
        cause = error.__cause__
    message = str(reason) if reason is not None else str(error)
    return Parked(
        projection=projection,
        position=note.position,
        originator_id=aggregate(note.originator_id),
        originator_version=note.originator_version,
        topic=clean(note.topic),
        error_class=type(cause).__name__,
        error_message=clean(message),
        parked_at=datetime.now(UTC),
        keys=tuple(sorted(set(keys) | {aggregate(note.originator_id)})),
    )


def ensure_tables(store: Store, cursor: Any) -> None:
    timestamp = "timestamptz" if store.postgres else "TEXT"
    cursor.execute(
        store.sql(
            "CREATE TABLE IF NOT EXISTS {t} ("
            " projection_name text NOT NULL,"
            " position bigint NOT NULL,"
            " originator_id text NOT NULL,"
            " originator_version bigint NOT NULL,"
            " topic text NOT NULL,"
            " error_class text NOT NULL,"
            " error_message text NOT NULL,"
            f" parked_at {timestamp} NOT NULL,"
            f" skipped_at {timestamp},"
            " skipped_by text,"
            " skip_reason text,"
            " row_keys text NOT NULL,"
            " PRIMARY KEY (projection_name, position))",
            t=TABLE,
        )
    )
    identity = (
        "bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
        if store.postgres
        else "INTEGER PRIMARY KEY AUTOINCREMENT"
    )
    cursor.execute(
        store.sql(
            "CREATE TABLE IF NOT EXISTS {t} ("
            f" id {identity},"
            f" at {timestamp} NOT NULL,"
            " action text NOT NULL,"
            " projection_name text NOT NULL,"
            " position bigint NOT NULL,"
            " originator_id text NOT NULL,"
            " originator_version bigint NOT NULL,"
            " topic text NOT NULL,"
            " actor text NOT NULL,"
            " reason text NOT NULL)",
            t=AUDIT,
        )
    )


_COLUMNS = (
    "projection_name",
    "position",
    "originator_id",
    "originator_version",
    "topic",
    "error_class",
    "error_message",
    "parked_at",
    "skipped_at",
    "skipped_by",
    "skip_reason",
    "row_keys",
)
_NAMES = ", ".join(_COLUMNS)


def _values(store: Store, row: Parked) -> tuple[Any, ...]:
    return (
        row.projection,
        row.position,
        row.originator_id,
        row.originator_version,
        row.topic,
        row.error_class,
        row.error_message,
        store.timestamp(row.parked_at),
        store.timestamp(row.skipped_at),
        row.skipped_by,
        row.skip_reason,
        " ".join(row.keys),
    )


def _row(store: Store, values: Sequence[Any]) -> Parked:
    return Parked(
        projection=values[0],
        position=int(values[1]),
        originator_id=values[2],
        originator_version=int(values[3]),
        topic=values[4],
        error_class=values[5],
        error_message=values[6],
        parked_at=store.from_db("timestamp", values[7]),
        skipped_at=store.from_db("timestamp", values[8]),
        skipped_by=values[9],
        skip_reason=values[10],
        keys=tuple(str(values[11]).split()),
    )


def park(store: Store, cursor: Any, rows: Sequence[Parked]) -> None:
    """Record parked events in the caller's transaction (the one that moves the position).

    Parking an event that is already parked (a projection built again from 0) refreshes its
    error and keeps a skip decision."""
    if not rows:
        return
    marks = ", ".join(["%s"] * len(_COLUMNS))
    cursor.executemany(
        store.sql(
            f"INSERT INTO {{t}} ({_NAMES}) VALUES ({marks})"
            " ON CONFLICT (projection_name, position) DO UPDATE SET"
            " originator_id = excluded.originator_id,"
            " originator_version = excluded.originator_version, topic = excluded.topic,"
            " error_class = excluded.error_class, error_message = excluded.error_message,"
            " parked_at = excluded.parked_at, row_keys = excluded.row_keys",
            t=TABLE,
        ),
        [_values(store, row) for row in rows],
    )


def replace_all(store: Store, cursor: Any, names: Sequence[str], rows: Sequence[Parked]) -> None:
    """A rebuild's swap: the projections' parked events become those of the new generation.

    A skip decision on the same event (projection, position, aggregate, version) carries over.
    """
    old = {row.key: row for row in select(store, cursor, names=names) if row.skipped}
    kept = [row if row.key not in old else carry_skip(old[row.key], row) for row in rows]
    if store.postgres:  # one statement for every projection
        cursor.execute(
            store.sql("DELETE FROM {t} WHERE projection_name = ANY(%s)", t=TABLE), (list(names),)
        )
    else:
        for name in names:
            cursor.execute(
                store.sql("DELETE FROM {t} WHERE projection_name = %s", t=TABLE), (name,)
            )
    park(store, cursor, kept)


def _same_event(a: Parked, b: Parked) -> bool:
    return (a.originator_id, a.originator_version, a.topic) == (
        b.originator_id,
        b.originator_version,
        b.topic,
    )


def select(
    store: Store,
    cursor: Any,
    *,
    names: Sequence[str] | None = None,
    position: int | None = None,
    skipped: bool = True,
) -> list[Parked]:
    """Parked events in log order (then by projection name); without ``skipped``, skips left out."""
    where, args = [], []
    if position is not None:
        where.append("position = %s")
        args.append(position)
    if not skipped:
        where.append("skipped_at IS NULL")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    cursor.execute(
        store.sql(
            f"SELECT {_NAMES} FROM {{t}}{clause} ORDER BY position, projection_name", t=TABLE
        ),
        args,
    )
    rows = [_row(store, values) for values in cursor.fetchall()]
    if names is not None:
        rows = [row for row in rows if row.projection in names]
    return rows


def held_rows(store: Store, cursor: Any, name: str) -> dict[str, int]:
    """Rows with an event parked (not skipped) in projection ``name``: row id -> the first
    such event's position."""
    cursor.execute(
        store.sql(
            "SELECT row_keys, position FROM {t}"
            " WHERE projection_name = %s AND skipped_at IS NULL ORDER BY position",
            t=TABLE,
        ),
        (name,),
    )
    return hold_map((str(keys).split(), int(position)) for keys, position in cursor.fetchall())


def held_rows_all(store: Store, cursor: Any, names: Sequence[str]) -> dict[str, dict[str, int]]:
    """``held_rows`` of several projections in one statement: name -> row id -> position."""
    marks = ", ".join(["%s"] * len(names))
    cursor.execute(
        store.sql(
            "SELECT projection_name, row_keys, position FROM {t}"
            f" WHERE projection_name IN ({marks}) AND skipped_at IS NULL ORDER BY position",
            t=TABLE,
        ),
        list(names),
    )
    found: dict[str, list[tuple[list[str], int]]] = {name: [] for name in names}
    for name, keys, position in cursor.fetchall():
        found[str(name)].append((str(keys).split(), int(position)))
    return {name: hold_map(rows) for name, rows in found.items()}


def hold_map(rows: Iterable[tuple[Sequence[str], int]]) -> dict[str, int]:
    held: dict[str, int] = {}
    for keys, position in rows:
        for key in keys:
            held.setdefault(key, position)
    return held


def counts(store: Store, cursor: Any) -> dict[str, tuple[int, int]]:
    """Per projection: (parked and waiting, skipped deliberately)."""
    cursor.execute(
        store.sql(
            "SELECT projection_name, count(*) - count(skipped_at), count(skipped_at)"
            " FROM {t} GROUP BY projection_name",
            t=TABLE,
        )
    )
    return {str(name): (int(waiting), int(skipped)) for name, waiting, skipped in cursor.fetchall()}


def update_error(store: Store, cursor: Any, row: Parked) -> None:
    """A retry failed: the row stays, with the latest error."""
    cursor.execute(
        store.sql(
            "UPDATE {t} SET error_class = %s, error_message = %s"
            " WHERE projection_name = %s AND position = %s",
            t=TABLE,
        ),
        (row.error_class, row.error_message, row.projection, row.position),
    )


def remove(store: Store, cursor: Any, row: Parked) -> None:
    cursor.execute(
        store.sql("DELETE FROM {t} WHERE projection_name = %s AND position = %s", t=TABLE),
        (row.projection, row.position),
    )


def mark_skipped(store: Store, cursor: Any, row: Parked, actor: str, reason: str) -> Parked:
    """Mark a parked event as deliberately left out, and say so in the audit table."""
    actor, reason = clean(actor), clean(reason)
    skipped = replace(row, skipped_at=datetime.now(UTC), skipped_by=actor, skip_reason=reason)
    cursor.execute(
        store.sql(
            "UPDATE {t} SET skipped_at = %s, skipped_by = %s, skip_reason = %s"
            " WHERE projection_name = %s AND position = %s",
            t=TABLE,
        ),
        (store.timestamp(skipped.skipped_at), actor, reason, row.projection, row.position),
    )
    audit(store, cursor, "skipped", row, actor, reason)
    return skipped


def audit(store: Store, cursor: Any, action: str, row: Parked, actor: str, reason: str) -> None:
    cursor.execute(
        store.sql(
            "INSERT INTO {t} (at, action, projection_name, position, originator_id,"
            " originator_version, topic, actor, reason)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            t=AUDIT,
        ),
        (
            store.timestamp(datetime.now(UTC)),
            action,
            row.projection,
            row.position,
            row.originator_id,
            row.originator_version,
            row.topic,
            clean(actor),
            clean(reason),
        ),
    )


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    action: str
    projection: str
    position: int
    actor: str
    reason: str


def audit_trail(store: Store, cursor: Any) -> list[AuditEntry]:
    cursor.execute(
        store.sql(
            "SELECT at, action, projection_name, position, actor, reason FROM {t} ORDER BY id",
            t=AUDIT,
        )
    )
    return [
        AuditEntry(store.from_db("timestamp", v[0]), v[1], v[2], int(v[3]), v[4], v[5])
        for v in cursor.fetchall()
    ]


def describe(rows: Sequence[Parked]) -> str:
    """One line about events just parked (the first one named), for warnings and reports."""
    row = rows[0]
    more = f" and {len(rows) - 1} more" if len(rows) > 1 else ""
    return (
        f"projection {row.projection} parked event {row.position} ({row.topic}, "
        f"{row.originator_id} version {row.originator_version}): {row.error_class}: "
        f"{row.error_message}{more} (twinledger projections parked; docs/projections.md)"
    )
