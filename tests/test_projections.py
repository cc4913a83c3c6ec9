"""The read tables follow the events, on SQLite and PostgreSQL, and never skip one silently."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import msgspec
import pytest
from eventsourcing.persistence import StoredEvent

from domain.aggregate import Event
from domain.errors import NotFound, ValidationError
from domain.values import RunStatus, TwinStatus
from infrastructure.application import TwinLedger
from projections import queries, tracking
from projections.checksum import canonical_json
from projections.results import SIMULATION_RESULTS
from tests.projection_scenario import (
    build,
    copy_events,
    expected_results,
    projector,
    result_rows,
)


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in rows}


def test_tables_match_the_events_after_a_scenario(ledger: TwinLedger) -> None:
    s = build(ledger)
    with projector(ledger) as p:
        positions = p.catch_up()
        head = ledger.event_count()
        assert positions == {"twins": head, "runs": head, "results": head, "experiments": head}
        store = p.store

        twins = by_id(queries.twins(store))
        assert len(twins) == 4
        mars, venus = twins[str(s.mars)], twins[str(s.venus)]
        assert (mars["status"], mars["run_count"], mars["completed_run_count"]) == (
            TwinStatus.COMPLETED,
            2,
            1,
        )
        assert mars["active_run_count"] == 0 and mars["active_run_ids"] == []
        assert venus["status"] == TwinStatus.RUNNING_SIMULATION
        assert venus["active_run_ids"] == [str(s.running)]
        assert (venus["run_count"], venus["failed_run_count"], venus["last_run_outcome"]) == (
            2,
            1,
            "failed",
        )
        assert venus["description"] == "hot"
        assert venus["expires_at"] == ledger.get_twin(s.venus).expires_at.isoformat(
            timespec="microseconds"
        )
        # Compared canonically (every number a float): jsonb prints large floats as integers.
        assert canonical_json(venus["state"]) == canonical_json(
            msgspec.to_builtins(ledger.get_twin(s.venus).state)
        )
        moon, titan = twins[str(s.moon)], twins[str(s.titan)]
        assert (moon["status"], moon["ended_reason"]) == (TwinStatus.DELETED, "deleted")
        assert (titan["status"], titan["ended_reason"]) == (TwinStatus.DELETED, "expired")
        assert moon["deleted_at"] is not None and mars["deleted_at"] is None
        for twin_id, row in twins.items():
            assert row["status"] == ledger.get_twin(twin_id).status

        runs = by_id(queries.runs(store))
        assert len(runs) == 4
        for run_id, row in runs.items():
            run = ledger.get_run(run_id)
            assert row["status"] == run.status
            assert row["current_year"] == run.years_recorded
            assert row["progress"] == run.progress
            assert row["digital_twin_id"] == str(run.twin_id)
            assert row["seed"] == run.seed and row["budget_cents"] == run.parameters.budget_cents
            assert row["experiment_id"] is None and row["run_purpose"] is None
        done = runs[str(s.completed)]
        summary = ledger.get_run(s.completed).summary
        assert summary is not None
        assert done["progress"] == 1.0 and done["completed_at"] is not None
        assert done["result_digest"] == ledger.get_run(s.completed).result_digest
        assert done["total_spend_cents"] == summary.total_spend_cents
        assert done["habitability_score"] == summary.success_metrics.habitability_score
        assert runs[str(s.cancelled)]["error_message"] == "wrong budget"
        assert runs[str(s.cancelled)]["started_at"] is None
        assert runs[str(s.failed)]["error_message"].startswith("ZeroDivisionError")
        assert runs[str(s.failed)]["progress"] == 0.3
        assert runs[str(s.running)]["status"] == RunStatus.RUNNING
        assert runs[str(s.running)]["completed_at"] is None

        for run_id in (s.completed, s.cancelled, s.failed, s.running):
            assert result_rows(store, run_id) == expected_results(ledger, run_id)
        timeline = queries.results(store, str(s.failed), result_type="timeline")
        assert [
            (row["year"], [e["name"] for e in row["data"]["key_events"]]) for row in timeline
        ] == [(2, ["oxygen_threshold", "first_revenue"])]


def test_catching_up_twice_applies_nothing_twice(ledger: TwinLedger) -> None:
    build(ledger)
    with projector(ledger, batch_size=7) as p:
        p.catch_up()
        first = p.checksums()
        p.catch_up()
        assert p.checksums() == first
        assert first["simulation_results"][0] > 0


def test_sqlite_and_postgres_give_the_same_rows_for_the_same_events(
    ledger: TwinLedger, other_database_url: str
) -> None:
    build(ledger)
    other = TwinLedger.open(other_database_url)
    try:
        assert copy_events(ledger, other) == ledger.event_count()
        with projector(ledger) as here, projector(other, batch_size=50) as there:
            here.catch_up()
            there.catch_up()
            assert here.store.postgres != there.store.postgres
            mine, theirs = here.checksums(), there.checksums()
    finally:
        other.close()
    assert mine == theirs
    assert mine["simulation_results"][0] > 20


def _insert_stored_event(ledger: TwinLedger, topic: str, state: dict[str, Any]) -> int:
    ledger.recorder.insert_events([StoredEvent(uuid4(), 1, topic, msgspec.json.encode(state))])
    return ledger.event_count()


def test_an_unknown_event_is_parked_and_applied_once_its_class_is_known(
    ledger: TwinLedger,
) -> None:
    s = build(ledger)
    with projector(ledger) as p:
        p.catch_up()
        before = p.checksums()
        name = f"TwinRenamed{uuid4().hex[:8]}"  # resolved topics are cached: one per test
        topic = f"{__name__}:{name}"
        bad = _insert_stored_event(ledger, topic, {"name": "x"})
        # Written after the unknown event: applied, the unknown one waits (parked).
        ledger.cancel_run(s.running, reason="stop")
        positions = p.catch_up()
        assert set(positions.values()) == {ledger.event_count()}
        parked = p.parked()
        assert [(row.projection, row.position, row.topic) for row in parked] == [
            (name, bad, topic) for name in ("experiments", "results", "runs", "twins")
        ]
        assert "names no event class" in parked[0].error_message
        assert p.checksums() != before
        assert by_id(queries.runs(p.store))[str(s.running)]["status"] == RunStatus.CANCELLED
        status = {row.name: row for row in p.status()}
        assert {row.parked for row in status.values()} == {1}
        assert all(row.error is None and not row.blocked_by for row in status.values())

        # Recovery: deploy code that knows the event (here, define its class) and retry.
        class TwinRenamed(Event, frozen=True, kw_only=True):
            name: str

        TwinRenamed.__name__ = TwinRenamed.__qualname__ = name
        module = sys.modules[__name__]
        setattr(module, name, TwinRenamed)
        try:
            outcomes = p.retry()
        finally:
            delattr(module, name)
        assert [outcome.applied for outcome in outcomes] == [True] * 4
        assert p.parked() == []
        live = p.checksums()
        p.rebuild()
        assert p.checksums() == live


def test_a_row_the_tables_cannot_take_is_parked_with_the_event_named(
    ledger: TwinLedger,
) -> None:
    """A database error in a bulk write is traced back to the one event that caused it."""
    s = build(ledger)
    with projector(ledger, batch_size=1000) as p:
        p.prepare()
        # Someone wrote a result row by hand: the projection's own row will collide with it.
        with p.store.transaction() as cursor:
            cursor.execute(
                p.store.sql("DELETE FROM {t}", t=tracking.TABLE),
            )
        p._prepared = False
        p.prepare()  # tables recreated empty with the tracking rows
        p.catch_up(["twins", "runs"])
        with p.store.transaction() as cursor:
            cursor.execute(
                p.store.sql(
                    "INSERT INTO {t} (run_id, year, result_type, data, created_at)"
                    " VALUES (%s, 3, 'economic', '{{}}', %s)",
                    t="simulation_results",
                ),
                (p.store.uuid(s.completed), p.store.timestamp(ledger.clock())),
            )
        p.catch_up()
        first, *held = [row for row in p.parked() if row.projection == "results"]
        assert first.error_class in ("IntegrityError", "UniqueViolation")
        assert first.originator_id == str(s.completed)
        assert {row.error_class for row in held} == {"Held"}  # the run's later years wait
        years = [row[0] for row in result_rows(p.store, s.completed)]
        assert years == [1, 1, 2, 2, 3]  # before the bad event, and the hand-written row
        assert result_rows(p.store, s.failed) == expected_results(ledger, s.failed)
        assert {row.name: row.lag for row in p.status()}["results"] == 0


def test_projections_follow_the_log_while_running(ledger: TwinLedger) -> None:
    """`projections run`: LISTEN/NOTIFY on PostgreSQL, polling on SQLite."""
    with projector(ledger) as p:
        p.prepare()
        stop = threading.Event()
        messages: list[str] = []
        follower = threading.Thread(
            target=p.run_forever,
            kwargs={"poll_seconds": 0.05, "stop": stop, "report": messages.append},
        )
        follower.start()
        try:
            twin_id = ledger.clone_twin(name="Europa A", body="europa")
            run_id = ledger.queue_run(
                twin_id, pattern="europa_ocean", duration_years=6, budget_cents=10**12
            )
            ledger.execute_run(run_id, chunk_years=3)
            head = ledger.event_count()
            deadline = time.monotonic() + 10
            with projector(ledger) as reader:
                while time.monotonic() < deadline:
                    if all(row.position == head for row in reader.status()):
                        break
                    time.sleep(0.02)
                statuses = [(row.name, row.position) for row in reader.status()]
                assert statuses == [
                    ("twins", head),
                    ("runs", head),
                    ("results", head),
                    ("experiments", head),
                ]
                assert by_id(queries.runs(reader.store))[str(run_id)]["status"] == "completed"
        finally:
            stop.set()
            follower.join(timeout=10)
        assert not follower.is_alive()
        assert messages == []


def test_concurrent_catch_ups_apply_each_event_once(
    open_ledger: Callable[[], TwinLedger],
) -> None:
    writer = open_ledger()
    s = build(writer)
    errors: list[BaseException] = []

    def catch_up() -> None:
        try:
            with projector(writer, batch_size=5) as p:
                for _ in range(3):
                    p.catch_up()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=catch_up) for _ in range(3)]
    for thread in threads:
        thread.start()
    writer.cancel_run(s.running, reason="while projecting")
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    with projector(writer) as p:
        p.catch_up()
        live = p.checksums()
        p.rebuild()
        assert p.checksums() == live


def test_a_store_of_named_version_1_years_gives_the_same_tables(
    ledger: TwinLedger, other_database_url: str
) -> None:
    """Years stored as version 1 (named JSON, before the compact encoding) and as version 2
    (compact) project to the same rows, on both back ends: the lean decoders read both."""
    build(ledger)
    other = TwinLedger.open(other_database_url)
    topic = "domain.run:YearResultRecorded"
    try:
        position, as_v1 = 0, 0
        while notes := ledger.recorder.select_notifications(
            start=position, limit=500, inclusive_of_start=False
        ):
            events = []
            for n in notes:
                state = n.state
                if n.topic == topic:
                    event = ledger.mapper.to_domain_event(n)
                    assert state[:1] != b"{"  # written compact
                    state = msgspec.json.encode(event)  # exactly what version 1 stored
                    as_v1 += 1
                events.append(StoredEvent(n.originator_id, n.originator_version, n.topic, state))
            other.recorder.insert_events(events)
            position = notes[-1].id
        assert as_v1 > 10
        with projector(ledger) as here, projector(other, batch_size=50) as there:
            here.catch_up()
            there.catch_up()
            mine, theirs = here.checksums(), there.checksums()
            assert not here.parked() and not there.parked()
            run = next(iter(other.completed_run_ids()))
            assert result_rows(here.store, run) == result_rows(there.store, run)
        assert [y for y in other.recorded_years(run)] == [y for y in ledger.recorded_years(run)]
    finally:
        other.close()
    assert mine == theirs


def test_results_and_series_give_the_rows_as_the_generic_reader_does(ledger: TwinLedger) -> None:
    """queries.results reads in bulk (one JSON parse, timestamps formatted by the database):
    the same rows as the generic per-column reader; series gives them as columns."""
    s = build(ledger)
    with projector(ledger) as p:
        p.catch_up()
        store = p.store
        run = str(s.completed)
        generic = queries._select(
            store,
            SIMULATION_RESULTS,
            [("run_id = %s", store.uuid(s.completed))],
            "year, result_type",
        )
        rows = queries.results(store, run)
        assert rows == generic and len(rows) > 10
        assert rows[0]["created_at"].endswith("+00:00")
        some = queries.results(store, run, result_type="economic", from_year=2, to_year=3)
        assert some == [
            r for r in generic if r["result_type"] == "economic" and 2 <= r["year"] <= 3
        ]

        environmental = [r for r in generic if r["result_type"] == "environmental"]
        whole = queries.series(store, run)
        assert whole["run_id"] == run and whole["result_type"] == "environmental"
        assert whole["years"] == [r["year"] for r in environmental]
        assert set(whole["values"]) == set(environmental[0]["data"])
        for name, values in whole["values"].items():
            assert values == [r["data"][name] for r in environmental]
        two = queries.series(store, run, "environmental", ["habitability", "composition_pct"])
        assert list(two["values"]) == ["habitability", "composition_pct"]
        assert two["values"]["composition_pct"] == whole["values"]["composition_pct"]
        money = queries.series(store, run, "economic", ["balance_cents"], to_year=2)
        assert money["years"] == [1, 2]
        assert all(type(v) is int for v in money["values"]["balance_cents"])

        with pytest.raises(ValidationError, match=r"^fields: 'temperature' is not a field"):
            queries.series(store, run, "environmental", ["temperature"])
        with pytest.raises(ValidationError, match=r"^type: "):
            queries.series(store, run, "weather")
        with pytest.raises(NotFound, match=r"^run_id"):
            queries.series(store, str(uuid4()))
        with pytest.raises(NotFound, match=r"^run_id"):
            queries.results(store, str(uuid4()))
        queued = ledger.queue_run(
            s.mars, pattern="mars_terraform", duration_years=3, budget_cents=10**12
        )
        p.catch_up()
        assert queries.series(store, str(queued)) == {
            "run_id": str(queued),
            "result_type": "environmental",
            "years": [],
            "values": {},
        }
        assert queries.results(store, str(queued)) == []
        empty = queries.series(store, str(queued), "economic", ["spend_cents"])
        assert (empty["years"], empty["values"]) == ([], {"spend_cents": []})
