"""The service layer (infrastructure/service.py): the Python API the CLI and HTTP API call."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from domain.errors import InvalidTransition, NotFound, ValidationError
from infrastructure.service import Ledger

ROOT = Path(__file__).parent.parent
BUDGET = 1_000_000_000_000

SPEC: dict[str, Any] = {
    "name": "search",
    "body": "mars",
    "pattern": "mars_terraform",
    "years": 10,
    "master_seed": 7,
    "samples": 1,
    "max_iterations": 2,
    "objective": {"kind": "maximize_habitability"},
    "base": {"budget_cents": BUDGET},
    "space": {"tech_level": [3, 6]},
}

BODY_FILE: dict[str, Any] = {
    "key": "kepler-b",
    "name": "Kepler-b",
    "state": {
        "atmosphere": {
            "surface_pressure_kpa": 50.0,
            "mean_temperature_k": 250.0,
            "composition_pct": {"N2": 80.0, "CO2": 20.0},
        },
        "hydrosphere": {"water_ice_kg": 1e18, "liquid_water_kg": 0.0},
        "geosphere": {
            "mass_kg": 5e24,
            "mean_radius_km": 6000.0,
            "surface_gravity_m_s2": 9.0,
            "bond_albedo": 0.3,
            "solar_flux_w_m2": 1000.0,
        },
    },
}


@pytest.fixture
def service(database_url: str, clock: Any) -> Iterator[Ledger]:
    with Ledger.open(database_url, clock=clock) as ledger:
        yield ledger


def test_clone_run_read_verify(service: Ledger) -> None:
    twin = service.clone_twin(name="Mars A", body="mars", expires_in="30d")
    assert twin.status == "ready" and twin.source_body == "mars"
    run = service.queue_run(
        twin.id, pattern="mars_terraform", years=20, budget_cents=BUDGET, seed=3
    )
    assert run.status == "queued" and run.current_year == 0  # read your writes: the row is there
    done = service.execute_run(run.id)
    assert (done.status, done.current_year) == ("completed", 20)
    assert isinstance(done.total_spend_cents, int)
    economic = service.results(run.id, result_type="economic")
    assert [row.year for row in economic] == list(range(1, 21))
    assert all(isinstance(row.data["balance_cents"], int) for row in economic)
    verdict = service.replay_run(run.id)
    assert verdict.identical and verdict.digest == done.result_digest
    state = service.state_at_year(run.id, 7)
    assert state.year == 7 and state.economic == economic[6].data
    events = service.events(run.id)
    assert events[0].topic.endswith(":RunQueued") and events[-1].topic.endswith(":RunCompleted")
    assert [e.originator_version for e in events] == list(range(1, len(events) + 1))
    later = service.events(run.id, after_version=len(events) - 2)
    assert [e.originator_version for e in later] == [len(events) - 1, len(events)]
    assert service.twin(twin.id).completed_run_count == 1
    assert service.projections().projections[0].lag == 0


def test_clone_from_body_content_names_the_bad_field(service: Ledger) -> None:
    twin = service.clone_twin(name="K", body_file=BODY_FILE)
    assert twin.source_body == "kepler-b"
    before = service.event_count()
    bad = {**BODY_FILE, "state": {**BODY_FILE["state"], "geosphere": {"mass_kg": -1}}}
    with pytest.raises(ValidationError) as refused:
        service.clone_twin(name="K", body_file=bad)
    assert refused.value.field.startswith("body_file.state.geosphere")
    assert service.event_count() == before


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s, t: s.queue_run(t, pattern="nope", years=5, budget_cents=1), "pattern"),
        (lambda s, t: s.queue_run(t, pattern="mars_terraform", years=5, budget_cents=1.5), "cents"),
        (lambda s, t: s.queue_run(t, pattern="mars_terraform", years=0, budget_cents=1), "years"),
        (lambda s, t: s.extend_twin(t, by="forever"), "by"),
        (lambda s, t: s.clone_twin(name="\x00", body="mars"), "name"),
        (lambda s, t: s.twins(limit=0), "limit"),
        (lambda s, t: s.twins(cursor="bm90IGEgY3Vyc29y"), "cursor"),
        (lambda s, t: s.run("not-an-id"), "run_id"),
        (lambda s, t: s.events(t, limit=10**6), "limit"),
    ],
)
def test_refusals_name_the_field_and_write_nothing(
    service: Ledger, call: Callable[[Ledger, str], Any], field: str
) -> None:
    twin = service.clone_twin(name="Mars", body="mars")
    before = service.event_count()
    with pytest.raises(ValidationError) as refused:
        call(service, twin.id)
    assert field in refused.value.field or field in str(refused.value)
    assert service.event_count() == before


def test_not_found_and_ended_twins(service: Ledger) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(NotFound):
        service.twin(missing)
    with pytest.raises(NotFound):
        service.run(missing)
    twin = service.clone_twin(name="Mars", body="mars")
    deleted = service.delete_twin(twin.id, reason="done")
    assert (deleted.status, deleted.ended_reason) == ("deleted", "deleted")
    before = service.event_count()
    with pytest.raises(InvalidTransition):
        service.queue_run(twin.id, pattern="mars_terraform", years=5, budget_cents=BUDGET)
    assert service.event_count() == before


def test_keyset_pages_cover_every_twin_once(service: Ledger, clock: Any) -> None:
    made = []
    for index in range(7):
        made.append(service.clone_twin(name=f"t{index}", body="mars" if index % 2 else "venus").id)
        clock.advance(seconds=1)
    seen: list[str] = []
    cursor = None
    while True:
        page = service.twins(limit=3, cursor=cursor)
        seen += [twin.id for twin in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(made) and len(seen) == len(set(seen))
    venus = service.twins(body="venus", limit=100).items
    assert {t.source_body for t in venus} == {"venus"} and len(venus) == 4


def test_cancel_extend_and_lifecycle(service: Ledger, clock: Any) -> None:
    twin = service.clone_twin(name="Mars", body="mars", expires_in="1d")
    run = service.queue_run(twin.id, pattern="mars_terraform", years=5, budget_cents=BUDGET)
    assert service.cancel_run(run.id, reason="wrong budget").status == "cancelled"
    extended = service.extend_twin(twin.id, by=timedelta(days=2))
    assert extended.expires_at > twin.expires_at
    clock.advance(days=10)
    report = service.expire()
    assert report.expired == 1 and service.twin(twin.id).ended_reason == "expired"
    retention = service.apply_retention(dry_run=True)
    assert retention.dry_run


def test_archive_round_trip(service: Ledger, tmp_path: Path) -> None:
    twin = service.clone_twin(name="Mars", body="mars")
    run = service.execute_run(
        service.queue_run(twin.id, pattern="mars_terraform", years=5, budget_cents=BUDGET).id
    )
    buffer = io.BytesIO()
    count = service.archive(buffer, run_id=run.id)
    assert count == service.event_count()
    file = tmp_path / "a.jsonl"
    file.write_bytes(buffer.getvalue())
    with Ledger.open(f"sqlite:///{tmp_path}/other.db") as other:
        assert other.import_archive(file).events_written == count
        assert other.run(run.id).result_digest == run.result_digest


def test_experiment_started_then_continued_replays(service: Ledger) -> None:
    started = service.start_experiment(SPEC)
    assert started.status == "running" and started.iterations == 0
    detail = service.continue_experiment(started.id)
    assert detail.experiment.status == "completed"
    assert [it.iteration for it in detail.iterations] == list(range(len(detail.iterations)))
    assert service.replay_experiment(started.id).identical
    assert service.experiments().items[0].id == started.id
    with pytest.raises(ValidationError) as refused:
        service.start_experiment({**SPEC, "years": "ten"})
    assert refused.value.field == "years"


def test_example_script_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "examples" / "api_example.py")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "replay: identical" in done.stdout


def test_results_json_equals_results(service: Ledger) -> None:
    """The HTTP fast path (JSON joined from the stored text) holds exactly the decoded rows."""
    import json

    twin = service.clone_twin(name="Mars", body="mars")
    run = service.execute_run(
        service.queue_run(
            twin.id, pattern="mars_terraform", years=120, budget_cents=BUDGET, seed=9
        ).id
    )
    for options in (
        {},
        {"result_type": "timeline"},
        {"result_type": "economic", "from_year": 50, "to_year": 60},
        {"from_year": 200},
    ):
        fast = json.loads(service.results_json(run.id, **options))
        assert fast == [row.model_dump() for row in service.results(run.id, **options)]
    with pytest.raises(ValidationError):
        service.results_json(run.id, result_type="weather")
    with pytest.raises(NotFound):
        service.results_json("00000000-0000-4000-8000-000000000000")
