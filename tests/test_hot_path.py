"""The write path's shortcuts (branch ``hotpath``, docs/performance.md) give exactly what the
plain definitions give: the year events record_year makes, the SQLite event rows and their
notification ids, and the results projection's binary COPY stream."""

from __future__ import annotations

import gc
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import msgspec
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

from domain.catalog import CATALOG
from domain.engine import Simulation
from domain.run import SimulationRun, YearResultRecorded
from domain.values import Pattern, RunParameters
from infrastructure import gcpause
from infrastructure.application import run_inputs
from infrastructure.codec import MsgspecMapper, NullTranscoder
from infrastructure.settings import resolve_database
from infrastructure.sqlite_events import ManySQLiteRecorder, RowidsNotConsecutive
from projections import tracking
from projections.base import Batch
from projections.decoding import Decoded
from projections.results import (
    COLUMNS,
    COPY_KINDS,
    SIMULATION_RESULTS,
    ResultsProjection,
    copy_stream,
    result_rows,
)
from projections.runner import Projector
from projections.store import Store
from projections.tables import create_table_sql
from tests.conftest import fresh_postgres_url

BUDGET = 1_000_000_000_000
MOMENT = datetime(2026, 11, 29, 21, 58, 43, 123457, tzinfo=UTC)


def _run(years: int = 0) -> SimulationRun:
    run = SimulationRun.queue(
        twin_id=uuid4(),
        source_body="mars",
        twin_state=CATALOG["mars"].state,
        pattern=Pattern.MARS_TERRAFORM,
        duration_years=max(years, 1),
        parameters=RunParameters(budget_cents=BUDGET),
        seed=7,
        engine_version="test",
        initiated_by="test",
    )
    run.start()
    return run


def _years_events(years: int) -> list[YearResultRecorded]:
    run = _run(years)
    simulation = Simulation(run_inputs(run))
    for _ in range(years):
        run.record_year(simulation.step())
    events = [e for e in run.collect_events() if isinstance(e, YearResultRecorded)]
    assert any(e.key_events for e in events) and not all(e.key_events for e in events)
    return events


# --- record_year --------------------------------------------------------------------------------


def test_record_year_makes_the_event_trigger_event_makes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same event (every field, the stored bytes), and the aggregate left in the same state
    (version, modified_on, years_recorded), as the library's trigger_event."""
    monkeypatch.setattr(YearResultRecorded, "create_timestamp", staticmethod(lambda: MOMENT))
    lean, plain = _run(3), _run(3)
    simulation = Simulation(run_inputs(lean))
    mapper = MsgspecMapper(transcoder=NullTranscoder())
    for _ in range(3):
        result = simulation.step()
        lean.record_year(result)
        plain.trigger_event(
            YearResultRecorded,
            year=result.year,
            economic=result.economic,
            environment=result.environment,
            key_events=result.key_events,
        )
    for got, expected in zip(lean.collect_events(), plain.collect_events(), strict=True):
        if not isinstance(expected, YearResultRecorded):
            continue
        expected = msgspec.structs.replace(expected, originator_id=lean.id)
        assert got == expected
        assert mapper.to_stored_event(got).state == mapper.to_stored_event(expected).state
    assert (lean.version, lean.modified_on, lean.years_recorded) == (
        plain.version,
        plain.modified_on,
        plain.years_recorded,
    )


# --- SQLite: the event rows of a save -----------------------------------------------------------


def _recorder(cls: type[SQLiteApplicationRecorder], path: Path) -> SQLiteApplicationRecorder:
    recorder = cls(SQLiteDatastore(str(path)))
    recorder.create_table()
    return recorder


def _stored(count: int, start: int = 1) -> list[StoredEvent]:
    first, second = uuid4(), uuid4()
    events = [
        StoredEvent(first, start + i, "domain.run:YearResultRecorded", bytes([i % 256]) * (i + 1))
        for i in range(count)
    ]
    return [*events, StoredEvent(str(second), 1, "domain.run:RunQueued", b"{}")]


def _rows(path: Path) -> list[Any]:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT rowid, * FROM stored_events ORDER BY rowid").fetchall()


@pytest.mark.parametrize("sizes", [(1,), (5, 1, 300), (2, 40)])
def test_sqlite_rows_and_ids_equal_the_librarys(tmp_path: Path, sizes: tuple[int, ...]) -> None:
    """Saves of one event and of many (UUID and text ids): the same rows, rowids and returned
    notification ids as the library's one-execute-per-event loop."""
    ours = _recorder(ManySQLiteRecorder, tmp_path / "ours.db")
    theirs = _recorder(SQLiteApplicationRecorder, tmp_path / "theirs.db")
    version = 1
    for size in sizes:
        batch = _stored(size, version)
        version += size
        assert ours.insert_events(batch) == theirs.insert_events(batch)
    one = [StoredEvent(uuid4(), 1, "domain.run:RunStarted", b"{}")]  # a save of one event
    assert ours.insert_events(one) == theirs.insert_events(one)
    assert _rows(tmp_path / "ours.db") == _rows(tmp_path / "theirs.db")


def test_sqlite_a_conflicting_save_writes_nothing(tmp_path: Path) -> None:
    ours = _recorder(ManySQLiteRecorder, tmp_path / "ours.db")
    batch = _stored(3)
    ours.insert_events(batch)
    before = _rows(tmp_path / "ours.db")
    clash = [StoredEvent(uuid4(), 1, "t", b"new"), *batch[1:2], StoredEvent(uuid4(), 1, "t", b"")]
    with pytest.raises(IntegrityError):
        ours.insert_events(clash)
    assert _rows(tmp_path / "ours.db") == before


def test_sqlite_ids_that_would_not_be_consecutive_write_nothing(tmp_path: Path) -> None:
    """At SQLite's largest rowid new rows get random rowids: the save refuses rather than
    return positions that are not the rows'."""
    ours = _recorder(ManySQLiteRecorder, tmp_path / "ours.db")
    with sqlite3.connect(tmp_path / "ours.db") as connection:
        connection.execute(
            "INSERT INTO stored_events (rowid, originator_id, originator_version, topic, state)"
            " VALUES (9223372036854775807, 'x', 1, 't', x'')"
        )
    before = _rows(tmp_path / "ours.db")
    with pytest.raises(RowidsNotConsecutive):
        ours.insert_events(_stored(20))
    assert _rows(tmp_path / "ours.db") == before


# --- results: the binary COPY stream ------------------------------------------------------------


@pytest.mark.postgres
def test_the_results_copy_stream_writes_the_rows_psycopg_writes() -> None:
    """simulation_results written from ``copy_stream`` equal those psycopg's write_row writes
    from ``result_rows`` (the background writer's path), for two runs' years, key events or
    none, built from the events as keep_current builds them."""
    projection = ResultsProjection()
    topic = next(iter(projection.builders))
    build = projection.builders[topic][1]
    decoded = [
        Decoded(position, YearResultRecorded, build(event))
        for position, event in enumerate([*_years_events(120), *_years_events(30)], start=1)
    ]
    with fresh_postgres_url() as url:
        _compare_stream_with_rows(url, decoded)


def _compare_stream_with_rows(url: str, decoded: list[Decoded]) -> None:
    store = Store(resolve_database(url))
    try:
        with store.transaction() as cursor:
            cursor.execute(store.raw(f'CREATE SCHEMA IF NOT EXISTS "{store.schema}"'))
            for name in ("by_rows", "by_stream"):
                ddl = create_table_sql(SIMULATION_RESULTS, name, postgres=True, schema=store.schema)
                lines = ddl.splitlines()  # without the foreign key (no runs table here)
                cursor.execute(store.raw("\n".join(x for x in lines if "FOREIGN KEY" not in x)))
        with store.transaction() as cursor:
            store.bulk_insert(
                cursor, "by_rows", COLUMNS, result_rows(decoded, postgres=True), COPY_KINDS
            )
            Batch(store, cursor, {SIMULATION_RESULTS.name: "by_stream"}, decoded).copy_binary(
                SIMULATION_RESULTS.name, COLUMNS, copy_stream(decoded)
            )
        with store.transaction() as cursor:
            tables = []
            for name in ("by_rows", "by_stream"):
                cursor.execute(
                    store.sql(
                        "SELECT run_id, year, result_type, data::text, created_at FROM {t}"
                        " ORDER BY run_id, year, result_type",
                        t=name,
                    )
                )
                tables.append(cursor.fetchall())
        assert len(tables[0]) > 2 * len(decoded)  # timeline rows too
        assert tables[0] == tables[1]
    finally:
        store.close()


# --- the collector paused during saves ----------------------------------------------------------


def test_a_save_and_its_hooks_run_with_the_collector_paused(ledger: Any) -> None:
    seen: list[bool] = []
    ledger.after_write.append(lambda: seen.append(gc.isenabled()))
    assert gc.isenabled()
    ledger.clone_twin(name="gc", body="mars", created_by="test")
    assert seen == [False]
    assert gc.isenabled()


def test_paused_restores_what_it_found_and_nests_across_threads() -> None:
    assert gc.isenabled()
    inside = threading.Event()
    release = threading.Event()

    def other() -> None:
        with gcpause.paused():
            inside.set()
            release.wait(10)

    with gcpause.paused():
        assert not gc.isenabled()
        thread = threading.Thread(target=other)
        thread.start()
        assert inside.wait(10)
    assert not gc.isenabled()  # the other thread's save is still running
    release.set()
    thread.join(10)
    assert gc.isenabled()
    gc.disable()
    try:
        with gcpause.paused():
            pass
        assert not gc.isenabled()  # never turned on a collector someone turned off
    finally:
        gc.enable()
    with pytest.raises(RuntimeError), gcpause.paused():
        raise RuntimeError("a failed save")
    assert gc.isenabled()


# --- catching up: the positions a finished shared pass committed --------------------------------


def test_a_catch_up_that_ends_together_does_not_read_its_positions_back(
    ledger: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger.clone_twin(name="p", body="mars", created_by="test")
    calls: list[int] = []
    original = tracking.behind

    def behind(store: Any, names: Any) -> Any:
        calls.append(1)
        return original(store, names)

    monkeypatch.setattr(tracking, "behind", behind)
    with Projector.open(database_url) as projector:
        positions = projector.catch_up()
        assert len(calls) == 1  # the idle check only
        monkeypatch.setattr(tracking, "behind", original)
        assert positions == tracking.behind(projector.store, list(positions))[0]
        head = tracking.behind(projector.store, list(positions))[1]
        assert head > 0 and set(positions.values()) == {head}
        assert projector.catch_up() == positions


def test_a_catch_up_right_after_a_save_skips_the_idle_check(
    ledger: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events this projector remembers (saved here since its last catch-up) are there to
    apply: no idle check first. Found at the head anyway (another projector applied them),
    the positions are still the head's, and memory is emptied."""
    calls: list[int] = []
    original = tracking.behind

    def behind(store: Any, names: Any) -> Any:
        calls.append(1)
        return original(store, names)

    with Projector.open(database_url) as projector, Projector.open(database_url) as other:
        projector.catch_up()
        ledger.after_write.append(lambda: projector.remember(ledger.last_recordings))
        ledger.clone_twin(name="p", body="mars", created_by="test")
        monkeypatch.setattr(tracking, "behind", behind)
        positions = projector.catch_up()
        assert calls == []
        assert set(positions.values()) == {ledger.event_count()}

        ledger.clone_twin(name="q", body="mars", created_by="test")
        assert other.catch_up() == dict.fromkeys(positions, ledger.event_count())
        assert projector.catch_up() == dict.fromkeys(positions, ledger.event_count())
        assert calls == [1]  # other's idle check; projector's own found the head in its batch
        assert projector.catch_up() == dict.fromkeys(positions, ledger.event_count())
        assert calls == [1, 1]  # nothing remembered now: the idle check again
