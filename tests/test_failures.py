"""A failing engine records RunFailed and keeps whole chunks only; a failing database does not
(the run stays resumable); extending a twin's expiry."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from conftest import fresh_postgres_url, postgres_base_url
from eventsourcing.persistence import OperationalError

import infrastructure.application as application_module
from domain.engine import Simulation
from domain.errors import InvalidTransition, ValidationError
from domain.values import RunStatus, TwinStatus, YearResult
from infrastructure.application import TwinLedger
from infrastructure.errors import RunInterrupted
from infrastructure.settings import resolve_database

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


# --- transient database errors leave a run resumable (issue 10, item 8) -----------------------


def twin_and_runs(ledger: TwinLedger, years: int = 60) -> tuple[UUID, UUID]:
    """Two runs with the same inputs on two clones of Mars: one to disturb, one as reference."""
    runs = []
    for name in ("Mars A", "Mars B"):
        twin_id = ledger.clone_twin(name=name, body="mars")
        runs.append(
            ledger.queue_run(
                twin_id,
                pattern="mars_terraform",
                duration_years=years,
                budget_cents=BUDGET,
                seed=1234,
            )
        )
    return runs[0], runs[1]


def assert_resumes_to_the_reference(ledger: TwinLedger, disturbed: UUID, reference: UUID) -> None:
    expected = ledger.execute_run(reference, chunk_years=20)
    assert expected.status == RunStatus.COMPLETED
    resumed = ledger.execute_run(disturbed, chunk_years=20)
    assert resumed.status == RunStatus.COMPLETED
    assert resumed.result_digest == expected.result_digest
    assert [y.year for y in ledger.recorded_years(disturbed)] == list(range(1, 61))
    assert ledger.get_twin(resumed.twin_id).status == ledger.get_twin(expected.twin_id).status


def test_a_database_error_during_a_run_leaves_it_running_and_resumable(
    ledger: TwinLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    disturbed, reference = twin_and_runs(ledger)
    real = ledger.recorder.insert_events
    calls = {"n": 0}

    def flaky(stored_events: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:  # RunStarted+TwinRunStarted, chunk 1, then chunk 2 fails
            raise OperationalError("server closed the connection unexpectedly")
        return real(stored_events, **kwargs)

    monkeypatch.setattr(ledger.recorder, "insert_events", flaky)
    with pytest.raises(RunInterrupted, match=f"run {disturbed} interrupted by a database error"):
        ledger.execute_run(disturbed, chunk_years=20)
    run = ledger.get_run(disturbed)
    assert run.status == RunStatus.RUNNING  # not failed: nothing was wrong with the run
    assert run.years_recorded == 20
    monkeypatch.setattr(ledger.recorder, "insert_events", real)
    assert_resumes_to_the_reference(ledger, disturbed, reference)


def test_a_sqlite_lock_held_during_a_chunk_save_leaves_the_run_resumable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    TwinLedger.open(url).close()  # the tables
    database = resolve_database(url)
    ledger = TwinLedger(
        database.eventsourcing_env() | {"SQLITE_LOCK_TIMEOUT": "1"}, database=database
    )
    holder = sqlite3.connect(database.sqlite_path, isolation_level=None)
    try:
        disturbed, reference = twin_and_runs(ledger)

        def lock_after_first_chunk(done: int, total: int) -> None:
            if done == 20:
                holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock

        with pytest.raises(RunInterrupted, match="database is locked"):
            ledger.execute_run(disturbed, chunk_years=20, on_progress=lock_after_first_chunk)
        holder.execute("ROLLBACK")
        run = ledger.get_run(disturbed)
        assert (run.status, run.years_recorded) == (RunStatus.RUNNING, 20)
        assert_resumes_to_the_reference(ledger, disturbed, reference)
    finally:
        holder.close()
        ledger.close()


@pytest.mark.postgres
def test_a_terminated_postgres_connection_mid_run_is_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tag = f"tl-test-{uuid4().hex[:12]}"
    monkeypatch.setenv("PGAPPNAME", tag)  # libpq names this ledger's connections
    with fresh_postgres_url() as url:
        ledger = TwinLedger.open(url)
        try:
            disturbed, reference = twin_and_runs(ledger)
            terminated: list[int] = []

            def terminate(done: int, total: int) -> None:
                if done == 20:
                    base = postgres_base_url()
                    with psycopg.connect(base, autocommit=True, application_name="x") as other:
                        rows = other.execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE application_name = %s",
                            (tag,),
                        ).fetchall()
                    terminated.extend(1 for row in rows if row[0])

            run = ledger.execute_run(disturbed, chunk_years=20, on_progress=terminate)
            assert terminated  # the run's connections were cut between chunks
            assert run.status == RunStatus.COMPLETED  # the COPY was retried on a new connection
            expected = ledger.execute_run(reference, chunk_years=20)
            assert run.result_digest == expected.result_digest
        finally:
            ledger.close()


def test_a_database_error_while_starting_a_run_leaves_it_queued(
    ledger: TwinLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    disturbed, reference = twin_and_runs(ledger)
    real = ledger.recorder.insert_events

    def down(stored_events: Any, **kwargs: Any) -> Any:
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(ledger.recorder, "insert_events", down)
    with pytest.raises(RunInterrupted, match=r"\(could not connect to server\); the years it"):
        ledger.execute_run(disturbed, chunk_years=20)
    assert ledger.get_run(disturbed).status == RunStatus.QUEUED
    monkeypatch.setattr(ledger.recorder, "insert_events", real)
    assert_resumes_to_the_reference(ledger, disturbed, reference)
