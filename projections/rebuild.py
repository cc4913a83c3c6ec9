"""Rebuilding projections from position 0, blue/green.

New tables are built under staging names from position 0 in committed batches, without
touching the live ones (which keep being caught up meanwhile). Then one transaction locks the
projections' tracking rows, catches the staging tables up to the head, drops the live tables,
renames the staging ones (and their constraints and indexes) in, and writes the new positions.
Readers see the old tables or the new ones, never an empty or half-built one; interrupting a
rebuild at any moment leaves the live tables as they were, and the next rebuild drops the
leftover staging tables first. Rebuilding a projection rebuilds the projections that depend on
it too, because their foreign keys point at its tables.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from infrastructure import gcpause
from projections import parking, tracking
from projections.background import BackgroundFailed, BackgroundWriter
from projections.base import Projection
from projections.catchup import STAGING, TRANSIENT, CatchUp, Target
from projections.tables import Table, add_foreign_key_sql, index_names


class RebuildBusy(Exception):
    """Another rebuild of these tables is under way."""


class _OrphanRows(Exception):
    """A foreign key added after a rebuild's load found rows without their parent row."""


class Rebuild(CatchUp):
    """Rebuilding, a part of ``Projector`` (projections/runner.py)."""

    if TYPE_CHECKING:
        _prepared: bool

        def closure(self, names: Sequence[str] | None) -> list[Projection]: ...

        def _ensure(self) -> list[str]: ...

        def _create(
            self,
            cursor: Any,
            table: Table,
            physical: str,
            *,
            indexes: bool,
            references: dict[str, str] | None = None,
            foreign_keys: bool = True,
        ) -> None: ...

        def _create_indexes(self, cursor: Any, table: Table, physical: str) -> None: ...

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
            with store.script(cursor) as script:  # one round trip on PostgreSQL
                for p in reversed(targets):
                    for table in reversed(p.tables):
                        store.drop_table(script, staging[table.name])
                for p in targets:
                    for table in p.tables:
                        self._create(
                            script,
                            table,
                            staging[table.name],
                            indexes=store.postgres,
                            references=staging,
                            foreign_keys=not fast,
                        )
            target.head = store.head(cursor)  # the load's end; the swap does the rest
        background = BackgroundWriter(self.database) if fast else None
        target.background = background
        target.pipeline = fast  # the load's batches in pipeline mode (Store.pipelined)
        try:
            applied = {p.name: 0 for p in targets}
            store.restore_planner = False  # Store.notes: loading batches need not
            # Every batch commits without waiting for the WAL flush: the session's way for
            # the load, not a SET LOCAL per batch (Store.committing_asynchronously).
            with gcpause.eased(), store.committing_asynchronously():
                while True:  # to the head read when the load began, then to the one after
                    counts, finished = self._together(targets, target, progress=progress)
                    for name, count in counts.items():
                        applied[name] += count
                    for p in targets if not finished else ():  # what the shared pass left
                        applied[p.name] += self._build(p, target, progress)
                    head = store.head_once()
                    if (
                        target.head is None or head <= target.head
                    ):  # little left for the swap, under its lock
                        break
                    target.head = head
                if background is not None:
                    background.finish()  # every row committed before keys and swap
        finally:
            store.restore_planner = True
            target.background = None
            target.head = None
            target.pipeline = False
            if background is not None:
                background.abandon()
        if fast:  # each foreign key checked once over the loaded rows
            with store.transaction(durable=False) as cursor:
                self._add_foreign_keys(cursor, targets, staging)
        self._swap(targets, target, applied)
        return applied

    def _add_foreign_keys(
        self, cursor: Any, targets: list[Projection], staging: dict[str, str]
    ) -> None:
        try:
            with self.store.script(cursor) as script:  # one round trip on PostgreSQL
                for p in targets:
                    for table in p.tables:
                        for fk in table.foreign_keys:
                            statement = add_foreign_key_sql(
                                fk,
                                staging[table.name],
                                schema=self.store.schema,
                                references=staging,
                            )
                            script.execute(self.store.raw(statement))
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
            # Dependency order, the same in every process: no deadlock. The head comes with
            # the locks; the swap catches the staging tables up to it.
            _, target.head = tracking.lock_all(store, cursor, [p.name for p in targets])
            try:
                counts, finished = self._together(targets, target, cursor)
            finally:
                target.head = None
            for name, count in counts.items():
                applied[name] += count
            for p in targets if not finished else ():
                applied[p.name] += self._run(p, target, cursor)
            with store.script(cursor) as script:  # one round trip on PostgreSQL
                for p in reversed(targets):
                    for table in reversed(p.tables):
                        store.drop_table(script, table.name)
                for p in targets:
                    for table in p.tables:
                        self._rename(script, table, target.physical[table.name])
            # The new generation's parked events replace the old ones (a skip carries over).
            parking.replace_all(store, cursor, [p.name for p in targets], target.parked)
            tracking.put_all(
                store,
                cursor,
                [(p.name, target.positions[p.name], p.schema_version) for p in targets],
            )

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
                # A closed session has released its lock already; unlocking would raise and
                # hide the error that closed it.
                if not store.pg.closed:
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
