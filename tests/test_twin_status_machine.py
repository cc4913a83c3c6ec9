"""The twin's and the run's status rules live once (domain/twin.py TwinLife, domain/run.py
next_run_status), used by the aggregates and the projections: the rows always agree.

A hypothesis stateful test drives random command sequences through the public API (clone,
queue, execute, a run crashing mid-way, cancel, delete, extend, expire with a moved clock,
and a run ending after its twin ended) and, after every step, checks every digital_twins and
simulation_runs row of the twins and runs it made against the aggregates.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from domain.errors import TwinLedgerError
from domain.run import SimulationRun
from domain.twin import DigitalTwin, TwinLife
from domain.values import RunStatus, TwinStatus
from infrastructure.application import TwinLedger
from infrastructure.expiry import expire_twins
from projections import queries
from tests.conftest import Clock
from tests.projection_scenario import projector

BUDGET = 1_000_000_000_000
YEARS = 3


class Crash(BaseException):
    """Stands for the process dying mid-run: the run stays running, its twin follows it."""


def _crash(year: int, duration: int) -> None:
    raise Crash


# --- the fold itself -------------------------------------------------------------------------


def test_an_ended_twin_stays_deleted_when_its_run_ends() -> None:
    run = UUID(int=1)
    life = TwinLife().run_started(run).end().run_ended(run, RunStatus.COMPLETED)
    assert life.status == TwinStatus.DELETED
    assert life.active_runs == frozenset() and life.completed_runs == 1
    assert life.last_outcome == TwinStatus.COMPLETED


def test_an_ended_twin_does_not_go_back_to_running() -> None:
    assert TwinLife().end().run_started(UUID(int=1)).status == TwinStatus.DELETED


def test_the_last_outcome_decides_once_no_run_is_active() -> None:
    a, b = UUID(int=1), UUID(int=2)
    life = TwinLife().run_started(a).run_started(b).run_ended(a, RunStatus.FAILED)
    assert life.status == TwinStatus.RUNNING_SIMULATION
    life = life.run_ended(b, RunStatus.CANCELLED)
    assert (life.status, life.failed_runs, life.completed_runs) == (TwinStatus.FAILED, 1, 0)


# --- the regression of issue 10 item 14 ------------------------------------------------------


def test_delete_then_the_run_ends_the_row_says_deleted_like_the_aggregate(
    ledger: TwinLedger,
) -> None:
    twin_id = ledger.clone_twin(name="Mars A", body="mars")
    run_id = ledger.queue_run(
        twin_id, pattern="mars_terraform", duration_years=YEARS, budget_cents=BUDGET, seed=1
    )
    with pytest.raises(Crash):
        ledger.execute_run(run_id, chunk_years=1, on_progress=_crash)
    twin = ledger.get_twin(twin_id)
    twin.delete(ledger.clock(), "tester", "gone")  # the domain allows it with a run under way
    ledger.save(twin)
    ledger.cancel_run(run_id, reason="late", by="tester")  # the run ends after its twin

    aggregate = ledger.get_twin(twin_id)
    assert aggregate.status == TwinStatus.DELETED and not aggregate.active_runs
    with projector(ledger) as p:
        p.catch_up()
        (row,) = queries.twins(p.store)
    assert row["status"] == "deleted"
    assert row["active_run_ids"] == [] and row["active_run_count"] == 0


# --- the stateful test -----------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else queries.plain("timestamp", moment)


def check_twin(row: dict[str, Any], twin: DigitalTwin, runs: list[SimulationRun]) -> None:
    life = twin.life
    assert row["status"] == life.status
    assert row["last_run_outcome"] == life.last_outcome
    assert row["active_run_ids"] == sorted(str(r) for r in life.active_runs)
    assert row["active_run_count"] == len(life.active_runs)
    assert row["completed_run_count"] == life.completed_runs
    assert row["failed_run_count"] == life.failed_runs
    assert row["run_count"] == len(runs)
    assert row["expires_at"] == _iso(twin.expires_at)
    assert row["deleted_at"] == _iso(twin.ended_at)
    assert row["ended_reason"] == twin.ended_reason
    assert row["created_at"] == _iso(twin.created_on)
    latest = max([twin.modified_on, *(run.created_on for run in runs)])
    assert row["updated_at"] == _iso(latest)


def check_run(row: dict[str, Any], run: SimulationRun) -> None:
    assert row["status"] == run.status
    assert row["current_year"] == run.years_recorded
    assert row["progress"] == run.progress
    assert row["error_message"] == run.error_message
    assert row["result_digest"] == run.result_digest
    assert row["digital_twin_id"] == str(run.twin_id)
    assert row["queued_at"] == _iso(run.created_on)
    assert row["updated_at"] == _iso(run.modified_on)
    assert (row["completed_at"] is not None) == run.ended
    if run.status in (RunStatus.RUNNING, RunStatus.COMPLETED):
        assert row["started_at"] is not None
    if run.status == RunStatus.QUEUED:
        assert row["started_at"] is None


class TwinStatusMachine(RuleBasedStateMachine):
    """Commands on a few twins; after each, the rows agree with the aggregates."""

    ledger: TwinLedger
    clock: Clock

    twins = Bundle("twins")
    runs = Bundle("runs")

    def __init__(self) -> None:
        super().__init__()
        self.twin_ids: list[UUID] = []
        self.runs_of: dict[UUID, list[UUID]] = {}
        self.projector = projector(self.ledger)  # one connection for the whole example

    def teardown(self) -> None:
        self.projector.close()

    @initialize(target=twins)
    def first_twin(self) -> UUID:
        return self._clone()

    def _clone(self) -> UUID:
        twin_id = self.ledger.clone_twin(name="Mars", body="mars", expires_in=timedelta(days=2))
        self.twin_ids.append(twin_id)
        self.runs_of[twin_id] = []
        return twin_id

    @rule(target=twins)
    def clone(self) -> UUID:
        return self._clone()

    @rule(target=runs, twin=twins, seed=st.integers(0, 3))
    def queue(self, twin: UUID, seed: int) -> Any:
        try:
            run_id = self.ledger.queue_run(
                twin,
                pattern="mars_terraform",
                duration_years=YEARS,
                budget_cents=BUDGET,
                seed=seed,
            )
        except TwinLedgerError:
            aggregate = self.ledger.get_twin(twin)
            assert aggregate.ended or aggregate.is_expired(self.clock())
            return multiple()
        self.runs_of[twin].append(run_id)
        return run_id

    @rule(run=runs)
    def execute(self, run: UUID) -> None:
        with contextlib.suppress(TwinLedgerError):
            self.ledger.execute_run(run, chunk_years=1)

    @rule(run=runs)
    def crash_mid_run(self, run: UUID) -> None:
        with contextlib.suppress(Crash, TwinLedgerError):
            self.ledger.execute_run(run, chunk_years=1, on_progress=_crash)

    @rule(run=runs)
    def cancel(self, run: UUID) -> None:
        with contextlib.suppress(TwinLedgerError):
            self.ledger.cancel_run(run, reason="stop", by="tester")

    @rule(twin=twins)
    def delete(self, twin: UUID) -> None:
        with contextlib.suppress(TwinLedgerError):
            self.ledger.delete_twin(twin, reason="done", by="tester")

    @rule(twin=twins)
    def delete_with_runs_under_way(self, twin: UUID) -> None:
        """Another writer (the domain allows it): its runs then end after it."""
        aggregate = self.ledger.get_twin(twin)
        if not aggregate.ended:
            aggregate.delete(self.clock(), "tester", "forced")
            self.ledger.save(aggregate)

    @rule(twin=twins, outcome=st.sampled_from(["cancel", "execute"]))
    def a_run_ends_after_its_twin_ended(self, twin: UUID, outcome: str) -> None:
        """A run under way when its twin is deleted (by another writer) ends afterwards."""
        if self.ledger.get_twin(twin).ended or self.ledger.get_twin(twin).is_expired(self.clock()):
            return
        run_id = self.ledger.queue_run(
            twin, pattern="mars_terraform", duration_years=YEARS, budget_cents=BUDGET, seed=5
        )
        self.runs_of[twin].append(run_id)
        with contextlib.suppress(Crash):
            self.ledger.execute_run(run_id, chunk_years=1, on_progress=_crash)
        self.delete_with_runs_under_way(twin)
        if outcome == "cancel":
            self.ledger.cancel_run(run_id, reason="late", by="tester")
        else:  # the twin has ended: the executor refuses to go on and cancels the run
            with contextlib.suppress(TwinLedgerError):
                self.ledger.execute_run(run_id, chunk_years=1)
        assert self.ledger.get_run(run_id).ended

    @rule(twin=twins)
    def extend(self, twin: UUID) -> None:
        with contextlib.suppress(TwinLedgerError):
            self.ledger.extend_twin(twin, by=timedelta(days=1))

    @rule(days=st.integers(0, 4))
    def expire(self, days: int) -> None:
        self.clock.advance(days=days)
        expire_twins(self.ledger, self.projector)

    @invariant()
    def rows_agree_with_aggregates(self) -> None:
        self.projector.catch_up()
        twin_rows = {row["id"]: row for row in queries.twins(self.projector.store)}
        run_rows = {row["id"]: row for row in queries.runs(self.projector.store)}
        for twin_id in self.twin_ids:
            runs = [self.ledger.get_run(r) for r in self.runs_of[twin_id]]
            check_twin(twin_rows[str(twin_id)], self.ledger.get_twin(twin_id), runs)
            for run in runs:
                check_run(run_rows[str(run.id)], run)


@pytest.fixture
def machine(ledger: TwinLedger, clock: Clock) -> Iterator[type[TwinStatusMachine]]:
    TwinStatusMachine.ledger = ledger
    TwinStatusMachine.clock = clock
    yield TwinStatusMachine


def test_rows_follow_the_aggregates_through_random_commands(
    machine: type[TwinStatusMachine],
) -> None:
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=8,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
