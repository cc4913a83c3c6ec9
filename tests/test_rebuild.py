"""Rebuilds: identical tables, blue/green swap, safe to interrupt, one at a time."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from domain.values import RunStatus
from infrastructure.application import TwinLedger
from projections import queries, tracking
from projections.runner import Projector, RebuildBusy
from projections.store import Store
from tests.projection_scenario import build, projector


def _insert_stray_twin(p: Projector) -> None:
    """A change no event explains, as a buggy script writing to the read tables would make."""
    with p.store.transaction() as cursor:
        cursor.execute(
            p.store.sql(
                "UPDATE {t} SET name = 'edited by hand' WHERE name = 'Mars A'", t="digital_twins"
            )
        )


def test_a_rebuild_gives_row_for_row_identical_tables(ledger: TwinLedger) -> None:
    build(ledger)
    with projector(ledger, batch_size=7) as p:
        p.catch_up()
        before = p.checksums()
        assert before["digital_twins"][0] == 4
        assert before["simulation_runs"][0] == 4
        assert before["simulation_results"][0] > 20
        applied = p.rebuild()
        assert set(applied) == {"twins", "runs", "results", "experiments"}
        assert p.checksums() == before
        assert {row.position for row in p.status()} == {ledger.event_count()}
    with projector(ledger, batch_size=1000) as p:
        p.rebuild()
        assert p.checksums() == before


def test_a_rebuild_replaces_rows_no_event_explains(ledger: TwinLedger) -> None:
    build(ledger)
    with projector(ledger) as p:
        p.catch_up()
        before = p.checksums()
        _insert_stray_twin(p)
        assert p.checksums()["digital_twins"] != before["digital_twins"]
        p.rebuild(["twins"])
        assert p.checksums() == before
        assert "Mars A" in {row["name"] for row in queries.twins(p.store)}


def test_rebuilding_a_projection_rebuilds_those_that_depend_on_it(ledger: TwinLedger) -> None:
    build(ledger)
    with projector(ledger) as p:
        p.catch_up()
        before = p.checksums()
        _insert_stray_twin(p)
        edited = p.checksums()["digital_twins"]
        assert set(p.rebuild(["runs"])) == {"runs", "results", "experiments"}
        assert set(p.rebuild(["simulation_results"])) == {"results"}
        after = p.checksums()
        assert after["digital_twins"] == edited  # twins was not rebuilt
        assert after["simulation_runs"] == before["simulation_runs"]
        assert after["simulation_results"] == before["simulation_results"]
        with pytest.raises(KeyError, match="no projection 'nope'"):
            p.rebuild(["nope"])


def test_an_interrupted_rebuild_leaves_the_live_tables_alone(
    ledger: TwinLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(ledger)
    with projector(ledger, batch_size=5) as p:
        p.catch_up()
        before, positions = p.checksums(), [row.position for row in p.status()]

        def interrupted(*args: Any, **kwargs: Any) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(Projector, "_swap", interrupted)
        with pytest.raises(KeyboardInterrupt):
            p.rebuild()
        assert p.checksums() == before
        assert [row.position for row in p.status()] == positions
        with p.store.reading() as cursor:
            assert p.store.table_exists(cursor, "simulation_results__rebuild")  # left behind
        monkeypatch.undo()

        p.rebuild()  # drops the leftovers first
        assert p.checksums() == before
        with p.store.reading() as cursor:
            assert not p.store.table_exists(cursor, "simulation_results__rebuild")
            assert p.store.table_exists(cursor, "simulation_results")


def test_events_written_during_a_rebuild_are_in_the_new_tables(
    ledger: TwinLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = build(ledger)
    original = Projector._swap

    def write_then_swap(self: Projector, *args: Any) -> None:
        ledger.cancel_run(s.running, reason="during the rebuild")
        original(self, *args)

    with projector(ledger) as p:
        p.catch_up()
        monkeypatch.setattr(Projector, "_swap", write_then_swap)
        p.rebuild()
        monkeypatch.undo()
        assert {row.position for row in p.status()} == {ledger.event_count()}
        runs = {row["id"]: row for row in queries.runs(p.store)}
        assert runs[str(s.running)]["status"] == RunStatus.CANCELLED
        rebuilt = p.checksums()
        p.rebuild()
        assert p.checksums() == rebuilt


def test_a_changed_table_definition_is_rebuilt_on_the_next_catch_up(ledger: TwinLedger) -> None:
    build(ledger)
    with projector(ledger) as p:
        p.catch_up()
        before = p.checksums()
        with p.store.transaction() as cursor:
            cursor.execute(
                p.store.sql(
                    "UPDATE {t} SET schema_version = 'older' WHERE projection_name = 'runs'",
                    t=tracking.TABLE,
                )
            )
        assert [row.current_schema for row in p.status()] == [True, False, True, True]
    with projector(ledger) as p:
        _insert_stray_twin(p)
        p.catch_up()
        assert all(row.current_schema for row in p.status())
        after = p.checksums()
        assert after["simulation_runs"] == before["simulation_runs"]
        assert after["digital_twins"] != before["digital_twins"]  # twins was not rebuilt


def test_only_one_rebuild_at_a_time(ledger: TwinLedger) -> None:
    build(ledger)
    with projector(ledger) as first, projector(ledger) as second:
        first.prepare()
        with first._rebuild_lock(), pytest.raises(RebuildBusy):
            second.rebuild()
        second.rebuild()


def test_readers_never_see_empty_or_half_built_tables(ledger: TwinLedger) -> None:
    build(ledger)
    with projector(ledger, batch_size=3) as p:
        p.catch_up()
        expected = {name: rows for name, (rows, _) in p.checksums().items()}
        assert p.database is not None
        seen: list[dict[str, int]] = []
        problems: list[BaseException] = []
        done = threading.Event()

        def read() -> None:
            reader = Store(p.database)
            try:
                while not done.is_set():
                    counts = {}
                    for table in expected:
                        with reader.reading() as cursor:
                            cursor.execute(reader.sql("SELECT count(*) FROM {t}", t=table))
                            counts[table] = cursor.fetchone()[0]
                    seen.append(counts)
            except BaseException as error:  # pragma: no cover - reported below
                problems.append(error)
            finally:
                reader.close()

        thread = threading.Thread(target=read)
        thread.start()
        try:
            for _ in range(3):
                p.rebuild()
        finally:
            done.set()
            thread.join(timeout=30)
        assert problems == []
        assert len(seen) > 3
        assert all(counts == expected for counts in seen)


def test_a_follower_keeps_going_across_a_rebuild_made_elsewhere(ledger: TwinLedger) -> None:
    """A long-lived projector (prepared statements, open connection) survives a table swap."""
    s = build(ledger)
    with projector(ledger, batch_size=2) as follower, projector(ledger) as rebuilder:
        follower.catch_up()  # many small batches: psycopg has prepared its statements
        rebuilder.rebuild()
        ledger.cancel_run(s.running, reason="after the swap")
        follower.catch_up()
        runs = {row["id"]: row for row in queries.runs(follower.store)}
        assert runs[str(s.running)]["status"] == RunStatus.CANCELLED
        caught_up = follower.checksums()
        rebuilder.rebuild()
        assert rebuilder.checksums() == caught_up


def test_a_catch_up_waiting_on_a_position_the_swap_sets_goes_on_from_it(
    ledger: TwinLedger,
) -> None:
    """PostgreSQL: a one-projection catch-up in another process waits for the row lock the
    rebuild's swap holds on the projection's position. The swap sets the position anew
    (``tracking.put_all``); once it commits, the waiting catch-up must read the new row and
    go on from it, not find no row at all (a row deleted and inserted again is, to a
    statement waiting on the old one, gone)."""
    build(ledger)
    with projector(ledger) as swapping, projector(ledger) as other:
        if not swapping.store.postgres:
            return  # SQLite: BEGIN IMMEDIATE serialises the two transactions whole
        swapping.prepare()
        other.prepare()
        name = next(p.name for p in other.projections if len(other.resolve([p.name])) == 1)
        version = other.by_name[name].schema_version
        errors: list[BaseException] = []
        positions: dict[str, int] = {}
        store = swapping.store
        with store.transaction() as cursor:
            tracking.put_all(store, cursor, [(name, 0, version)])  # as the swap does, locked

            def catch_up() -> None:
                try:
                    positions.update(other.catch_up([name]))
                except BaseException as error:  # reported below
                    errors.append(error)

            thread = threading.Thread(target=catch_up)
            thread.start()
            waiting = False
            while not waiting and thread.is_alive():  # the catch-up waits for our row lock
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
                    " AND wait_event_type = 'Lock'",
                    (other.store.pg.info.backend_pid,),
                )
                waiting = cursor.fetchone()[0] == 1
                threading.Event().wait(0.02)
            assert waiting
        thread.join(timeout=60)
        assert errors == []
        assert positions == {name: ledger.event_count()}
