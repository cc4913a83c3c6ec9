"""A failing engine records RunFailed and keeps whole chunks only; extending a twin's expiry."""

from __future__ import annotations

from datetime import timedelta

import pytest

import infrastructure.application as application_module
from domain.engine import Simulation
from domain.errors import InvalidTransition, ValidationError
from domain.values import RunStatus, TwinStatus, YearResult
from infrastructure.application import TwinLedger

BUDGET = 1_000_000_000_000


class BrokenAtYear37(Simulation):
    def step(self) -> YearResult:
        if self.year == 36:
            raise ZeroDivisionError("reactor model divided by zero")
        return super().step()


def test_an_engine_exception_records_run_failed_with_only_whole_chunks(
    ledger: TwinLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    twin_id = ledger.clone_twin(name="Mars A", body="mars")
    run_id = ledger.queue_run(
        twin_id, pattern="mars_terraform", duration_years=80, budget_cents=BUDGET
    )
    monkeypatch.setattr(application_module, "Simulation", BrokenAtYear37)
    run = ledger.execute_run(run_id, chunk_years=10)
    assert run.status == RunStatus.FAILED
    stored = ledger.get_run(run_id)
    assert stored.status == RunStatus.FAILED
    assert stored.error_message == "ZeroDivisionError: reactor model divided by zero"
    # Years 31 to 36 were in the chunk in flight: dropped, not half-written.
    assert [year.year for year in ledger.recorded_years(run_id)] == list(range(1, 31))
    assert ledger.get_twin(twin_id).status == TwinStatus.FAILED
    with pytest.raises(InvalidTransition, match="already ended"):
        ledger.execute_run(run_id)


def test_extending_a_twin_moves_its_expiry_later(ledger: TwinLedger, clock) -> None:
    twin_id = ledger.clone_twin(name="Titan A", body="titan", expires_in=timedelta(days=1))
    expires = ledger.get_twin(twin_id).expires_at
    assert expires is not None
    assert ledger.extend_twin(twin_id, by=timedelta(days=30)) == expires + timedelta(days=30)
    clock.advance(days=10)
    ledger.queue_run(twin_id, pattern="titan_fuel", duration_years=3, budget_cents=BUDGET)

    before = ledger.event_count()
    with pytest.raises(ValidationError, match=r"^by: "):
        ledger.extend_twin(twin_id, by=timedelta(0))
    ledger.delete_twin(twin_id, reason="done")
    with pytest.raises(InvalidTransition, match="has ended"):
        ledger.extend_twin(twin_id, by=timedelta(days=1))
    assert ledger.event_count() == before + 1


def test_a_run_ending_after_its_twin_was_deleted_leaves_the_twin_deleted(
    ledger: TwinLedger,
) -> None:
    twin_id = ledger.clone_twin(name="Mars A", body="mars")
    run_id = ledger.queue_run(
        twin_id, pattern="mars_terraform", duration_years=20, budget_cents=BUDGET
    )

    def delete_midway(done: int, total: int) -> None:
        if done == 10:
            twin = ledger.get_twin(twin_id)
            twin.delete(ledger.clock(), "test", "gone")  # bypasses the service's guard on purpose
            ledger.save(twin)

    finished = ledger.execute_run(run_id, chunk_years=10, on_progress=delete_midway)
    assert finished.status == RunStatus.COMPLETED
    twin = ledger.get_twin(twin_id)
    assert twin.status == TwinStatus.DELETED and not twin.active_runs
