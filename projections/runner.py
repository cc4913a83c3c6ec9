"""Running the projections: catch up, follow the log, rebuild, report.

Exactly once. A batch is one transaction that (1) locks the projection's tracking row and reads
its position, (2) reads the next notifications after it, (3) writes the rows, (4) advances the
position to the last notification read. Rows and position commit together; a crash anywhere
rolls both back, and the next run starts again from the committed position. Two processes
catching up the same projection take turns on the tracking row's lock, and ``advance`` refuses
a position that does not move forward, so nothing is applied twice.

No gaps. A projection may move its position past notifications it has not seen only if they
can never appear later with a lower id. eventsourcing's PostgreSQL recorder takes
``LOCK TABLE <events> IN EXCLUSIVE MODE`` for every insert (ids are allocated and committed under
that lock, so in id order) and SQLite has one writer at a time: when id N is visible, every
id below N is committed or never will be. A batch reads ``head`` (the highest committed id) and
never goes past it.

Order between projections. runs has a foreign key to twins, results to runs: a projection
never goes past the position of a projection it depends on (``cap``), and catching up goes in
dependency order, so a row's parent is always there.

Parking. A batch that fails is rolled back and applied again under savepoints, one event per
savepoint if need be; each event that fails on its own is parked (projections/parking.py) in
the same transaction as the rows and the position that moves past it, so one bad event never
stops a projection, nor those that depend on it. Later events for the rows it would have
written wait behind it, parked too, until it is retried or skipped.

Rebuild (blue/green). New tables are built under staging names from position 0 in committed
batches, without touching the live ones (which keep being caught up meanwhile). Then one
transaction locks the projections' tracking rows, catches the staging tables up to the head,
drops the live tables, renames the staging ones (and their constraints and indexes) in, and
writes the new positions. Readers see the old tables or the new ones, never an empty or
half-built one; interrupting a rebuild at any moment leaves the live tables as they were, and
the next rebuild drops the leftover staging tables first. Rebuilding a projection rebuilds the
projections that depend on it too, because their foreign keys point at its tables.
"""

from __future__ import annotations

import fcntl
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from infrastructure.settings import Database, resolve_database
from projections import parking, tracking
from projections.background import BackgroundFailed, BackgroundWriter
from projections.base import Batch, Projection
from projections.checksum import table_checksum
from projections.decoding import Decoded, UnhandledEvent, is_event_topic, known_events
from projections.experiments import ExperimentsProjection
from projections.parking import Parked
from projections.results import ResultsProjection
from projections.runs import RunsProjection
from projections.store import Note, Store
from projections.tables import (
    Table,
    add_foreign_key_sql,
    create_index_sql,
    create_table_sql,
    index_names,
)
from projections.twins import TwinsProjection

PROJECTIONS: tuple[type[Projection], ...] = (
    TwinsProjection,
    RunsProjection,
    ResultsProjection,
    ExperimentsProjection,
)
"""Every projection, in dependency order (a projection comes after those it depends on)."""

DEFAULT_BATCH = 2000
WINDOW = 8
"""A batch reads notifications in (position, position + WINDOW * batch size] at most: a bounded
index range per batch, however sparse the projection's topics and whatever the planner thinks."""
STAGING = "__rebuild"
TRANSIENT = (sqlite3.OperationalError, psycopg.OperationalError)
"""Errors of the connection or of locking, not of an event: retried, never a projection stop."""

RECOVERY = "see docs/projections.md, 'Parked events'"


class ProjectionStopped(Exception):
    """A projection met an event it cannot handle; its tables and position stay before it.

    No longer raised by catching up or rebuilding: such an event is parked instead
    (projections/parking.py). Kept for callers that still catch it."""

    def __init__(self, name: str, cause: UnhandledEvent, *, rebuilding: bool = False) -> None:
        self.name = name
        self.position = cause.position
        self.topic = cause.topic
        where = (
            "the live tables are unchanged"
            if rebuilding
            else f"its tables stay at position {cause.position - 1} or earlier"
        )
        what = "rebuild of projection" if rebuilding else "projection"
        super().__init__(f"{what} {name} stopped at {cause}; {where} ({RECOVERY})")


class ProjectionsStopped(Exception):
    """One or more projections stopped; the others were caught up (see ProjectionStopped)."""

    def __init__(self, stops: list[ProjectionStopped]) -> None:
        self.stops = stops
        super().__init__("; ".join(str(stop) for stop in stops))


class RebuildBusy(Exception):
    """Another rebuild of these tables is under way."""


class _Careful(Exception):
    """A batch failed, or meets held rows: roll it back and run it again with savepoints."""


class _OrphanRows(Exception):
    """A foreign key added after a rebuild's load found rows without their parent row."""


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    tables: tuple[str, ...]
    position: int
    head: int
    lag: int
    current_schema: bool
    error: str | None
    error_position: int | None
    blocked_by: tuple[str, ...]  # stopped projections it depends on (it cannot pass them)
    parked: int = 0  # events it could not apply, waiting for a retry or a skip
    skipped: int = 0  # parked events skipped deliberately (projections/parking.py)


@dataclass(frozen=True)
class Retried:
    """The outcome of retrying one parked event: applied (its parking row removed) or not."""

    row: Parked
    applied: bool
    error: str | None = None


@dataclass
class Target:
    """Where a batch writes: the live tables (positions in the tracking table) or staging."""

    physical: dict[str, str]
    positions: dict[str, int] | None = None  # staging positions; None for live
    background: BackgroundWriter | None = None  # a PostgreSQL rebuild's bulk writer
    parked: list[Parked] = field(default_factory=list)  # staging: committed batches' parked events
    skips: dict[tuple[str, int], Parked] = field(default_factory=dict)  # a rebuild's known skips

    @property
    def live(self) -> bool:
        return self.positions is None


LIVE = Target(physical={})


class Projector:
    """The projections of one ledger database, with one connection of their own."""

    def __init__(
        self,
        database: Database,
        *,
        projections: Sequence[type[Projection]] = PROJECTIONS,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.database = database
        self.store = Store(database)
        self.projections = [cls() for cls in projections]
        self.by_name = {p.name: p for p in self.projections}
        self.batch_size = batch_size
        known = set(known_events())
        self._skip = {p.name: sorted(known - p.topics) for p in self.projections}
        self._prepared = False
        self.parked_now: list[Parked] = []
        """Events the last ``catch_up`` parked, oldest first (for warnings and reports)."""

    @classmethod
    def open(cls, url: str | None = None, **options: Any) -> Projector:
        return cls(resolve_database(url), **options)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Projector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- names --------------------------------------------------------------------------------

    def resolve(self, names: Sequence[str] | None) -> list[Projection]:
        """Projections by name (or by table name), in dependency order; all when none given."""
        if not names:
            return list(self.projections)
        wanted: set[str] = set()
        for name in names:
            match = [
                p for p in self.projections if p.name == name or name in {t.name for t in p.tables}
            ]
            if not match:
                known = ", ".join(p.name for p in self.projections)
                raise KeyError(f"no projection {name!r}; known: {known}")
            wanted.add(match[0].name)
        return [p for p in self.projections if p.name in wanted]

    def closure(self, names: Sequence[str] | None) -> list[Projection]:
        """The named projections and every projection that depends on them, in order."""
        chosen = {p.name for p in self.resolve(names)}
        for p in self.projections:  # dependency order: one pass reaches every dependent
            if chosen & set(p.depends_on):
                chosen.add(p.name)
        return [p for p in self.projections if p.name in chosen]

    # --- setting up ---------------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the tracking table and missing read tables; rebuild outdated ones."""
        if self._prepared:
            return
        outdated = self._ensure()
        if outdated:
            self.rebuild(outdated)
        self._prepared = True

    def _ensure(self) -> list[str]:
        store = self.store
        with store.transaction() as cursor:
            if store.postgres:  # concurrent CREATE TABLE IF NOT EXISTS can collide: take turns
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))",
                    (f"twinledger-projections-setup:{store.schema}",),
                )
            if not store.table_exists(cursor, store.events_table):
                raise RuntimeError(
                    f"no event log ({store.events_table}) in {self.database.describe()}"
                )
            tracking.ensure_table(store, cursor)
            rows = tracking.read_all(store, cursor)
            missing = [p.name for p in self.projections if p.name not in rows]
            fresh = self.closure(missing) if missing else []
            for p in reversed(fresh):
                for table in reversed(p.tables):
                    store.drop_table(cursor, table.name)
            for p in fresh:
                for table in p.tables:
                    self._create(cursor, table, table.name, indexes=True)
                tracking.put(store, cursor, p.name, 0, p.schema_version)
            return [
                p.name
                for p in self.projections
                if p.name in rows and rows[p.name].schema_version != p.schema_version
            ]

    def _create(
        self,
        cursor: Any,
        table: Table,
        physical: str,
        *,
        indexes: bool,
        references: dict[str, str] | None = None,
        foreign_keys: bool = True,
    ) -> None:
        store = self.store
        cursor.execute(
            store.raw(
                create_table_sql(
                    table,
                    physical,
                    postgres=store.postgres,
                    schema=store.schema,
                    references=references,
                    foreign_keys=foreign_keys,
                )
            )
        )
        if indexes:
            self._create_indexes(cursor, table, physical)

    def _create_indexes(self, cursor: Any, table: Table, physical: str) -> None:
        for index in table.indexes:
            statement = create_index_sql(
                table, index, physical, postgres=self.store.postgres, schema=self.store.schema
            )
            if statement is not None:
                cursor.execute(self.store.raw(statement))

    # --- catching up --------------------------------------------------------------------------

    def catch_up(self, names: Sequence[str] | None = None) -> dict[str, int]:
        """Apply every committed event not yet applied; returns each projection's position.

        An event a projection cannot apply is parked (projections/parking.py) and the
        projection goes on; ``parked_now`` lists what was parked.
        """
        self.parked_now.clear()
        self.prepare()
        group = self.resolve(names)
        self._run_together(group, LIVE)
        for projection in group:  # whatever the shared pass left: one projection at a time
            self._run(projection, LIVE)
        with self.store.reading() as cursor:
            return {
                p.name: tracking.position(self.store, cursor, p.name) for p in self.resolve(names)
            }

    def _run_together(
        self,
        group: list[Projection],
        target: Target,
        cursor: Any = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> dict[str, int]:
        """Shared passes: while the projections are at the same position, one batch reads the
        notifications once for all of them (each decodes only its own topics) and writes
        every projection's rows and position in one transaction, in dependency order.

        Stops at the first batch that fails or when the positions part; the one-projection
        path then takes over (and finds the event at fault). Returns events applied by each.
        """
        applied = {p.name: 0 for p in group}
        if len(group) < 2:
            return applied
        while True:
            try:
                if cursor is not None:
                    moved = self._shared_batch(group, target, cursor, careful=True)
                else:
                    try:
                        with self._transaction(target) as own:
                            moved = self._shared_batch(group, target, own, careful=False)
                    except _Careful:  # rolled back: again, with an event at fault parked
                        with self._transaction(target) as own:
                            moved = self._shared_batch(group, target, own, careful=True)
            except TRANSIENT:
                raise
            except Exception:
                if cursor is not None:
                    raise
                return applied  # rolled back; the one-projection path finds out why
            if moved is None:
                return applied
            counts, new, cap, parked = moved
            for name, count in counts.items():
                applied[name] += count
                if target.positions is not None:
                    target.positions[name] = new
            (target.parked if target.positions is not None else self.parked_now).extend(parked)
            if progress is not None:
                progress("+".join(applied), new, cap)

    @contextmanager
    def _transaction(self, target: Target) -> Iterator[Any]:
        """A batch's own transaction. Staging batches commit without waiting for the WAL flush,
        and hand their background rows over once committed (see ``_rebuild``)."""
        background = target.background
        if background is not None:
            background.check()
        try:
            with self.store.transaction(durable=target.live) as cursor:
                yield cursor
        except BaseException:
            if background is not None:
                background.discard()
            raise
        if background is not None:
            background.submit()

    def _shared_batch(
        self, group: list[Projection], target: Target, cursor: Any, *, careful: bool
    ) -> tuple[dict[str, int], int, int, list[Parked]] | None:
        store = self.store
        if target.positions is None:
            rows = [tracking.read(store, cursor, p.name, lock=True) for p in group]
            starts = {row.position for row in rows if row is not None}
            if len(starts) != 1 or any(row is None or row.error for row in rows):
                return None
        else:
            starts = {target.positions[p.name] for p in group}
            if len(starts) != 1:
                return None
        (start,) = starts
        names = {p.name for p in group}
        cap = store.head(cursor)
        for p in group:
            for dependency in p.depends_on:
                if dependency in self.by_name and dependency not in names:
                    cap = min(cap, self._position(cursor, dependency, target))
        if cap <= start:
            return None
        union = frozenset().union(*(p.topics for p in group))
        skip = sorted(set.intersection(*(set(self._skip[p.name]) for p in group)))
        upto = min(cap, start + WINDOW * self.batch_size)
        notes = store.notes(cursor, start, upto, skip, self.batch_size)
        counts: dict[str, int] = {}
        parked: list[Parked] = []
        for p in group:
            # Its own topics, and any the group does not know (an unknown one is parked).
            mine = p.topics
            counts[p.name], its = self._apply(
                p,
                target,
                cursor,
                [n for n in notes if n.topic in mine or n.topic not in union],
                careful=careful,
            )
            parked += its
        new = notes[-1].position if len(notes) == self.batch_size else upto
        if target.positions is None:
            parking.park(store, cursor, parked)
            for p in group:
                tracking.advance(store, cursor, p.name, start, new)
        return counts, new, cap, parked

    def _position(self, cursor: Any, name: str, target: Target) -> int:
        if target.positions is not None and name in target.positions:
            return target.positions[name]
        return tracking.position(self.store, cursor, name)

    def _run(self, projection: Projection, target: Target, cursor: Any = None) -> int:
        """Batches until the projection is at its cap; returns how many events it applied."""
        applied = 0
        conflicts = 0
        while True:
            try:
                moved = self._step(projection, target, self.batch_size, cursor)
            except TRANSIENT:
                raise
            except tracking.TrackingConflict:
                conflicts += 1
                if conflicts > 3:
                    raise
                continue
            if moved is None:
                return applied
            applied += moved

    def _step(
        self, projection: Projection, target: Target, limit: int, cursor: Any = None
    ) -> int | None:
        """One batch, in its own transaction or in ``cursor``'s; None when there was nothing to do.

        Returns how many events it applied. A staging position moves only once its batch is
        committed (or, inside a caller's transaction, with it: the caller fails as a whole).
        """
        if cursor is not None:
            result = self._batch(projection, target, limit, cursor, careful=True)
        else:
            try:
                with self._transaction(target) as own:
                    result = self._batch(projection, target, limit, own, careful=False)
            except _Careful:  # rolled back: again, with an event at fault parked
                with self._transaction(target) as own:
                    result = self._batch(projection, target, limit, own, careful=True)
        if result is None:
            return None
        applied, new, parked = result
        if target.positions is not None:
            target.positions[projection.name] = new
            target.parked.extend(parked)
        else:
            self.parked_now.extend(parked)
        return applied

    def _batch(
        self, projection: Projection, target: Target, limit: int, cursor: Any, *, careful: bool
    ) -> tuple[int, int, list[Parked]] | None:
        store = self.store
        name = projection.name
        if target.positions is None:
            row = tracking.read(store, cursor, name, lock=True)
            if row is None:
                raise RuntimeError(f"projection {name} has no tracking row")
            start = row.position
        else:
            start = target.positions[name]
        cap = self._cap(cursor, projection, target)
        if cap <= start:
            return None
        upto = min(cap, start + WINDOW * limit)
        notes = store.notes(cursor, start, upto, self._skip[name], limit)
        applied, parked = self._apply(projection, target, cursor, notes, careful=careful)
        new = notes[-1].position if len(notes) == limit else upto
        if target.positions is None:
            parking.park(store, cursor, parked)  # with the position: parked exactly once
            tracking.advance(store, cursor, name, start, new)
        return applied, new, parked

    def _apply(
        self,
        projection: Projection,
        target: Target,
        cursor: Any,
        notes: list[Note],
        *,
        careful: bool,
        hold: bool = True,
    ) -> tuple[int, list[Parked]]:
        """Apply ``notes`` in ``cursor``'s transaction; returns (events applied, events parked).

        Not ``careful`` (the usual case): the batch is applied as it is, and if it fails (or
        touches held rows) ``_Careful`` is raised: the caller rolls the transaction back and
        runs it again ``careful``. Careful: the batch is applied under a savepoint; if it fails
        (an event whose topic this code does not know, whose state does not decode, whose row
        the tables refuse, or a handler that raises), it is rolled back to the savepoint and
        applied again one event per savepoint: each event that fails on its own is parked, the
        others are applied. (Savepoints only then: they cost a catch-up about a fifth of its
        time on PostgreSQL.) Errors of the connection or of locking are not an event's: they
        fail the whole transaction.

        Events for rows an event parked (and not skipped) in this projection would have written
        are parked behind it, as Axon's sequenced dead letters are: a row never takes a later
        event before an earlier one, and retrying in log order gives the rows a clean rebuild
        gives (``_keys``).
        """
        if not notes:
            return 0, []
        held = self._held(projection, target, cursor) if hold else {}
        clear = not held or not any(held.keys() & self._keys(projection, note) for note in notes)
        if not careful:
            if not clear:
                raise _Careful()
            try:
                return self._apply_now(projection, target, cursor, notes, savepoint=False), []
            except TRANSIENT:
                raise
            except Exception as error:
                raise _Careful() from error
        if clear:
            background = target.background
            mark = background.mark() if background is not None else 0
            try:
                return self._apply_now(projection, target, cursor, notes), []
            except TRANSIENT:
                raise
            except Exception:
                if background is not None:
                    background.forget_since(mark)  # its rows were queued, then rolled back
        applied, parked = 0, []
        for note in notes:
            keys = self._keys(projection, note)
            behind = [held[key] for key in keys if key in held]
            if behind:
                parked.append(parking.held(projection.name, note, min(behind), sorted(keys)))
                for key in keys:
                    held.setdefault(key, note.position)
                continue
            background = target.background
            mark = background.mark() if background is not None else 0
            try:
                applied += self._apply_now(projection, target, cursor, [note])
            except TRANSIENT:
                raise
            except Exception as error:
                if background is not None:
                    background.forget_since(mark)
                row = self._park(projection, target, note, error, keys)
                parked.append(row)
                if not row.skipped:  # a skipped event holds nothing back
                    for key in row.keys:
                        held.setdefault(key, note.position)
        return applied, parked

    def _apply_now(
        self,
        projection: Projection,
        target: Target,
        cursor: Any,
        notes: list[Note],
        *,
        savepoint: bool = True,
    ) -> int:
        with self.store.savepoint(cursor) if savepoint else nullcontext():
            events = self._decode(projection, notes)
            if events:
                projection.apply(
                    Batch(self.store, cursor, target.physical, events, target.background)
                )
        return len(events)

    def _held(self, projection: Projection, target: Target, cursor: Any) -> dict[str, int]:
        """Rows with an event parked (not skipped) in the projection: row id -> its position."""
        if target.live:
            return parking.held_rows(self.store, cursor, projection.name)
        return parking.hold_map(
            (row.keys, row.position)
            for row in target.parked
            if row.projection == projection.name and not row.skipped
        )

    def _keys(self, projection: Projection, note: Note) -> set[str]:
        """The rows an event may write: its aggregate's, and any other id it names (the twin a
        RunQueued counts on, the run an iteration evaluates). Over-approximate, never under:
        an event naming a held row waits, which keeps the log's order for that row."""
        keys = {parking.aggregate(note.originator_id)}
        if note.topic not in projection.topics:
            return keys
        try:
            data = projection.decode(note).data
        except UnhandledEvent:
            return keys
        for name in getattr(data, "__struct_fields__", ()):
            value = getattr(data, name)
            if isinstance(value, UUID):
                keys.add(str(value))
        return keys

    def _park(
        self, projection: Projection, target: Target, note: Note, error: Exception, keys: set[str]
    ) -> Parked:
        row = parking.parked(projection.name, note, error, sorted(keys))
        skip = target.skips.get(row.key)
        return row if skip is None else parking.carry_skip(skip, row)

    def _decode(self, projection: Projection, notes: list[Note]) -> list[Decoded]:
        events: list[Decoded] = []
        add, decode, topics = events.append, projection.decode, projection.topics
        for note in notes:
            if note.topic not in topics:
                if is_event_topic(note.topic):  # an event class added since we started
                    self._skip[projection.name].append(note.topic)
                    continue
                raise UnhandledEvent(note, "its topic names no event class this code knows")
            add(decode(note))
        return events

    def _cap(self, cursor: Any, projection: Projection, target: Target) -> int:
        """How far the projection may go: the head, and no further than what it depends on."""
        cap = self.store.head(cursor)
        for dependency in projection.depends_on:
            if dependency not in self.by_name:
                continue
            if target.positions is not None and dependency in target.positions:
                cap = min(cap, target.positions[dependency])
            else:
                cap = min(cap, tracking.position(self.store, cursor, dependency))
        return cap

    # --- rebuilding ---------------------------------------------------------------------------

    def rebuild(
        self,
        names: Sequence[str] | None = None,
        *,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> dict[str, int]:
        """Rebuild the named projections (and their dependents) from position 0, blue/green.

        Returns the number of events each one applied. ``progress(name, position, head)`` is
        called after each committed staging batch.
        """
        targets = self.closure(names)
        with self._rebuild_lock():
            self._ensure()
            if not self.store.postgres:
                applied = self._rebuild(targets, progress, fast=False)
            else:
                try:
                    applied = self._rebuild(targets, progress, fast=True)
                except BackgroundFailed as failed:
                    if isinstance(failed.cause, TRANSIENT):
                        raise failed.cause from failed
                    applied = self._rebuild(targets, progress, fast=False)
                except _OrphanRows:
                    # The fast load checks foreign keys at its end and inserts some rows in the
                    # background, so its failure may not name the first event at fault: load
                    # again the exact way, which parks that event. Live tables are untouched.
                    applied = self._rebuild(targets, progress, fast=False)
        self._prepared = False
        return applied

    def _rebuild(
        self,
        targets: list[Projection],
        progress: Callable[[str, int, int], None] | None,
        *,
        fast: bool,
    ) -> dict[str, int]:
        """Fill staging tables from position 0 and swap them in.

        ``fast`` (PostgreSQL): the staging tables get their foreign keys after the load, before
        the swap (one check over all the rows instead of a trigger per row, which costs as
        much as the rest of the COPY), and bulk inserts go to a background writer on a second
        connection (projections/background.py). Staging batches commit without waiting for
        the WAL flush (synchronous_commit off): nobody reads staging tables but this rebuild,
        which starts over from 0 if the server goes down, and the swap commits durably, which
        flushes everything before it.
        """
        store = self.store
        staging = {t.name: t.name + STAGING for p in targets for t in p.tables}
        target = Target(physical=staging, positions={p.name: 0 for p in targets})
        with store.transaction(durable=False) as cursor:
            # Skips are decisions about events: an event skipped before stays skipped.
            names = [p.name for p in targets]
            for row in parking.select(store, cursor, names=names):
                if row.skipped:
                    target.skips[row.key] = row
            for p in reversed(targets):
                for table in reversed(p.tables):
                    store.drop_table(cursor, staging[table.name])
            for p in targets:
                for table in p.tables:
                    self._create(
                        cursor,
                        table,
                        staging[table.name],
                        indexes=False,
                        references=staging,
                        foreign_keys=not fast,
                    )
        background = BackgroundWriter(self.database) if fast else None
        target.background = background
        try:
            applied = self._run_together(targets, target, progress=progress)
            for p in targets:
                applied[p.name] += self._build(p, target, progress)
            if background is not None:
                background.finish()  # every row committed before indexes, keys and swap
        finally:
            target.background = None
            if background is not None:
                background.abandon()
        if store.postgres:  # indexes built once over the loaded rows, renamed at the swap
            with store.transaction(durable=False) as cursor:
                for p in targets:
                    for table in p.tables:
                        self._create_indexes(cursor, table, staging[table.name])
                if fast:
                    self._add_foreign_keys(cursor, targets, staging)
        self._swap(targets, target, applied)
        return applied

    def _add_foreign_keys(
        self, cursor: Any, targets: list[Projection], staging: dict[str, str]
    ) -> None:
        try:
            for p in targets:
                for table in p.tables:
                    for fk in table.foreign_keys:
                        statement = add_foreign_key_sql(
                            fk, staging[table.name], schema=self.store.schema, references=staging
                        )
                        cursor.execute(self.store.raw(statement))
        except psycopg.errors.ForeignKeyViolation as violation:
            raise _OrphanRows(str(violation)) from violation

    def _build(
        self,
        projection: Projection,
        target: Target,
        progress: Callable[[str, int, int], None] | None,
    ) -> int:
        applied = 0
        while True:
            moved = self._step(projection, target, self.batch_size)
            if moved is None:
                return applied
            applied += moved
            if progress is not None:
                assert target.positions is not None
                with self.store.reading() as cursor:
                    head = self.store.head(cursor)
                progress(projection.name, target.positions[projection.name], head)

    def _swap(self, targets: list[Projection], target: Target, applied: dict[str, int]) -> None:
        store = self.store
        assert target.positions is not None
        with store.transaction() as cursor:
            for p in targets:  # dependency order, the same in every process: no deadlock
                tracking.read(store, cursor, p.name, lock=True)
            for name, count in self._run_together(targets, target, cursor).items():
                applied[name] += count
            for p in targets:
                applied[p.name] += self._run(p, target, cursor)
            for p in reversed(targets):
                for table in reversed(p.tables):
                    store.drop_table(cursor, table.name)
            for p in targets:
                for table in p.tables:
                    self._rename(cursor, table, target.physical[table.name])
            # The new generation's parked events replace the old ones (a skip carries over).
            parking.replace_all(store, cursor, [p.name for p in targets], target.parked)
            for p in targets:
                tracking.put(store, cursor, p.name, target.positions[p.name], p.schema_version)

    def _rename(self, cursor: Any, table: Table, staging: str) -> None:
        store = self.store
        live = table.name
        if not store.postgres:
            cursor.execute(f'ALTER TABLE "{staging}" RENAME TO "{live}"')
            self._create_indexes(cursor, table, live)  # SQLite cannot rename an index
            return
        cursor.execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                sql.Identifier(store.schema, staging), sql.Identifier(live)
            )
        )
        constraints = ["{}_pkey"]
        constraints += [f"{{}}_{fk.column}_fkey" for fk in table.foreign_keys]
        constraints += [f"{{}}_check{n}" for n in range(1, len(table.checks) + 1)]
        for name in constraints:
            cursor.execute(
                sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                    sql.Identifier(store.schema, live),
                    sql.Identifier(name.format(staging)),
                    sql.Identifier(name.format(live)),
                )
            )
        old = index_names(table, staging, postgres=True)
        new = index_names(table, live, postgres=True)
        for before, after in zip(old, new, strict=True):
            cursor.execute(
                sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    sql.Identifier(store.schema, before), sql.Identifier(after)
                )
            )

    @contextmanager
    def _rebuild_lock(self) -> Iterator[None]:
        """One rebuild at a time per database (a crashed holder releases it with its process)."""
        store = self.store
        if store.postgres:
            key = f"twinledger-projections-rebuild:{store.schema}"
            row = store.pg.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()
            if not row or not row[0]:
                raise RebuildBusy(f"another rebuild is under way in schema {store.schema}")
            try:
                yield
            finally:
                store.pg.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
            return
        path = self.database.sqlite_path
        if path.startswith("file:"):
            yield
            return
        with open(f"{path}-rebuild.lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RebuildBusy(f"another rebuild of {path} is under way") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- reporting ----------------------------------------------------------------------------

    def status(self) -> list[ProjectionStatus]:
        self._ensure()
        store = self.store
        with store.reading() as cursor:
            head = store.head(cursor)
            rows = tracking.read_all(store, cursor)
            parked = parking.counts(store, cursor)
        report = []
        for p in self.projections:
            row = rows[p.name]
            ancestors: list[str] = []
            pending = list(p.depends_on)
            while pending:
                dependency = pending.pop()
                if dependency in self.by_name and dependency not in ancestors:
                    ancestors.append(dependency)
                    pending.extend(self.by_name[dependency].depends_on)
            report.append(
                ProjectionStatus(
                    name=p.name,
                    tables=tuple(t.name for t in p.tables),
                    position=row.position,
                    head=head,
                    lag=max(0, head - row.position),
                    current_schema=row.schema_version == p.schema_version,
                    error=row.error,
                    error_position=row.error_position,
                    blocked_by=tuple(a for a in sorted(ancestors) if rows[a].error),
                    parked=parked.get(p.name, (0, 0))[0],
                    skipped=parked.get(p.name, (0, 0))[1],
                )
            )
        return report

    # --- parked events ------------------------------------------------------------------------

    def parked(
        self, names: Sequence[str] | None = None, *, position: int | None = None
    ) -> list[Parked]:
        """Parked events (skipped ones too), in log order."""
        self._ensure()
        wanted = [p.name for p in self.resolve(names)]
        with self.store.reading() as cursor:
            return parking.select(self.store, cursor, names=wanted, position=position)

    def retry(
        self,
        position: int | None = None,
        names: Sequence[str] | None = None,
        *,
        actor: str = "cli",
    ) -> list[Retried]:
        """Apply parked events again (after a fix), in log order and dependency order.

        Without ``position``: every parked event not skipped. Each one is retried in its own
        transaction, holding its projection's tracking row (no catch-up runs meanwhile): if
        it applies, its parking row is removed and the retry is audited; if not, the row stays
        with the new error. Raises LookupError if ``position`` has no parked event.
        """
        self.prepare()
        store = self.store
        wanted = [p.name for p in self.resolve(names)]
        with store.reading() as cursor:
            rows = parking.select(
                store, cursor, names=wanted, position=position, skipped=position is not None
            )
        if position is not None and not rows:
            raise LookupError(f"no parked event at position {position}")
        order = {p.name: index for index, p in enumerate(self.projections)}
        rows.sort(key=lambda row: (row.position, order[row.projection]))
        outcomes = []
        for row in rows:
            projection = self.by_name[row.projection]
            with store.transaction() as cursor:
                tracking.read(store, cursor, row.projection, lock=True)
                if not parking.select(store, cursor, names=[row.projection], position=row.position):
                    continue  # retried meanwhile by another process
                first = parking.held_rows(store, cursor, row.projection)
                earlier = min((first.get(key, row.position) for key in row.keys), default=0)
                if earlier < row.position:
                    why = f"an earlier event for the same rows is parked (position {earlier})"
                    outcomes.append(Retried(row, False, why))
                    continue
                notes = store.notes(cursor, row.position - 1, row.position, [], 1)
                if not notes:
                    outcomes.append(Retried(row, False, "the event is no longer in the log"))
                    continue
                _, failed = self._apply(projection, LIVE, cursor, notes, careful=True, hold=False)
                if failed:
                    parking.update_error(store, cursor, failed[0])
                    error = f"{failed[0].error_class}: {failed[0].error_message}"
                    outcomes.append(Retried(row, False, error))
                else:
                    parking.remove(store, cursor, row)
                    parking.audit(store, cursor, "retried", row, actor, "applied on retry")
                    outcomes.append(Retried(row, True))
        return outcomes

    def skip(
        self,
        position: int,
        reason: str,
        *,
        actor: str,
        names: Sequence[str] | None = None,
    ) -> list[Parked]:
        """Mark the events parked at ``position`` as skipped deliberately, with who and why.

        The event stays out of the tables; the decision is written to the audit table in the
        same transaction (projections/parking.py). Raises LookupError if nothing waits there.
        """
        if not reason.strip():
            raise ValueError("a skip needs a reason")
        self._ensure()
        store = self.store
        wanted = [p.name for p in self.resolve(names)]
        with store.transaction() as cursor:
            rows = parking.select(store, cursor, names=wanted, position=position, skipped=False)
            if not rows:
                raise LookupError(f"no parked event waits at position {position}")
            return [parking.mark_skipped(store, cursor, row, actor, reason) for row in rows]

    def audit_trail(self) -> list[parking.AuditEntry]:
        """Every skip and successful retry of a parked event, oldest first."""
        self._ensure()
        with self.store.reading() as cursor:
            return parking.audit_trail(self.store, cursor)

    def checksums(self, names: Sequence[str] | None = None) -> dict[str, tuple[int, str]]:
        """Row count and checksum of each live table (projections/checksum.py)."""
        self._ensure()
        result = {}
        with self.store.reading() as cursor:
            for p in self.resolve(names):
                for table in p.tables:
                    result[table.name] = table_checksum(self.store, cursor, table)
        return result

    # --- following the log --------------------------------------------------------------------

    def run_forever(
        self,
        *,
        poll_seconds: float = 1.0,
        stop: threading.Event | None = None,
        report: Callable[[str], None] = print,
    ) -> None:
        """Keep the tables current until ``stop`` is set.

        PostgreSQL: LISTEN on the channel eventsourcing NOTIFYs on each write, so tables follow
        within a batch of the write; ``poll_seconds`` is only a fallback. SQLite (no
        LISTEN/NOTIFY): poll every ``poll_seconds``. A stopped projection is reported once (and
        retried each round: the fix may be a data repair); connection errors are reported and
        retried.
        """
        stop = stop or threading.Event()
        listener = self._listen() if self.store.postgres else None
        last = ""
        try:
            while not stop.is_set():
                message = ""
                try:
                    self.catch_up()
                    if self.parked_now:
                        report(describe(self.parked_now))
                    self.parked_now.clear()
                except (ProjectionsStopped, ProjectionStopped, RebuildBusy) as stopped:
                    message = str(stopped)
                except TRANSIENT as error:
                    message = f"database error, retrying: {error}"
                    self._prepared = False
                    self.store.reconnect()
                    if listener is not None and listener.closed:
                        listener = self._listen()
                if message and message != last:
                    report(message)
                last = message
                if listener is not None and not listener.closed:
                    try:
                        for _ in listener.notifies(timeout=poll_seconds, stop_after=1):
                            pass
                    except psycopg.OperationalError:
                        stop.wait(poll_seconds)
                else:
                    stop.wait(poll_seconds)
        finally:
            if listener is not None:
                listener.close()

    def _listen(self) -> psycopg.Connection[Any]:
        connection = psycopg.connect(self.database.psycopg_conninfo(), autocommit=True)
        channel = self.store.events_table.replace(".", "_")
        connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        return connection


def describe(rows: Sequence[Parked]) -> str:
    """One line about events just parked (the first one named), for warnings and reports."""
    row = rows[0]
    more = f" and {len(rows) - 1} more" if len(rows) > 1 else ""
    return (
        f"projection {row.projection} parked event {row.position} ({row.topic}, "
        f"{row.originator_id} version {row.originator_version}): {row.error_class}: "
        f"{row.error_message}{more} (twinledger projections parked; docs/projections.md)"
    )


def keep_current(application: Any, warn: Callable[[str], None]) -> Callable[[], None]:
    """Catch the read tables up after each write ``application`` makes (read your writes).

    Adds a hook to ``application.after_write``; returns a function that removes it and closes
    the projector. A projection that cannot catch up never fails the write that happened:
    ``warn`` is told why the tables are behind.
    """
    state: dict[str, Projector] = {}
    warned: set[str] = set()

    def hook() -> None:
        database = getattr(application, "database", None)
        if database is None:
            return
        try:
            if "projector" not in state:
                state["projector"] = Projector(database)
            projector = state["projector"]
            projector.catch_up()
            if projector.parked_now:
                warn(f"warning: {describe(projector.parked_now)}")
            projector.parked_now.clear()
        except Exception as error:  # the write is done; the tables catch up later
            message = f"warning: read tables are behind: {error}"
            if message not in warned:  # once per command, not once per chunk saved
                warned.add(message)
                warn(message)

    application.after_write.append(hook)

    def detach() -> None:
        if hook in application.after_write:
            application.after_write.remove(hook)
        if "projector" in state:
            state.pop("projector").close()

    return detach
