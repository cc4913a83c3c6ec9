"""An event a projection cannot apply is parked; the other events and projections go on.

Parked events are listed, retried after a fix (in log order, giving the rows a clean rebuild
gives) and skipped deliberately with who, when and why in the audit table; a rebuild parks
in the new generation and keeps the skips (docs/projections.md, "Parked events").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest
from eventsourcing.persistence import StoredEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infrastructure.application import TwinLedger
from projections import parking, queries, tracking
from projections.base import Batch, Projection
from projections.results import ResultsProjection
from projections.runner import Projector
from projections.runs import RunsProjection
from projections.twins import TwinsProjection
from tests.projection_scenario import Scenario, build, expected_results, projector, result_rows
from tests.storage import rewrite_stored_event

YEAR_TOPIC = "domain.run:YearResultRecorded"


def positions_of(ledger: TwinLedger, aggregate: UUID, topic: str | None = None) -> list[int]:
    """Log positions of an aggregate's events (of one topic, if given), in order."""
    notes = ledger.recorder.select_notifications(start=1, limit=100_000)
    return [
        n.id
        for n in notes
        if str(n.originator_id) == str(aggregate) and (topic is None or n.topic == topic)
    ]


def fail_on(monkeypatch: pytest.MonkeyPatch, cls: type[Projection], bad: set[int]) -> None:
    """A handler that raises for the events at ``bad`` positions (a bug in its code)."""
    original = cls.apply

    def apply(self: Projection, batch: Batch) -> None:
        for event in batch.events:
            if event.position in bad:
                raise RuntimeError(f"handler bug at {event.position}")
        original(self, batch)

    monkeypatch.setattr(cls, "apply", apply)


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in rows}


@pytest.fixture
def scenario(ledger: TwinLedger) -> Scenario:
    return build(ledger)


@pytest.fixture
def opened(ledger: TwinLedger) -> Iterator[Projector]:
    with projector(ledger, batch_size=50) as p:
        yield p


def clean_rebuild(p: Projector) -> dict[str, tuple[int, str]]:
    p.rebuild()
    return p.checksums()


def test_an_event_that_does_not_decode_is_parked_and_the_rest_goes_on(
    ledger: TwinLedger, database_url: str, scenario: Scenario, opened: Projector
) -> None:
    run = scenario.completed
    years = positions_of(ledger, run, YEAR_TOPIC)
    bad = years[6]  # year 7
    version = 1 + 1 + 7  # RunQueued, RunStarted, then year 7
    rewrite_stored_event(database_url, run, version, lambda state: state.update(year="seven"))

    positions = opened.catch_up()  # no exception: nothing stops
    head = ledger.event_count()
    assert set(positions.values()) == {head}
    parked = {(row.projection, row.position): row for row in opened.parked()}
    first = parked[("runs", bad)]
    assert (first.topic, first.originator_id, first.originator_version) == (
        YEAR_TOPIC,
        str(run),
        version,
    )
    assert first.error_class == "ValidationError"
    assert "$.year" in first.error_message and not first.skipped
    assert parked[("results", bad)].error_class == "ValidationError"
    # The run's later events wait behind it (log order per aggregate), in both projections.
    later = [pos for pos in positions_of(ledger, run) if pos > bad]
    assert {pos for name, pos in parked if name == "runs"} == {bad, *later}
    assert {pos for name, pos in parked if name == "results"} == {bad, *years[7:]}
    assert parked[("runs", later[0])].error_class == "Held"
    assert "position " + str(bad) in parked[("runs", later[0])].error_message
    # Other runs and twins are complete; this run's rows stop before year 7.
    assert result_rows(opened.store, scenario.failed) == expected_results(ledger, scenario.failed)
    assert [row[0] for row in result_rows(opened.store, run)][-1] == 6
    assert by_id(queries.runs(opened.store))[str(run)]["current_year"] == 6
    status = {row.name: row for row in opened.status()}
    assert (status["runs"].parked, status["results"].parked) == (len(later) + 1, 6)
    assert (status["twins"].parked, status["experiments"].parked) == (0, 0)
    assert all(row.lag == 0 for row in status.values())

    # A retry before the fix fails and keeps every row.
    outcomes = opened.retry()
    assert not any(outcome.applied for outcome in outcomes)
    assert len(opened.parked()) == len(parked)

    rewrite_stored_event(database_url, run, version, lambda state: state.update(year=7))
    outcomes = opened.retry()
    assert all(outcome.applied for outcome in outcomes) and len(outcomes) == len(parked)
    assert opened.parked() == []
    assert result_rows(opened.store, run) == expected_results(ledger, run)
    retried = opened.checksums()
    assert {entry.action for entry in opened.audit_trail()} == {"retried"}
    assert clean_rebuild(opened) == retried


def test_rows_that_depend_on_a_parked_event_are_parked_behind_it(
    ledger: TwinLedger, scenario: Scenario, opened: Projector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runs cannot apply a RunQueued: its results cannot be written (no run row), so they are
    parked too; twins and experiments go on. After the fix a retry gives a clean rebuild."""
    queued = positions_of(ledger, scenario.completed)[0]
    fail_on(monkeypatch, RunsProjection, {queued})
    opened.catch_up()
    parked = opened.parked()
    runs = [row.position for row in parked if row.projection == "runs"]
    results = [row for row in parked if row.projection == "results"]
    # The RunQueued names its twin: in runs, the twin's later runs wait behind it too (ids an
    # event names are rows it may write: over-approximated, so the log's order always holds).
    assert runs == sorted(
        positions_of(ledger, scenario.completed) + positions_of(ledger, scenario.cancelled)
    )
    assert runs and parked[0].error_class == "RuntimeError"
    assert {row.position for row in results} == set(
        positions_of(ledger, scenario.completed, YEAR_TOPIC)
    )
    assert results[0].error_class in ("IntegrityError", "ForeignKeyViolation")
    assert {row.error_class for row in results[1:]} == {"Held"}
    assert str(scenario.completed) not in by_id(queries.runs(opened.store))
    assert by_id(queries.twins(opened.store))[str(scenario.mars)]["run_count"] == 2

    assert opened.retry(queued)[0].applied is False  # still failing: kept, error refreshed
    monkeypatch.undo()  # the fix is deployed
    assert all(outcome.applied for outcome in opened.retry())
    assert opened.parked() == []
    retried = opened.checksums()
    assert clean_rebuild(opened) == retried


def test_a_skip_is_audited_and_kept_by_a_rebuild(
    ledger: TwinLedger, scenario: Scenario, opened: Projector, monkeypatch: pytest.MonkeyPatch
) -> None:
    year = positions_of(ledger, scenario.completed, YEAR_TOPIC)[6]
    fail_on(monkeypatch, RunsProjection, {year})
    opened.catch_up()
    waiting = [row for row in opened.parked() if row.projection == "runs"]
    assert waiting[0].position == year and len(waiting) > 1  # the later ones are held

    with pytest.raises(ValueError):
        opened.skip(year, "  ", actor="alice")
    with pytest.raises(LookupError):
        opened.skip(year + 10_000, "no such", actor="alice")
    (skipped,) = opened.skip(year, "corrupt year, see INC-42", actor="alice")
    assert (skipped.skipped_by, skipped.skip_reason) == ("alice", "corrupt year, see INC-42")
    (entry,) = opened.audit_trail()
    assert (entry.action, entry.projection, entry.position, entry.actor, entry.reason) == (
        "skipped",
        "runs",
        year,
        "alice",
        "corrupt year, see INC-42",
    )
    status = {row.name: row for row in opened.status()}
    assert (status["runs"].parked, status["runs"].skipped) == (len(waiting) - 1, 1)
    # With the first one skipped, the held ones apply (retry --all leaves skipped ones out).
    assert all(outcome.applied for outcome in opened.retry())
    assert [row.position for row in opened.parked()] == [year]
    assert by_id(queries.runs(opened.store))[str(scenario.completed)]["status"] == "completed"
    live = opened.checksums()

    # A rebuild with the bug still there parks the event in the new generation, still skipped.
    assert clean_rebuild(opened) == live
    (again,) = opened.parked()
    assert (again.position, again.skipped_by, again.skip_reason) == (
        year,
        "alice",
        "corrupt year, see INC-42",
    )
    # With the bug fixed, a rebuild applies it: nothing parked any more, the audit remains.
    monkeypatch.undo()
    fixed = clean_rebuild(opened)
    assert opened.parked() == [] and fixed == live  # year 12 overwrites what year 7 wrote
    actions = [entry.action for entry in opened.audit_trail()]
    assert actions == ["skipped"] + ["retried"] * (len(waiting) - 1)


def test_an_unknown_event_is_parked_by_every_projection_and_retried_once_known(
    ledger: TwinLedger, scenario: Scenario, opened: Projector
) -> None:
    topic = f"{__name__}:NoSuchEvent{uuid4().hex[:8]}"
    ledger.recorder.insert_events([StoredEvent(uuid4(), 1, topic, b'{"name":"x"}')])
    bad = ledger.event_count()
    ledger.cancel_run(scenario.running, reason="after the unknown one")
    opened.catch_up()
    parked = opened.parked()
    assert {(row.projection, row.position) for row in parked} == {
        (name, bad) for name in ("twins", "runs", "results", "experiments")
    }
    assert "names no event class" in parked[0].error_message
    assert by_id(queries.runs(opened.store))[str(scenario.running)]["status"] == "cancelled"
    with pytest.raises(LookupError):
        opened.retry(bad + 1)
    assert [outcome.applied for outcome in opened.retry(bad)] == [False] * 4


def test_a_nul_character_parks_the_twin_on_postgresql_only(
    ledger: TwinLedger, scenario: Scenario, opened: Projector
) -> None:
    """PostgreSQL text refuses NUL (SQLite stores it): the twin is parked there, and nothing
    else waits for it. The event is written past validation, as an older version could."""
    stored = ledger.recorder.select_events(scenario.mars)[0]
    state = msgspec.json.decode(stored.state)
    state["name"] = "Mars\x00B"
    twin = uuid4()
    state["originator_id"] = str(twin)
    ledger.recorder.insert_events([StoredEvent(twin, 1, stored.topic, msgspec.json.encode(state))])
    bad = ledger.event_count()
    ledger.cancel_run(scenario.running, reason="after the NUL")
    positions = opened.catch_up()
    assert set(positions.values()) == {ledger.event_count()}
    assert by_id(queries.runs(opened.store))[str(scenario.running)]["status"] == "cancelled"
    if not opened.store.postgres:
        assert opened.parked() == []
        assert by_id(queries.twins(opened.store))[str(twin)]["name"] == "Mars\x00B"
        return
    (row,) = opened.parked()
    assert (row.projection, row.position, row.originator_id) == ("twins", bad, str(twin))
    assert row.error_class in ("DataError", "UntranslatableCharacter")
    assert "NUL" in row.error_message or "0x00" in row.error_message
    assert str(twin) not in by_id(queries.twins(opened.store))
    opened.skip(bad, "a NUL in a twin name, written before validation", actor="ops")
    assert [row.skipped for row in opened.parked()] == [True]


def test_an_event_held_for_a_row_another_aggregate_also_writes_keeps_log_order(
    ledger: TwinLedger, scenario: Scenario, opened: Projector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """twins folds a run's RunQueued into its twin's row: with the twin's TwinRunEnded parked,
    a later RunQueued of that twin waits behind it too, or the retry would write the rows in
    another order than the log's (updated_at going back in time)."""
    ended = positions_of(ledger, scenario.mars, "domain.twin:TwinRunEnded")[0]
    fail_on(monkeypatch, TwinsProjection, {ended})
    opened.catch_up()
    parked = [row for row in opened.parked() if row.projection == "twins"]
    queued_later = positions_of(ledger, scenario.cancelled)[0]
    assert parked[0].position == ended
    assert queued_later in {row.position for row in parked}
    monkeypatch.undo()
    assert all(outcome.applied for outcome in opened.retry())
    retried = opened.checksums()
    assert clean_rebuild(opened) == retried


CLASSES: dict[str, type[Projection]] = {
    "twins": TwinsProjection,
    "runs": RunsProjection,
    "results": ResultsProjection,
}


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_parking_then_retrying_gives_the_clean_tables_whatever_fails(
    ledger: TwinLedger, scenario: Scenario, data: st.DataObject
) -> None:
    """Any events failing in any projections, any batch size: a catch-up and a rebuild park the
    same events and give the same tables; after the fix a retry gives the clean tables."""
    head = ledger.event_count()
    bugs = data.draw(
        st.sets(st.tuples(st.sampled_from(sorted(CLASSES)), st.integers(1, head)), max_size=4)
    )
    batch_size = data.draw(st.integers(1, 60))
    with projector(ledger, batch_size=batch_size) as p:
        p.catch_up()
        clean = p.checksums()
        with p.store.transaction() as cursor:  # start again from position 0
            cursor.execute(p.store.sql("DELETE FROM {t}", t=tracking.TABLE))
            cursor.execute(p.store.sql("DELETE FROM {t}", t=parking.TABLE))
        p._prepared = False
        with pytest.MonkeyPatch.context() as patch:
            for name, cls in CLASSES.items():
                fail_on(patch, cls, {position for which, position in bugs if which == name})
            assert set(p.catch_up().values()) == {head}
            parked = [(r.projection, r.position, r.error_class) for r in p.parked()]
            live = p.checksums()
            p.rebuild()
            assert p.checksums() == live
            assert [(r.projection, r.position, r.error_class) for r in p.parked()] == parked
        failing = {(name, pos) for name, pos, error in parked if error == "RuntimeError"}
        assert failing <= bugs
        outcomes = p.retry()
        assert all(outcome.applied for outcome in outcomes) and len(outcomes) == len(parked)
        assert p.parked() == []
        assert p.checksums() == clean
