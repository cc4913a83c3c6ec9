"""The projections of one ledger database: ``Projector`` and the list of projections.

Projector holds the state (a connection, the projections, their names) and sets the tables up;
each of its jobs has a module of its own:

- catching up, exactly once, with parking (projections/catchup.py);
- rebuilding from position 0, blue/green (projections/rebuild.py);
- following the log in a process (projections/follower.py, beside the standby/leader logic);
- read your writes after each save (projections/keep_current.py).

Status, parked events (retry, skip, audit) and checksums are here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from infrastructure.settings import Database, resolve_database
from projections import parking, tracking
from projections.base import Projection
from projections.catchup import (
    DEFAULT_BATCH,
    LIVE,
    STAGING,
    TRANSIENT,
    WINDOW,
    ProjectionsStopped,
    ProjectionStopped,
    Target,
)
from projections.checksum import table_checksum
from projections.decoding import known_events
from projections.experiments import ExperimentsProjection
from projections.follower import FollowLoop
from projections.keep_current import keep_current
from projections.parking import Parked, describe
from projections.rebuild import Rebuild, RebuildBusy
from projections.results import ResultsProjection
from projections.runs import RunsProjection
from projections.store import Note, Store
from projections.tables import Table, create_index_sql, create_table_sql
from projections.twins import TwinsProjection

__all__ = [
    "DEFAULT_BATCH",
    "LIVE",
    "PROJECTIONS",
    "STAGING",
    "TRANSIENT",
    "WINDOW",
    "ProjectionStatus",
    "ProjectionStopped",
    "ProjectionsStopped",
    "Projector",
    "RebuildBusy",
    "Retried",
    "Target",
    "describe",
    "keep_current",
]

PROJECTIONS: tuple[type[Projection], ...] = (
    TwinsProjection,
    RunsProjection,
    ResultsProjection,
    ExperimentsProjection,
)
"""Every projection, in dependency order (a projection comes after those it depends on)."""


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


class Projector(Rebuild, FollowLoop):
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
        self._memory: list[Note] = []  # events this process saved, to project (catchup.py)
        self._saved: dict[int, Any] = {}
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
