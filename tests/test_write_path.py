"""The write path of execute_run: completing a run does not read its years back, and chunks
before the last may commit without waiting for the log flush (PostgreSQL) while the last one,
and RunCompleted, commit durably."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from conftest import fresh_postgres_url

from domain.values import RunStatus
from infrastructure.application import TwinLedger
from infrastructure.pg_recorder import CopyApplicationRecorder

BUDGET = 1_000_000_000_000


def test_completing_a_run_does_not_read_its_years_back(ledger: TwinLedger) -> None:
    twin_id = ledger.clone_twin(name="Mars A", body="mars")
    run_id = ledger.queue_run(
        twin_id, pattern="mars_terraform", duration_years=80, budget_cents=BUDGET
    )
    store = ledger.repository.event_store
    read: dict[UUID, int] = {}
    original = store.get

    def counting_get(originator_id: UUID, *args: Any, **kwargs: Any) -> Any:
        for event in original(originator_id, *args, **kwargs):
            read[originator_id] = read.get(originator_id, 0) + 1
            yield event

    store.get = counting_get  # type: ignore[method-assign]
    try:
        run = ledger.execute_run(run_id, chunk_years=20)
    finally:
        del store.get
    assert run.status == RunStatus.COMPLETED
    assert ledger.get_run(run_id).status == RunStatus.COMPLETED
    assert len(list(ledger.recorded_years(run_id))) == 80
    # RunQueued read to start it (twice: the check, then the start under retry), never the years.
    assert read[run.id] <= 4


def test_a_cancel_between_the_last_chunk_and_completion_wins(ledger: TwinLedger) -> None:
    """The run in memory is stale once another writer cancelled it: the completion conflicts,
    reloads, and is refused as before; nothing of it is written."""
    twin_id = ledger.clone_twin(name="Mars A", body="mars")
    run_id = ledger.queue_run(
        twin_id, pattern="mars_terraform", duration_years=40, budget_cents=BUDGET
    )
    original = ledger._save_chunk

    def save_then_cancel(run: Any, *, durable: bool = True) -> bool:
        saved = original(run, durable=durable)
        if durable:  # the last chunk: another process cancels before the completion
            ledger.cancel_run(run_id, reason="stop", by="other")
        return saved

    ledger._save_chunk = save_then_cancel  # type: ignore[method-assign]
    from domain.errors import InvalidTransition

    with pytest.raises(InvalidTransition):
        ledger.execute_run(run_id, chunk_years=10)
    stored = ledger.get_run(run_id)
    assert stored.status == RunStatus.CANCELLED
    assert len(list(ledger.recorded_years(run_id))) == 40


@pytest.fixture
def pg_ledger() -> Iterator[TwinLedger]:
    with fresh_postgres_url() as url:
        application = TwinLedger.open(url)
        yield application
        application.close()


@pytest.mark.postgres
def test_only_the_last_chunk_waits_for_the_log_flush(pg_ledger: TwinLedger) -> None:
    recorder: Any = pg_ledger.recorder
    seen: list[bool] = []
    original = recorder.insert_events

    def spy(stored_events: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("durable", True))
        return original(stored_events, **kwargs)

    recorder.insert_events = spy
    twin_id = pg_ledger.clone_twin(name="Mars A", body="mars")
    run_id = pg_ledger.queue_run(
        twin_id, pattern="mars_terraform", duration_years=40, budget_cents=BUDGET
    )
    seen.clear()
    pg_ledger.execute_run(run_id, chunk_years=10)
    # start (durable), chunks of years 10, 20, 30 (not), 40 (durable), RunCompleted (durable)
    assert seen == [True, False, False, False, True, True]
    assert len(list(pg_ledger.recorded_years(run_id))) == 40


@pytest.mark.postgres
def test_a_save_that_need_not_wait_sets_synchronous_commit_off_for_itself(
    pg_ledger: TwinLedger,
) -> None:
    recorder: Any = pg_ledger.recorder
    assert isinstance(recorder, CopyApplicationRecorder)
    statements = {
        durable: recorder.append_preamble(durable).as_string(None) for durable in (True, False)
    }
    assert "synchronous_commit = off" in statements[False]
    assert "synchronous_commit" not in statements[True]
    for text in statements.values():
        assert "LOCK TABLE" in text and "NOTIFY" in text and "lock_timeout" in text
    assert "SET LOCAL synchronous_commit" in statements[False]  # this transaction only
