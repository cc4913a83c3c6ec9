"""Catching up: applying committed events to the live (or staging) tables, exactly once.

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
"""

from __future__ import annotations

import operator
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

import psycopg

from domain.errors import Picklable
from infrastructure.settings import Database
from projections import parking, tracking
from projections.background import BackgroundWriter
from projections.base import Batch, Projection
from projections.decoding import Decoded, UnhandledEvent, is_event_topic
from projections.parking import Parked
from projections.store import Note, Store

DEFAULT_BATCH = 2000
WINDOW = 8
"""A batch reads notifications in (position, position + WINDOW * batch size] at most: a bounded
index range per batch, however sparse the projection's topics and whatever the planner thinks."""
MEMORY = 10_000
"""Events kept at most by ``remember`` (a 1000-year run is 1002): beyond, they are read back."""
STAGING = "__rebuild"
TRANSIENT = (sqlite3.OperationalError, psycopg.OperationalError)
"""Errors of the connection or of locking, not of an event: retried, never a projection stop."""

RECOVERY = "see docs/projections.md, 'Parked events'"
_notification = operator.attrgetter("notification")
_domain_event = operator.attrgetter("domain_event")
_position = operator.attrgetter("position")

_decoded = cast(Callable[[tuple[int, Any, Any]], Decoded], partial(tuple.__new__, Decoded))
"""(position, event class, lean value) as a Decoded, in C (NamedTuple's __new__ is Python)."""


class ProjectionStopped(Picklable, Exception):
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


class ProjectionsStopped(Picklable, Exception):
    """One or more projections stopped; the others were caught up (see ProjectionStopped)."""

    def __init__(self, stops: list[ProjectionStopped]) -> None:
        self.stops = stops
        super().__init__("; ".join(str(stop) for stop in stops))


class _Done:
    """A shared pass found the group together at the head of the log: nothing left to do."""

    def __init__(self, position: int) -> None:
        self.position = position


class _Careful(Exception):
    """A batch failed, or meets held rows: roll it back and run it again with savepoints."""


@dataclass
class Target:
    """Where a batch writes: the live tables (positions in the tracking table) or staging."""

    physical: dict[str, str]
    positions: dict[str, int] | None = None  # staging positions; None for live
    background: BackgroundWriter | None = None  # a PostgreSQL rebuild's bulk writer
    pipeline: bool = False
    """A PostgreSQL rebuild's load: a shared batch runs in pipeline mode (``Store.pipelined``)
    unless careful; a write's error may then surface at a later statement or at the commit, and
    is the batch's all the same (``_Careful``: it runs again, careful, without the pipeline)."""
    parked: list[Parked] = field(default_factory=list)  # staging: committed batches' parked events
    skips: dict[tuple[str, int], Parked] = field(default_factory=dict)  # a rebuild's known skips
    durable: bool = True  # live: whether a batch's commit waits for the WAL flush
    head: int | None = None
    """Staging, while a rebuild loads: the head read once when the load began, its batches'
    end (one statement less per batch); the swap catches up the rest under its lock."""

    @property
    def live(self) -> bool:
        return self.positions is None


LIVE = Target(physical={})
LIVE_AFTER_DURABLE_WRITE = Target(physical={}, durable=False)
"""The live tables, caught up right after a durable write of the same process (keep_current):
batches commit without waiting for the WAL flush (PostgreSQL). The events are on disk; a
server crash can lose only the latest such commits, rows and position together (one
transaction, and the WAL is replayed in order), and the next catch-up applies those events
again from the position that survived: exactly once still. Readers catch up before reading."""


class CatchUp:
    """Catching up, a part of ``Projector`` (projections/runner.py), which holds the state."""

    if TYPE_CHECKING:
        database: Database
        store: Store
        projections: list[Projection]
        by_name: dict[str, Projection]
        batch_size: int
        _skip: dict[str, list[str]]
        parked_now: list[Parked]
        _memory: list[Note]
        _saved: dict[int, Any]

        def prepare(self) -> None: ...

        def resolve(self, names: Sequence[str] | None) -> list[Projection]: ...

    _together_at: int | None = None
    """Where the last shared pass that finished left the whole group (``_together``)."""

    def remember(self, recordings: Sequence[Any]) -> None:
        """Keep the events this process just saved (eventsourcing Recordings: each event with
        its notification), so catching up projects them without reading them back.

        Used only where they are exactly the log: a batch takes notifications from memory
        when they cover every position from the one after the projection's to the batch's
        end, without a gap (another writer's event in between leaves a gap: memory starts
        again after it). Rows and position still commit in one transaction, so exactly once
        holds as when reading. At most ``MEMORY`` events are kept."""
        notes = [
            Note(n.id, n.originator_id, n.originator_version, n.topic, n.state)
            for n in map(_notification, recordings)
        ]
        if not notes:
            return
        first = notes[0].position
        positions = list(map(_position, notes))
        if positions != list(range(first, first + len(notes))) or len(notes) > MEMORY:
            self.forget()
            return
        if self._memory and (
            first != self._memory[-1].position + 1 or len(self._memory) + len(notes) > MEMORY
        ):
            self.forget()
        self._memory.extend(notes)
        self._saved.update(zip(positions, map(_domain_event, recordings), strict=True))

    def forget(self, upto: int | None = None) -> None:
        """Drop remembered events (those at positions <= ``upto``, or all)."""
        if upto is None or not self._memory or upto >= self._memory[-1].position:
            self._memory.clear()
            self._saved.clear()
            return
        keep = [note for note in self._memory if note.position > upto]
        for note in self._memory[: len(self._memory) - len(keep)]:
            self._saved.pop(note.position, None)
        self._memory[:] = keep

    def _notes(
        self, cursor: Any, start: int, upto: int, skip: Sequence[str], limit: int
    ) -> tuple[list[Note], int]:
        """``store.notes`` (and the batch's end, lowered to what memory covers) from the
        remembered events when they cover (start, end] without a gap, else from the log."""
        memory = self._memory
        if memory and memory[0].position <= start + 1 <= memory[-1].position:
            first = memory[0].position
            upto = min(upto, memory[-1].position)
            skipped = set(skip)
            found: list[Note] = []
            for note in memory[start + 1 - first : upto - first + 1]:
                if note.topic in skipped:
                    continue
                found.append(note)
                if len(found) == limit:
                    break
            return found, upto
        return self.store.notes(cursor, start, upto, skip, limit), upto

    def catch_up(
        self, names: Sequence[str] | None = None, *, durable: bool = True
    ) -> dict[str, int]:
        """Apply every committed event not yet applied; returns each projection's position.

        An event a projection cannot apply is parked (projections/parking.py) and the
        projection goes on; ``parked_now`` lists what was parked. ``durable=False``: batches
        commit without waiting for the WAL flush (see ``LIVE_AFTER_DURABLE_WRITE``).

        The positions are first read outside any transaction, so that a catch-up with
        nothing to do takes no lock and commits nothing; not when catching every projection
        up while events saved by this process since its last catch-up are remembered
        (``remember``: the catch-up right after a save, keep_current's), which are there to
        apply: the batch's own locking read finds out as well (one round trip less). A
        group found at the head there commits an empty transaction.
        """
        self.parked_now.clear()
        self.prepare()
        group = self.resolve(names)
        wanted = [p.name for p in group]
        if names is not None or not self._memory:  # (remembered: saved here, to apply)
            positions, head = tracking.behind(self.store, wanted)
            if len(positions) == len(wanted) and all(positions[n] >= head for n in wanted):
                self.forget(min(positions.values(), default=None))
                return positions  # nothing to apply: no transaction, no lock, no commit
        target = LIVE if durable else LIVE_AFTER_DURABLE_WRITE
        self._together_at = None
        _, finished = self._together(group, target)
        if finished and self._together_at is not None:
            # Every projection of the group committed this position (the head it read):
            # no statement to read it back.
            positions = dict.fromkeys(wanted, self._together_at)
        else:
            for projection in group:  # whatever the shared pass left: one at a time
                self._run(projection, target)
            positions = tracking.behind(self.store, wanted)[0]
        if names is None:  # every projection is past what it shows: what is left is unread
            self.forget(min(positions.values(), default=None))
        return positions

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
        return self._together(group, target, cursor, progress)[0]

    def _together(
        self,
        group: list[Projection],
        target: Target,
        cursor: Any = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> tuple[dict[str, int], bool]:
        """``_run_together``, and whether the group finished together at the head of the log
        (then no projection of it has anything left: the one-projection pass is not needed)."""
        applied = {p.name: 0 for p in group}
        if len(group) < 2:
            return applied, False
        while True:
            try:
                if cursor is not None:
                    moved = self._shared_batch(group, target, cursor, careful=True)
                else:
                    try:
                        with self._transaction(target, pipeline=target.pipeline) as own:
                            moved = self._shared_batch(group, target, own, careful=False)
                    except _Careful:  # rolled back: again, with an event at fault parked
                        with self._transaction(target) as own:
                            moved = self._shared_batch(group, target, own, careful=True)
            except TRANSIENT:
                raise
            except Exception:
                if cursor is not None:
                    raise
                return applied, False  # rolled back; the one-projection path finds out why
            if moved is None:
                return applied, False
            if isinstance(moved, _Done):
                self._together_at = moved.position
                return applied, True
            counts, new, cap, parked, at_head = moved
            for name, count in counts.items():
                applied[name] += count
                if target.positions is not None:
                    target.positions[name] = new
            (target.parked if target.positions is not None else self.parked_now).extend(parked)
            if progress is not None:
                progress("+".join(applied), new, cap)
            if at_head:  # known without another transaction (which would lock and commit)
                self._together_at = new
                return applied, True

    @contextmanager
    def _transaction(self, target: Target, *, pipeline: bool = False) -> Iterator[Any]:
        """A batch's own transaction. Staging batches commit without waiting for the WAL flush,
        and hand their background rows over once committed (see ``_rebuild``)."""
        background = target.background
        if background is not None:
            background.check()
        ran = False
        try:
            durable = target.live and target.durable
            with (
                self.store.pipelined(durable=durable)
                if pipeline
                else self.store.transaction(durable=durable)
            ) as cursor:
                yield cursor
                ran = True
        except BaseException as error:
            if background is not None:
                background.discard()
            if (
                ran
                and pipeline
                and isinstance(error, Exception)
                and not isinstance(error, TRANSIENT)
            ):
                # A write that rode with the COMMIT failed: the batch's error, not the commit's.
                raise _Careful() from error
            raise
        if background is not None:
            background.submit()

    def _shared_batch(
        self, group: list[Projection], target: Target, cursor: Any, *, careful: bool
    ) -> tuple[dict[str, int], int, int, list[Parked], bool] | _Done | None:
        """One batch for the group; None when the positions part, a ``_Done`` when the group
        is together at the head of the log. A batch's result ends with True when it brought
        the group to the head it read.

        Live: the tracking rows are locked and the head read in one statement, the parked
        rows of every projection read in one."""
        store = self.store
        held: dict[str, dict[str, int]] | None = None
        if target.positions is None:
            rows, head = tracking.lock_all(store, cursor, [p.name for p in group])
            starts = {row.position for row in rows.values()}
            if len(rows) != len(group) or len(starts) != 1 or any(r.error for r in rows.values()):
                return None
        else:
            starts = {target.positions[p.name] for p in group}
            if len(starts) != 1:
                return None
            head = store.head(cursor) if target.head is None else target.head
        (start,) = starts
        names = {p.name for p in group}
        cap = head
        for p in group:
            for dependency in p.depends_on:
                if dependency in self.by_name and dependency not in names:
                    cap = min(cap, self._position(cursor, dependency, target))
        if cap <= start:
            return _Done(start) if cap == head else None
        union = frozenset().union(*(p.topics for p in group))
        skip = sorted(set.intersection(*(set(self._skip[p.name]) for p in group)))
        upto = min(cap, start + WINDOW * self.batch_size)
        notes, upto = self._notes(cursor, start, upto, skip, self.batch_size)
        if target.positions is None and notes:
            held = parking.held_rows_all(store, cursor, [p.name for p in group])
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
                held=None if held is None else held[p.name],
            )
            parked += its
        new = notes[-1].position if len(notes) == self.batch_size else upto
        if target.positions is None:
            if parked:
                parking.park(store, cursor, parked)
            with tracking.advancing_together(store, cursor):  # one statement for the group
                for p in group:
                    tracking.advance(store, cursor, p.name, start, new)
        return counts, new, cap, parked, new == cap == head

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
        notes, upto = self._notes(cursor, start, upto, self._skip[name], limit)
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
        held: dict[str, int] | None = None,
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
        if held is None:
            held = self._held(projection, target, cursor) if hold else {}
        else:
            held = dict(held)  # this batch adds to it
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
        """The notes' lean values, in order. A compact state of its class's current version
        (most of the log: YearResultRecorded) is decoded inline, straight into the lean
        type (``Projection.fast``); anything else, or anything that fails there, goes
        through ``projection.decode``, which decodes it as always and names an error."""
        events: list[Decoded] = []
        add, decode, topics = events.append, projection.decode, projection.topics
        saved, builders, fast = self._saved, projection.builders, projection.fast
        for note in notes:
            topic = note.topic
            if topic not in topics:
                if is_event_topic(topic):  # an event class added since we started
                    self._skip[projection.name].append(topic)
                    continue
                raise UnhandledEvent(note, "its topic names no event class this code knows")
            if saved:
                event = saved.get(note.position)
                built = builders.get(topic) if event is not None else None
                if built is not None:  # saved by this process: the value without decoding
                    add(Decoded(note.position, built[0], built[1](event)))
                    continue
            compact = fast.get(topic)
            if compact is not None:
                state = note.state
                if state[:1] != b"{":  # compact (codec.is_compact), not named JSON
                    cls, (row_decode, build, version) = compact
                    try:
                        row = row_decode(state)
                        if row.class_version == version:
                            value = build(row, note.originator_id, note.originator_version)
                            add(_decoded((note.position, cls, value)))
                            continue
                    except Exception:  # decoded again below, which names the error
                        pass
            add(decode(note))
        return events

    def _cap(self, cursor: Any, projection: Projection, target: Target) -> int:
        """How far the projection may go: the head, and no further than what it depends on."""
        cap = self.store.head(cursor) if target.head is None else target.head
        for dependency in projection.depends_on:
            if dependency not in self.by_name:
                continue
            if target.positions is not None and dependency in target.positions:
                cap = min(cap, target.positions[dependency])
            else:
                cap = min(cap, tracking.position(self.store, cursor, dependency))
        return cap
