"""Twins end: expiry with time travel, idempotent, in bulk, cancelling runs; retention of rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from conftest import Clock
from typer.testing import CliRunner

from domain.values import RunStatus, TwinStatus
from infrastructure.application import TwinLedger
from infrastructure.cli import app
from infrastructure.expiry import expire_twins
from infrastructure.retention import Windows, apply_retention
from projections import queries
from projections.runner import ProjectionsStopped, Projector

BUDGET = 1_000_000_000_000


@pytest.fixture
def projector(ledger: TwinLedger) -> Iterator[Projector]:
    assert ledger.database is not None
    with Projector(ledger.database) as running:
        yield running


def test_expiry_follows_the_clock_and_is_idempotent(
    ledger: TwinLedger, projector: Projector, clock: Clock
) -> None:
    soon = ledger.clone_twin(name="Soon", body="mars", expires_in=timedelta(days=1))
    later = ledger.clone_twin(name="Later", body="venus", expires_in=timedelta(days=10))
    gone = ledger.clone_twin(name="Gone", body="moon", expires_in=timedelta(days=1))
    ledger.delete_twin(gone, reason="done")
    projector.catch_up()

    assert expire_twins(ledger, projector).expired == 0  # nothing has expired yet
    clock.advance(days=2)
    report = expire_twins(ledger, projector)
    assert (report.expired, report.examined) == (1, 1)
    twin = ledger.get_twin(soon)
    assert twin.status == TwinStatus.DELETED and twin.ended_reason == "expired"
    assert twin.ended_at == clock.now
    assert ledger.get_twin(later).status == TwinStatus.READY
    assert ledger.get_twin(gone).ended_reason == "deleted"

    before = ledger.event_count()
    assert expire_twins(ledger, projector).expired == 0  # even before the tables catch up
    projector.catch_up()
    assert expire_twins(ledger, projector).expired == 0
    assert ledger.event_count() == before
    row = next(r for r in queries.twins(projector.store) if r["id"] == str(soon))
    assert row["status"] == "deleted" and row["ended_reason"] == "expired"


def test_runs_of_an_expiring_twin_are_cancelled_in_the_same_write(
    ledger: TwinLedger, projector: Projector, clock: Clock
) -> None:
    twin_id = ledger.clone_twin(name="Mars", body="mars", expires_in=timedelta(hours=1))
    queued = ledger.queue_run(
        twin_id, pattern="mars_terraform", duration_years=30, budget_cents=BUDGET
    )
    running = ledger.queue_run(
        twin_id, pattern="mars_terraform", duration_years=30, budget_cents=BUDGET
    )

    class Interrupted(BaseException):
        pass

    def interrupt(done: int, total: int) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        ledger.execute_run(running, chunk_years=10, on_progress=interrupt)
    assert ledger.get_twin(twin_id).status == TwinStatus.RUNNING_SIMULATION
    projector.catch_up()
    clock.advance(hours=2)
    report = expire_twins(ledger, projector)
    assert (report.expired, report.runs_cancelled) == (1, 2)
    for run_id in (queued, running):
        run = ledger.get_run(run_id)
        assert run.status == RunStatus.CANCELLED and run.error_message == "twin expired"
    twin = ledger.get_twin(twin_id)
    assert twin.status == TwinStatus.DELETED and not twin.active_runs


def test_ten_thousand_twins_expire_in_one_call(
    ledger: TwinLedger, projector: Projector, clock: Clock
) -> None:
    from domain.catalog import CATALOG
    from domain.twin import DigitalTwin

    mars = CATALOG["mars"]
    expires = clock.now + timedelta(days=1)
    for start in range(0, 10_000, 1000):
        twins = [
            DigitalTwin.clone(
                name=f"bulk {start + n}",
                description="",
                source_body="mars",
                solar_system="Sol",
                created_by="test",
                simulation_type=mars.simulation_type,
                state=mars.state,
                simulation_parameters={},
                expires_at=expires + timedelta(seconds=(start + n) % 7),
            )
            for n in range(1000)
        ]
        ledger.save(*twins)
    keeper = ledger.clone_twin(name="keeper", body="mars", expires_in=timedelta(days=30))
    projector.catch_up()
    clock.advance(days=2)
    report = expire_twins(ledger, projector, batch=500)
    assert report.expired == 10_000 and report.examined == 10_000
    projector.catch_up()
    statuses = {row["status"] for row in queries.twins(projector.store) if row["id"] != str(keeper)}
    assert statuses == {"deleted"}
    assert expire_twins(ledger, projector).expired == 0


def test_retention_removes_old_rows_and_a_rebuild_restores_them(
    ledger: TwinLedger, projector: Projector, clock: Clock
) -> None:
    twin_id = ledger.clone_twin(name="Old", body="mars", expires_in=timedelta(days=1))
    run_id = ledger.queue_run(
        twin_id, pattern="mars_terraform", duration_years=5, budget_cents=BUDGET
    )
    ledger.execute_run(run_id)
    fresh = ledger.clone_twin(name="Fresh", body="mars", expires_in=timedelta(days=900))
    clock.advance(days=2)
    expire_twins(ledger, projector)
    projector.catch_up()
    rows = lambda: (  # noqa: E731
        len(queries.twins(projector.store)),
        len(queries.runs(projector.store)),
        len(queries.results(projector.store, str(run_id))) if queries.runs(projector.store) else 0,
    )
    before = rows()
    assert before[:2] == (2, 1) and before[2] >= 10  # 5 years: economic + environmental rows

    clock.advance(days=400)  # runs (1 year) and twins (90 days) are past, results (2 years) not
    report = apply_retention(projector, clock.now, dry_run=True)
    assert (report.results, report.runs, report.twins) == (0, 0, 0)  # results hold the run
    assert rows() == before

    clock.advance(days=400)  # now everything of the old twin is past its window
    dry = apply_retention(projector, clock.now, dry_run=True)
    assert (dry.results, dry.runs, dry.twins) == (before[2], 1, 1)
    assert rows() == before
    done = apply_retention(projector, clock.now)
    assert (done.results, done.runs, done.twins) == (before[2], 1, 1) and not done.dry_run
    assert [row["id"] for row in queries.twins(projector.store)] == [str(fresh)]
    assert queries.runs(projector.store) == []

    projector.rebuild(None)  # the log still has everything
    assert rows() == before
    shorter = apply_retention(projector, clock.now, Windows(results=timedelta(days=10**5)))
    assert (shorter.results, shorter.runs, shorter.twins) == (0, 0, 0)


class TablesStuck(ProjectionsStopped):
    """A projection that cannot apply an event (as ProjectionsStopped says, shortened)."""

    def __init__(self) -> None:
        Exception.__init__(self, "projection runs stopped at event 7 (RunQueued): cannot decode")
        self.stops = []


def test_expiry_and_retention_go_on_when_the_tables_cannot_catch_up(
    ledger: TwinLedger,
    projector: Projector,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    twin_id = ledger.clone_twin(name="Old", body="mars", expires_in=timedelta(days=1))
    projector.catch_up()

    def stuck(self: Projector, names: object = None) -> dict[str, int]:
        raise TablesStuck()

    monkeypatch.setattr(Projector, "catch_up", stuck)
    clock.advance(days=2)
    report = expire_twins(ledger, projector)
    assert (report.expired, report.behind) == (1, str(TablesStuck()))
    assert ledger.get_twin(twin_id).status == TwinStatus.DELETED

    clock.advance(days=1000)  # the table still says the twin is live: nothing of it goes
    retained = apply_retention(projector, clock.now)
    assert (retained.twins, retained.behind) == (0, str(TablesStuck()))
    assert [row["id"] for row in queries.twins(projector.store)] == [str(twin_id)]

    for command in (["expire"], ["retention", "apply", "--dry-run"]):  # warned, then exit 1
        result = CliRunner().invoke(app, ["--db", database_url, *command])
        assert result.exit_code == 1, (result.stdout, result.stderr)
        assert f"warning: {TablesStuck()}" in result.stderr.splitlines()
        assert result.stdout.startswith(("expired 0 twins", "would remove 0 "))
