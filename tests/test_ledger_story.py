"""The ledger's main story, told on SQLite and on PostgreSQL: clone, queue, execute, read back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from domain.errors import InvalidTransition
from domain.values import RunStatus, TwinStatus
from infrastructure.application import TwinLedger

BUDGET = 1_000_000_000_000


def test_clone_queue_execute_and_read_back(ledger: TwinLedger) -> None:
    twin_id = ledger.clone_twin(name="Mars A", body="mars", expires_in=timedelta(days=30))
    twin = ledger.get_twin(twin_id)
    assert twin.name == "Mars A"
    assert twin.status == TwinStatus.READY
    assert twin.source_body == "mars"
    assert twin.state.atmosphere.surface_pressure_kpa == 0.636
    assert twin.expires_at == ledger.clock() + timedelta(days=30)

    run_id = ledger.queue_run(
        twin_id, pattern="mars_terraform", duration_years=120, budget_cents=BUDGET, seed=42
    )
    queued = ledger.get_run(run_id)
    assert queued.status == RunStatus.QUEUED
    assert queued.twin_state == twin.state
    assert queued.seed == 42
    assert queued.progress == 0

    seen: list[int] = []
    finished = ledger.execute_run(
        run_id, chunk_years=50, on_progress=lambda done, _: seen.append(done)
    )
    assert seen == [50, 100, 120]
    assert finished.status == RunStatus.COMPLETED
    assert finished.progress == 1

    stored = ledger.get_run(run_id)
    assert stored.status == RunStatus.COMPLETED
    assert stored.summary == finished.summary
    assert stored.result_digest is not None and stored.result_digest.startswith("sha256:")
    years = list(ledger.recorded_years(run_id))
    assert [year.year for year in years] == list(range(1, 121))
    assert all(isinstance(year.economic.spend_cents, int) for year in years)
    assert ledger.get_twin(twin_id).status == TwinStatus.COMPLETED


def test_a_twin_is_running_while_its_run_is(ledger: TwinLedger) -> None:
    twin_id = ledger.clone_twin(name="Venus A", body="venus")
    run_id = ledger.queue_run(
        twin_id, pattern="venus_industrial", duration_years=10, budget_cents=BUDGET
    )
    statuses: list[str] = []
    ledger.execute_run(
        run_id,
        chunk_years=5,
        on_progress=lambda *_: statuses.append(ledger.get_twin(twin_id).status),
    )
    assert statuses[0] == TwinStatus.RUNNING_SIMULATION
    assert ledger.get_twin(twin_id).status == TwinStatus.COMPLETED


def test_an_ended_twin_refuses_new_runs(ledger: TwinLedger) -> None:
    twin_id = ledger.clone_twin(name="Moon A", body="moon")
    ledger.delete_twin(twin_id, reason="done with it")
    assert ledger.get_twin(twin_id).status == TwinStatus.DELETED
    before = ledger.event_count()
    with pytest.raises(InvalidTransition, match=r"twin_id: .* has ended"):
        ledger.queue_run(twin_id, pattern="venus_industrial", duration_years=5, budget_cents=BUDGET)
    assert ledger.event_count() == before


def test_an_expired_twin_refuses_new_runs(ledger: TwinLedger, clock) -> None:
    twin_id = ledger.clone_twin(name="Titan A", body="titan", expires_in=timedelta(days=1))
    clock.advance(days=2)
    before = ledger.event_count()
    with pytest.raises(InvalidTransition, match="expired"):
        ledger.queue_run(twin_id, pattern="titan_fuel", duration_years=5, budget_cents=BUDGET)
    assert ledger.event_count() == before


def test_cancelling_a_queued_run(ledger: TwinLedger) -> None:
    twin_id = ledger.clone_twin(name="Europa A", body="europa")
    run_id = ledger.queue_run(
        twin_id, pattern="europa_ocean", duration_years=10, budget_cents=BUDGET
    )
    ledger.cancel_run(run_id, reason="changed my mind")
    run = ledger.get_run(run_id)
    assert run.status == RunStatus.CANCELLED
    assert run.error_message == "changed my mind"
    with pytest.raises(InvalidTransition, match="already ended"):
        ledger.execute_run(run_id)


def test_a_run_cancelled_by_another_writer_stops_at_the_next_chunk(
    open_ledger: Callable[[], TwinLedger],
) -> None:
    executor, other = open_ledger(), open_ledger()
    twin_id = executor.clone_twin(name="Mars B", body="mars")
    run_id = executor.queue_run(
        twin_id, pattern="mars_terraform", duration_years=100, budget_cents=BUDGET
    )

    def cancel_once(done: int, total: int) -> None:
        if done == 20:
            other.cancel_run(run_id, reason="stop")

    result = executor.execute_run(run_id, chunk_years=20, on_progress=cancel_once)
    assert result.status == RunStatus.CANCELLED
    assert result.years_recorded == 20
    assert executor.get_twin(twin_id).status != TwinStatus.RUNNING_SIMULATION


def test_a_crashed_run_resumes_where_it_stopped(ledger: TwinLedger) -> None:
    twin_id = ledger.clone_twin(name="Mars C", body="mars")
    run_id = ledger.queue_run(
        twin_id, pattern="mars_terraform", duration_years=60, budget_cents=BUDGET, seed=7
    )

    class Crash(BaseException):
        pass

    def crash(done: int, total: int) -> None:
        if done == 40:
            raise Crash

    with pytest.raises(Crash):
        ledger.execute_run(run_id, chunk_years=20, on_progress=crash)
    assert ledger.get_run(run_id).status == RunStatus.RUNNING
    assert ledger.get_run(run_id).years_recorded == 40

    resumed = ledger.execute_run(run_id, chunk_years=20)
    assert resumed.status == RunStatus.COMPLETED
    assert [y.year for y in ledger.recorded_years(run_id)] == list(range(1, 61))

    fresh_twin = ledger.clone_twin(name="Mars D", body="mars")
    fresh = ledger.queue_run(
        fresh_twin, pattern="mars_terraform", duration_years=60, budget_cents=BUDGET, seed=7
    )
    assert ledger.execute_run(fresh).result_digest == resumed.result_digest


def test_the_same_run_has_the_same_digest_on_every_back_end(ledger: TwinLedger) -> None:
    """Same inputs, same digest: execution depends on RunQueued alone."""
    twin_id = ledger.clone_twin(name="Mars E", body="mars")
    run_id = ledger.queue_run(
        twin_id, pattern="mars_terraform", duration_years=30, budget_cents=BUDGET, seed=42
    )
    first = ledger.execute_run(run_id).result_digest
    again_twin = ledger.clone_twin(name="Mars F", body="mars")
    again = ledger.queue_run(
        again_twin, pattern="mars_terraform", duration_years=30, budget_cents=BUDGET, seed=42
    )
    assert ledger.execute_run(again).result_digest == first
