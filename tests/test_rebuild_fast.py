"""The fast rebuild on PostgreSQL (foreign keys after the load, rows inserted by a background
writer) gives the same tables, constraints and stops as the exact one, and cleans up after itself.

On SQLite every rebuild is the exact one; these tests then check the same outcomes.
"""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent

from infrastructure.application import TwinLedger
from infrastructure.codec import named_state
from projections.results import ResultsProjection
from projections.runner import Projector
from tests.projection_scenario import build, projector

YEAR_TOPIC = "domain.run:YearResultRecorded"


def _spy_on_rebuilds(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record the ``fast`` flag of each staging load a rebuild makes."""
    loads: list[bool] = []
    original = Projector._rebuild

    def spy(self: Projector, *args: Any, fast: bool) -> dict[str, int]:
        loads.append(fast)
        return original(self, *args, fast=fast)

    monkeypatch.setattr(Projector, "_rebuild", spy)
    return loads


def _definitions(p: Projector) -> dict[str, list[tuple[str, str, str]]]:
    """Each live table's constraints and indexes as PostgreSQL describes them, fully sorted.

    A primary key is both a constraint and an index of the same name: sorted by name alone,
    the two rows came in either order. (kind, name, definition) is a total order."""
    found: dict[str, list[tuple[str, str, str]]] = {}
    with p.store.reading() as cursor:
        for projection in p.projections:
            for table in projection.tables:
                cursor.execute(
                    "SELECT 'constraint', conname, pg_get_constraintdef(c.oid) FROM pg_constraint c"
                    " JOIN pg_class t ON t.oid = c.conrelid"
                    " JOIN pg_namespace n ON n.oid = t.relnamespace"
                    " WHERE n.nspname = %s AND t.relname = %s"
                    " UNION ALL SELECT 'index', indexname, indexdef FROM pg_indexes"
                    " WHERE schemaname = %s AND tablename = %s",
                    (p.store.schema, table.name, p.store.schema, table.name),
                )
                found[table.name] = sorted(
                    (str(kind), str(name), str(sql)) for kind, name, sql in cursor.fetchall()
                )
    return found


def _first_year_of(ledger: TwinLedger, run_id: UUID) -> int:
    notes = ledger.recorder.select_notifications(start=1, limit=10_000)
    return min(n.id for n in notes if str(n.originator_id) == str(run_id) and n.topic == YEAR_TOPIC)


def test_a_rebuild_keeps_every_constraint_and_index(
    ledger: TwinLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(ledger)
    loads = _spy_on_rebuilds(monkeypatch)
    with projector(ledger) as p:
        p.catch_up()  # tables created with their keys up front
        before = p.checksums()
        definitions = _definitions(p) if p.store.postgres else {}
        p.rebuild()
        assert p.checksums() == before
        assert loads == [p.store.postgres]
        if p.store.postgres:
            assert _definitions(p) == definitions
            assert any(
                kind == "constraint" and sql.startswith("FOREIGN KEY")
                for rows in definitions.values()
                for kind, _, sql in rows
            )
            with p.store.reading() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_tables WHERE schemaname = %s"
                    " AND tablename LIKE '%%rebuild'",
                    (p.store.schema,),
                )
                assert cursor.fetchone()[0] == 0


def test_a_row_the_staging_table_refuses_is_parked_in_the_new_generation(
    ledger: TwinLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second YearResultRecorded for a year already recorded: the results row collides.

    On PostgreSQL the background writer's COPY fails; the rebuild loads again the exact way,
    which parks the event, like a catch-up does, and swaps the parked rows in with the tables."""
    s = build(ledger)
    stored = ledger.recorder.select_events(s.completed)
    third = next(
        e
        for e in stored
        if e.topic == YEAR_TOPIC
        and named_state(e.topic, e.state, e.originator_id, e.originator_version)["year"] == 3
    )
    ledger.recorder.insert_events(
        [StoredEvent(s.completed, stored[-1].originator_version + 1, YEAR_TOPIC, third.state)]
    )
    duplicate = ledger.event_count()
    with projector(ledger) as p:
        p.catch_up()
        before = p.checksums()
        parked = [(r.projection, r.position, r.error_class) for r in p.parked()]
        assert [(name, position) for name, position, _ in parked] == [("results", duplicate)]
        assert parked[0][2] in ("IntegrityError", "UniqueViolation")

    loads = _spy_on_rebuilds(monkeypatch)
    with projector(ledger) as p:
        p.rebuild()
        assert loads == ([True, False] if p.store.postgres else [False])
        assert p.checksums() == before
        assert [(r.projection, r.position, r.error_class) for r in p.parked()] == parked
        assert {row.position for row in p.status()} == {duplicate}


def test_rows_without_their_parent_are_parked_by_the_rebuild_from_the_first_one(
    ledger: TwinLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """simulation_runs lost a run by hand: rebuilding results alone finds its rows orphaned.

    On PostgreSQL the foreign key added after the load refuses them; the rebuild loads again
    with the key checked row by row, which parks the run's first result and holds the others
    behind it."""
    s = build(ledger)
    with projector(ledger) as p:
        p.catch_up()
        with p.store.transaction() as cursor:
            for table in ("simulation_results", "simulation_runs"):
                column = "run_id" if table == "simulation_results" else "id"
                cursor.execute(
                    p.store.sql(f"DELETE FROM {{t}} WHERE {column} = %s", t=table),
                    (p.store.uuid(s.failed),),
                )
        before = p.checksums()
    first = _first_year_of(ledger, s.failed)

    loads = _spy_on_rebuilds(monkeypatch)
    with projector(ledger) as p:
        p.rebuild(["results"])
        (orphan, *held) = p.parked()
        assert (orphan.projection, orphan.position) == ("results", first)
        assert orphan.error_class in ("IntegrityError", "ForeignKeyViolation")
        assert len(held) == 2 and {row.error_class for row in held} == {"Held"}
        assert loads == ([True, False] if p.store.postgres else [False])
        assert p.checksums() == before


def test_an_interrupted_load_stops_the_background_writer(
    ledger: TwinLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(ledger)
    original = ResultsProjection.apply
    calls = {"n": 0}

    def interrupted(self: ResultsProjection, batch: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        original(self, batch)

    with projector(ledger, batch_size=5) as p:
        p.catch_up()
        before = p.checksums()
        monkeypatch.setattr(ResultsProjection, "apply", interrupted)
        with pytest.raises(KeyboardInterrupt):
            p.rebuild()
        assert calls["n"] == 3
        assert not [t for t in threading.enumerate() if t.name == "twinledger-bulk"]
        assert p.checksums() == before
        monkeypatch.undo()
        p.rebuild()
        assert p.checksums() == before


def test_reading_the_log_leaves_the_planner_settings_as_they_were(ledger: TwinLedger) -> None:
    build(ledger)
    with projector(ledger) as p:
        store = p.store
        with store.reading() as cursor:
            notes = store.notes(cursor, 0, ledger.event_count(), [], 1000)
            assert [n.position for n in notes] == list(range(1, ledger.event_count() + 1))
            if store.postgres:
                cursor.execute(
                    "SELECT current_setting('enable_bitmapscan'), current_setting('enable_seqscan')"
                )
                assert cursor.fetchone() == ("on", "on")


def test_a_failed_log_read_raises_its_own_error(ledger: TwinLedger) -> None:
    """The planner settings are set back only after a successful read: after an error the
    transaction is aborted, and setting them back would raise another error in its place."""
    build(ledger)
    with projector(ledger) as p:
        store = p.store
        if not store.postgres:
            return
        store._events_select[()] = store.sql(
            "SELECT * FROM {t} WHERE %s < %s AND %s IS NOT NULL AND %s > 0", t="no_such_table"
        )
        with pytest.raises(psycopg.errors.UndefinedTable), store.reading() as cursor:
            store.notes(cursor, 0, 10, [], 10)
        del store._events_select[()]
        with store.reading() as cursor:  # the connection is fine, the settings as they were
            assert len(store.notes(cursor, 0, 10, [], 10)) == 10
            cursor.execute(
                "SELECT current_setting('enable_bitmapscan'), current_setting('enable_seqscan')"
            )
            assert cursor.fetchone() == ("on", "on")
