"""Read your writes where a reader waits: keep_current catches the read tables up after each
durable write and at the end of the command, not after a run's intermediate chunks; an idle
catch-up opens no transaction; a catch-up that reaches the head commits once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from infrastructure.application import TwinLedger
from projections import queries
from projections.runner import Projector, keep_current
from projections.store import Store

BUDGET = 1_000_000_000_000


def _catch_ups(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Every Projector.catch_up call from now on: its ``durable`` argument."""
    calls: list[bool] = []
    original = Projector.catch_up

    def spy(self: Projector, names: Any = None, *, durable: bool = True) -> dict[str, int]:
        calls.append(durable)
        return original(self, names, durable=durable)

    monkeypatch.setattr(Projector, "catch_up", spy)
    return calls


def _transactions(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Every write transaction a Store opens from now on: its ``durable`` argument."""
    opened: list[bool] = []
    original = Store.transaction

    @contextmanager
    def spy(self: Store, *, durable: bool = True) -> Iterator[Any]:
        opened.append(durable)
        with original(self, durable=durable) as cursor:
            yield cursor

    monkeypatch.setattr(Store, "transaction", spy)
    return opened


def _progress(url: str, run_id: Any) -> tuple[int, int]:
    """(current_year, result rows) of a run as the read tables hold it, without catching up."""
    with Projector.open(url) as opened:
        store = opened.store
        (row,) = [r for r in queries.runs(store) if r["id"] == str(run_id)]
        with store.reading() as cursor:
            cursor.execute(
                store.sql("SELECT count(*) FROM {t} WHERE run_id = %s", t="simulation_results"),
                (store.uuid(run_id),),
            )
            (count,) = cursor.fetchone()
        return int(row["current_year"]), int(count)


def test_intermediate_chunks_wait_for_the_next_durable_write(
    ledger: TwinLedger, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    twin = ledger.clone_twin(name="Mars", body="mars")
    run_id = ledger.queue_run(
        twin, pattern="mars_terraform", duration_years=40, budget_cents=BUDGET
    )
    calls = _catch_ups(monkeypatch)
    seen: list[tuple[int, int]] = []
    detach = keep_current(ledger, lambda text: pytest.fail(text))
    original = ledger._save_chunk

    def save_chunk(run: Any, *, durable: bool = True) -> bool:
        saved = original(run, durable=durable)
        seen.append(_progress(database_url, run_id))  # what a reader that does not catch up sees
        return saved

    monkeypatch.setattr(ledger, "_save_chunk", save_chunk)
    try:
        ledger.execute_run(run_id, chunk_years=10)
    finally:
        detach()
    # Chunks of years 1-10, 11-20, 21-30 commit without waiting for the disk: no catch-up
    # after them. The last chunk (durable) catches the tables up over all four, once.
    assert [year for year, _ in seen] == [0, 0, 0, 40]
    assert seen[-1][1] >= 80  # economic and environmental rows of every year
    # The start (run and twin), the last chunk and the completion: each caught up after,
    # each without waiting for the WAL flush (the write before it did).
    assert calls == [False, False, False]


def test_detach_catches_up_what_a_non_durable_write_left(
    ledger: TwinLedger, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    twin = ledger.clone_twin(name="Mars", body="mars")
    run_id = ledger.queue_run(
        twin, pattern="mars_terraform", duration_years=20, budget_cents=BUDGET
    )
    with Projector.open(database_url) as opened:
        opened.catch_up()
    run = ledger.get_run(run_id)
    run.start()
    for year in range(1, 11):
        run.record_year(_year(ledger, run_id, year))
    detach = keep_current(ledger, lambda text: pytest.fail(text))
    calls = _catch_ups(monkeypatch)
    ledger._save_chunk(run, durable=False)
    assert calls == []
    assert _progress(database_url, run_id) == (0, 0)
    detach()  # the command ends: its writes are in the read tables
    assert calls == [False]
    year, rows = _progress(database_url, run_id)
    assert year == 10 and rows >= 20


def _year(ledger: TwinLedger, run_id: Any, year: int) -> Any:
    """The engine's result for ``year`` of the run (deterministic: simulated from RunQueued)."""
    from domain.engine import Simulation
    from infrastructure.application import run_inputs

    simulation = Simulation(run_inputs(ledger.get_run(run_id)))
    result = simulation.step()
    while result.year < year:
        result = simulation.step()
    return result


def test_an_idle_catch_up_opens_no_transaction(
    ledger: TwinLedger, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    twin = ledger.clone_twin(name="Mars", body="mars")
    run_id = ledger.queue_run(
        twin, pattern="mars_terraform", duration_years=30, budget_cents=BUDGET
    )
    ledger.execute_run(run_id, chunk_years=10)
    with Projector.open(database_url) as opened:
        opened.prepare()
        opened_now = _transactions(monkeypatch)
        positions = opened.catch_up()
        # One batch brings every projection to the head: one transaction, durable.
        assert opened_now == [True]
        assert set(positions.values()) == {ledger.event_count()}
        opened_now.clear()
        assert opened.catch_up() == positions
        assert opened_now == []  # nothing to apply: no lock taken, nothing committed
