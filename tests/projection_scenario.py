"""Test helpers for the read tables: a scenario covering every event, and what it should give.

The scenario uses the engine for one run and the aggregates directly for the others (a run
with key events, a failed run, a run left running), so it does not depend on what the engine
happens to produce.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.persistence import StoredEvent

from domain.run import SimulationRun
from domain.twin import DigitalTwin
from domain.values import KeyEvent, RunStatus
from infrastructure.application import TwinLedger
from projections.checksum import canonical_json
from projections.runner import Projector
from projections.store import Store

BUDGET = 1_000_000_000_000


@dataclass
class Scenario:
    mars: UUID  # twin: one completed run, one cancelled while queued
    venus: UUID  # twin: one failed run with key events, one still running
    moon: UUID  # twin: deleted
    titan: UUID  # twin: expired
    completed: UUID
    cancelled: UUID
    failed: UUID
    running: UUID


def _start(ledger: TwinLedger, run_id: UUID) -> tuple[SimulationRun, DigitalTwin]:
    run = ledger.get_run(run_id)
    twin = ledger.get_twin(run.twin_id)
    run.start()
    twin.start_run(run.id, ledger.clock())
    ledger.save(run, twin)
    return run, twin


def build(ledger: TwinLedger, *, years: int = 12) -> Scenario:
    mars = ledger.clone_twin(name="Mars A", body="mars", expires_in=timedelta(days=30))
    venus = ledger.clone_twin(name="Venus A", body="venus", description="hot")
    moon = ledger.clone_twin(name="Moon A", body="moon")
    titan = ledger.clone_twin(name="Titan A", body="titan", expires_in=timedelta(hours=1))

    completed = ledger.queue_run(
        mars, pattern="mars_terraform", duration_years=years, budget_cents=BUDGET, seed=42
    )
    ledger.execute_run(completed, chunk_years=5)
    recorded = list(ledger.recorded_years(completed))

    cancelled = ledger.queue_run(
        mars, pattern="mars_terraform", duration_years=20, budget_cents=BUDGET, seed=1
    )
    ledger.cancel_run(cancelled, reason="wrong budget", by="tester")

    # A run that records three years (year 2 with key events), then fails.
    failed = ledger.queue_run(
        venus, pattern="venus_industrial", duration_years=10, budget_cents=BUDGET, seed=2
    )
    run, twin = _start(ledger, failed)
    for result in recorded[:3]:
        if result.year == 2:
            result = msgspec.structs.replace(
                result,
                key_events=[
                    KeyEvent(year=2, name="oxygen_threshold", description="breathable O2"),
                    KeyEvent(year=2, name="first_revenue", description="money", data={"x": 1.5}),
                ],
            )
        run.record_year(result)
    ledger.save(run)
    run.fail("ZeroDivisionError: reactor model divided by zero")
    twin.end_run(run.id, RunStatus.FAILED)
    ledger.save(run, twin)

    # A run left running after two years.
    running = ledger.queue_run(
        venus, pattern="venus_industrial", duration_years=5, budget_cents=BUDGET, seed=3
    )
    run, _ = _start(ledger, running)
    for result in recorded[:2]:
        run.record_year(result)
    ledger.save(run)

    ledger.extend_twin(venus, by=timedelta(days=10))
    ledger.delete_twin(moon, reason="done", by="tester")
    titan_twin = ledger.get_twin(titan)
    titan_twin.expire(ledger.clock() + timedelta(hours=2))
    ledger.save(titan_twin)
    return Scenario(mars, venus, moon, titan, completed, cancelled, failed, running)


def expected_results(ledger: TwinLedger, run_id: UUID) -> list[tuple[int, str, Any]]:
    """The simulation_results rows of a run, as the events say: (year, type, canonical data)."""
    rows: list[tuple[int, str, Any]] = []
    for result in ledger.recorded_years(run_id):
        rows.append((result.year, "economic", canonical_json(msgspec.to_builtins(result.economic))))
        rows.append(
            (result.year, "environmental", canonical_json(msgspec.to_builtins(result.environment)))
        )
        if result.key_events:
            data = {"key_events": msgspec.to_builtins(result.key_events)}
            rows.append((result.year, "timeline", canonical_json(data)))
    return sorted(rows)


def result_rows(store: Store, run_id: UUID) -> list[tuple[int, str, Any]]:
    from projections import queries

    return sorted(
        (row["year"], row["result_type"], canonical_json(row["data"]))
        for row in queries.results(store, str(run_id))
    )


def copy_events(source: TwinLedger, target: TwinLedger) -> int:
    """Append every stored event of ``source`` to ``target``, in log order."""
    position, copied = 0, 0
    while True:
        notes = source.recorder.select_notifications(
            start=position, limit=500, inclusive_of_start=False
        )
        if not notes:
            return copied
        target.recorder.insert_events(
            [StoredEvent(n.originator_id, n.originator_version, n.topic, n.state) for n in notes]
        )
        position = notes[-1].id
        copied += len(notes)


def projector(ledger: TwinLedger, **options: Any) -> Projector:
    assert ledger.database is not None
    return Projector(ledger.database, **options)
