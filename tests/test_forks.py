"""Forks on SQLite and PostgreSQL: a fork at year N is its parent up to N, follows its changes
after, replays identically (checking its prefix against the parent, or alone without it), and
hostile fork inputs are refused naming the field with nothing written."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from storage import rewrite_stored_event
from typer.testing import CliRunner

from domain.catalog import CATALOG
from domain.engine import RunInputs, Simulation
from domain.errors import ValidationError
from domain.interventions import ForkPoint, RunChanges
from domain.replay import replay
from domain.values import Pattern, RunParameters, RunStatus, YearResult
from infrastructure.application import TwinLedger
from infrastructure.archive import export, import_archive
from infrastructure.cli import app

BUDGET = 1_000_000_000_000
YEARS = 40
runner = CliRunner()


def twinledger(db: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--db", db, *args])
    return result.exit_code, result.stdout, result.stderr


def parent_run(ledger: TwinLedger, *, years: int = YEARS, seed: int = 42, **kw: Any) -> UUID:
    twin_id = ledger.clone_twin(name="Mars", body="mars")
    run_id = ledger.queue_run(
        twin_id,
        pattern="mars_terraform",
        duration_years=years,
        budget_cents=BUDGET,
        seed=seed,
        **kw,
    )
    assert ledger.execute_run(run_id).status == RunStatus.COMPLETED
    return run_id


def executed_fork(ledger: TwinLedger, parent: UUID, **changes: Any) -> UUID:
    fork_id = ledger.fork_run(parent, **changes)
    assert ledger.execute_run(fork_id).status == RunStatus.COMPLETED
    return fork_id


def numbers(year: YearResult) -> Any:
    """A year's economic and environmental results (not its key events)."""
    return msgspec.to_builtins((year.economic, year.environment))


def test_a_fork_is_its_parent_up_to_the_fork_year_then_follows_its_changes(
    ledger: TwinLedger,
) -> None:
    parent = parent_run(ledger)
    fork = executed_fork(ledger, parent, at_year=15, tech_level=9, budget_cents=2 * BUDGET)
    parents, forks = list(ledger.recorded_years(parent)), list(ledger.recorded_years(fork))
    assert len(forks) == YEARS
    assert forks[:15] == parents[:15]  # years 1..N: the parent's, key events included
    assert numbers(forks[15]) != numbers(parents[15])  # year N+1 follows the changes
    forked = [event for event in forks[15].key_events if event.name == "forked"]
    assert len(forked) == 1 and f"from run {parent} after year 15" in forked[0].description
    # the budget doubled: the balance rose by the difference at the start of year 16
    assert forked[0].data["change_cents"] == BUDGET
    run = ledger.get_run(fork)
    assert run.fork is not None and run.fork.parent_run_id == parent and run.fork.at_year == 15
    assert run.fork.changes.tech_level == 9
    report = ledger.replay_run(fork)
    assert report.identical and report.complete and report.years == YEARS
    assert report.digest == run.result_digest
    assert report.parent_note is not None and "checked against parent" in report.parent_note


def test_without_a_new_seed_the_fork_continues_its_parents_random_stream(
    ledger: TwinLedger,
) -> None:
    """A change with no effect (the default target temperature) leaves every draw in place:
    the fork's years are the parent's throughout, so the PRNG state at N is the parent's."""
    parent = parent_run(ledger)
    fork = executed_fork(ledger, parent, at_year=10, pattern_params={"target_temperature_k": 288})
    parents, forks = list(ledger.recorded_years(parent)), list(ledger.recorded_years(fork))
    assert [numbers(y) for y in forks] == [numbers(y) for y in parents]


def test_a_fork_with_a_new_seed_differs_after_the_fork_year(ledger: TwinLedger) -> None:
    parent = parent_run(ledger)
    fork = executed_fork(ledger, parent, at_year=12, seed=7)
    parents, forks = list(ledger.recorded_years(parent)), list(ledger.recorded_years(fork))
    assert [numbers(y) for y in forks[:12]] == [numbers(y) for y in parents[:12]]
    assert numbers(forks[12]) != numbers(parents[12])  # funding drawn from the new stream
    again = executed_fork(ledger, parent, at_year=12, seed=7)
    assert ledger.get_run(again).result_digest == ledger.get_run(fork).result_digest
    assert ledger.replay_run(fork).identical


def test_a_fork_of_a_fork_carries_the_whole_lineage_and_replays(ledger: TwinLedger) -> None:
    parent = parent_run(ledger)
    child = executed_fork(ledger, parent, at_year=20, tech_level=8)
    grandchild = executed_fork(ledger, child, at_year=10, seed=3)
    run = ledger.get_run(grandchild)
    assert [point.parent_run_id for point in run.forks] == [parent, child]
    children = list(ledger.recorded_years(child))
    assert list(ledger.recorded_years(grandchild))[:10] == children[:10]
    assert ledger.replay_run(grandchild).identical
    assert ledger.children_of(parent) == [(child, 20)]
    assert ledger.children_of(child) == [(grandchild, 10)]


def test_a_fork_replays_without_its_parent_in_the_store(
    ledger: TwinLedger, other_database_url: str, tmp_path: Path
) -> None:
    parent = parent_run(ledger)
    fork = executed_fork(ledger, parent, at_year=15, seed=11)
    archive = io.BytesIO()
    export(ledger, archive, run_id=str(fork))  # the fork and its twin, not the parent
    path = tmp_path / "fork.jsonl"
    path.write_bytes(archive.getvalue())
    elsewhere = TwinLedger.open(other_database_url)
    try:
        import_archive(elsewhere, path)
        with pytest.raises(Exception, match="run_id"):
            elsewhere.get_run(parent)
        report = elsewhere.replay_run(fork)
        assert report.identical and report.digest == ledger.get_run(fork).result_digest
        assert report.parent_note is not None and "not in this store" in report.parent_note
    finally:
        elsewhere.close()


def test_a_changed_parent_year_is_named_by_the_forks_replay(
    ledger: TwinLedger, database_url: str
) -> None:
    parent = parent_run(ledger)
    fork = executed_fork(ledger, parent, at_year=15, tech_level=9)
    version = next(
        event.originator_version
        for event in ledger.repository.event_store.get(parent)
        if getattr(event, "year", None) == 7
    )

    def colder(state: dict[str, Any]) -> None:
        state["environment"]["temperature_k"] -= 1.0

    rewrite_stored_event(database_url, parent, version, colder)
    report = ledger.replay_run(fork)
    assert report.divergence is not None
    assert report.divergence.year == 7
    assert report.divergence.field == f"parent {parent} environment.temperature_k"


def test_show_run_prints_the_lineage_both_ways(ledger: TwinLedger, database_url: str) -> None:
    parent = parent_run(ledger)
    code, out, err = twinledger(
        database_url, "fork", str(parent), "--at-year", "15", "--tech-level", "8",
        "--intervene", "30:hazard=dust_storm",
    )  # fmt: skip
    assert code == 0, err
    fork = ledger.children_of(parent)[0][0]
    code, out, _ = twinledger(database_url, "show-run", str(fork))
    assert code == 0
    assert f"{parent} after year 15" in out and "tech_level=8" in out
    assert "intervene 30:hazard=dust_storm" in out
    code, out, _ = twinledger(database_url, "show-run", str(parent))
    assert f"{fork} after year 15" in out
    code, out, _ = twinledger(database_url, "replay", str(fork))
    assert code == 0 and out.startswith(f"identical: {YEARS} years") and "parent" in out


def test_show_run_json_carries_parent_fork_year_changes_and_forks(
    ledger: TwinLedger, database_url: str
) -> None:
    parent = parent_run(ledger)
    fork = executed_fork(ledger, parent, at_year=15, tech_level=8)
    grandchild = executed_fork(ledger, fork, at_year=25, seed=7)

    def shown(run: UUID) -> dict[str, Any]:
        code, out, err = twinledger(database_url, "show-run", str(run), "--format", "json")
        assert code == 0, err
        record: dict[str, Any] = json.loads(out)
        assert record["id"] == str(run) and record["status"] == "completed"
        assert record["lineage"]["run_id"] == str(run)
        return record

    root = shown(parent)
    assert root["forked_from"] is None and root["lineage"]["lineage"] == []
    assert root["lineage"]["forks"] == [{"run_id": str(fork), "at_year": 15}]
    middle = shown(fork)
    assert middle["forked_from"]["parent_run_id"] == str(parent)
    assert middle["forked_from"]["at_year"] == 15
    assert middle["forked_from"]["changes"]["tech_level"] == 8
    assert "tech_level=8" in middle["forked_from"]["described"]
    assert middle["lineage"]["forks"] == [{"run_id": str(grandchild), "at_year": 25}]
    last = shown(grandchild)
    assert (last["forked_from"]["parent_run_id"], last["forked_from"]["at_year"]) == (str(fork), 25)
    assert last["forked_from"]["changes"]["seed"] == 7
    assert [p["parent_run_id"] for p in last["lineage"]["lineage"]] == [str(parent), str(fork)]
    assert last["lineage"]["forks"] == []


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--at-year", "0", "--seed", "1"], "at_year"),
        (["--at-year", str(YEARS), "--seed", "1"], "at_year"),
        (["--at-year", "2000", "--seed", "1"], "at_year"),
        (["--at-year", "10"], "changes"),
        (["--at-year", "10", "--budget", "1.5"], "budget_cents"),
        (["--at-year", "10", "--budget", "-5"], "budget_cents"),
        (["--at-year", "10", "--seed", str(2**63)], "seed"),
        (["--at-year", "10", "--seed", "-1"], "seed"),
        (["--at-year", "10", "--tech-level", "11"], "tech_level"),
        (["--at-year", "10", "--priority", "urgent"], "priority"),
        (["--at-year", "10", "--param", "warp_drive=1"], "pattern_params.warp_drive"),
        (["--at-year", "10", "--param", "spend_scale=nan"], "pattern_params.spend_scale"),
        (["--at-year", "10", "--param", "spend_scale=1e400"], "pattern_params.spend_scale"),
        (["--at-year", "10", "--param", "bad\x00name=1"], "pattern_params"),
        (["--at-year", "10", "--intervene", "5:hazard=dust_storm"], "interventions[0].year"),
        (["--at-year", "10", "--intervene", "20:hazard=dust\x00storm"], "interventions[0]"),
        (["--at-year", "\u0661\u0660", "--seed", "1"], "at_year"),
        (["--at-year", "10", "--seed", "1_000"], "seed"),
        (["--at-year", "10", "--tech-level", "\u00b2"], "tech_level"),
        (["--at-year", "10", "--budget", "1_000"], "budget_cents"),
    ],
)
def test_hostile_fork_inputs_exit_2_naming_the_field_and_write_nothing(
    ledger: TwinLedger, database_url: str, args: list[str], field: str
) -> None:
    parent = parent_run(ledger)
    before = ledger.event_count()
    code, _, err = twinledger(database_url, "fork", str(parent), *args)
    assert code == 2, err
    assert err.startswith(f"error: {field}"), err
    assert ledger.event_count() == before


def test_forking_needs_the_parents_years_and_a_known_parent(
    open_ledger: Callable[[], TwinLedger],
) -> None:
    ledger = open_ledger()
    twin_id = ledger.clone_twin(name="Mars", body="mars")
    queued = ledger.queue_run(
        twin_id, pattern="mars_terraform", duration_years=YEARS, budget_cents=BUDGET, seed=1
    )
    before = ledger.event_count()
    with pytest.raises(ValidationError, match=r"at_year: .* has 0 year"):
        ledger.fork_run(queued, at_year=5, seed=2)
    with pytest.raises(Exception, match="run_id"):
        ledger.fork_run(UUID(int=5), at_year=5, seed=2)
    assert ledger.event_count() == before


def test_compare_shows_where_parent_and_fork_part(ledger: TwinLedger, database_url: str) -> None:
    parent = parent_run(ledger)
    fork = executed_fork(ledger, parent, at_year=15, seed=4)
    code, out, err = twinledger(database_url, "compare", str(parent), str(fork), "--format", "json")
    assert code == 0, err
    assert json.loads(out)["first_divergence"]["year"] == 16


@settings(max_examples=25, deadline=None)
@given(
    at_year=st.integers(1, 11),
    seed=st.integers(0, 2**63 - 1),
    new_seed=st.none() | st.integers(0, 2**63 - 1),
    tech_level=st.none() | st.integers(1, 10),
)
def test_a_forks_prefix_is_its_parents_whatever_the_changes(
    at_year: int, seed: int, new_seed: int | None, tech_level: int | None
) -> None:
    """Pure engine: years 1..N of any fork equal its parent's, and it replays identically."""
    parent = RunInputs(
        state=CATALOG["mars"].state,
        pattern=Pattern.MARS_TERRAFORM,
        duration_years=12,
        parameters=RunParameters(budget_cents=BUDGET),
        seed=seed,
    )
    point = ForkPoint(
        parent_run_id=UUID(int=1),
        at_year=at_year,
        changes=RunChanges(seed=new_seed, tech_level=tech_level, budget_cents=BUDGET // 2),
    )
    fork = msgspec.structs.replace(parent, forks=[point])
    simulation, forked = Simulation(parent), Simulation(fork)
    parents = [simulation.step() for _ in range(12)]
    forks = [forked.step() for _ in range(12)]
    assert forks[:at_year] == parents[:at_year]
    assert forks[at_year].key_events[0].name == "forked"
    assert replay(fork, forks, None, None).identical


def test_the_what_if_example_runs_as_documented(tmp_path: Path) -> None:
    """docs/examples/what-if.sh, end to end on SQLite, with this checkout's code."""
    script = Path(__file__).parent.parent / "docs" / "examples" / "what-if.sh"
    shim = tmp_path / "bin" / "twinledger"
    shim.parent.mkdir()
    shim.write_text(
        f'#!/bin/sh\nexec {sys.executable} -c "from infrastructure.cli import main; main()" "$@"\n'
    )
    shim.chmod(0o755)
    root = str(Path(__file__).parent.parent)
    env = dict(os.environ)
    env["PATH"] = f"{shim.parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env["COLUMNS"] = "200"
    done = subprocess.run(
        ["bash", str(script), str(tmp_path / "what-if.db")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("identical: 150 years") == 2
    assert "prefix checked against parent" in done.stdout
    assert "first diverging year: 51" in done.stdout


def test_the_http_api_forks_and_shows_the_lineage(database_url: str) -> None:
    from test_http_api import API, client_for

    with client_for(database_url) as client:
        twin = client.post(f"{API}/twins", json={"name": "Mars", "body": "mars"}).json()
        body = {"twin_id": twin["id"], "pattern": "mars_terraform", "years": 20}
        queued = client.post(
            f"{API}/runs",
            json={
                **body,
                "budget_cents": BUDGET,
                "seed": 1,
                "interventions": ["5:hazard=dust_storm"],
            },
        )
        assert queued.status_code == 202, queued.text
        parent = queued.json()["id"]
        ledger = TwinLedger.open(database_url)
        try:
            ledger.execute_run(parent)
            before = ledger.event_count()
            bad = client.post(f"{API}/runs/{parent}/fork", json={"at_year": 20, "seed": 2})
            assert bad.status_code == 422 and "at_year" in bad.text
            bad = client.post(
                f"{API}/runs/{parent}/fork",
                json={"at_year": 8, "interventions": [{"year": 3, "key": "hazard", "value": "x"}]},
            )
            assert bad.status_code == 422 and "interventions[0].year" in bad.text
            assert ledger.event_count() == before
            forked = client.post(f"{API}/runs/{parent}/fork", json={"at_year": 8, "tech_level": 9})
            assert forked.status_code == 202, forked.text
            assert forked.headers["location"].endswith(f"runs/{forked.json()['id']}")
            child = forked.json()["id"]
            assert UUID(child) in client.executor.runs  # type: ignore[attr-defined]
            lineage = client.get(f"{API}/runs/{parent}/lineage").json()
            assert lineage["interventions"] == ["5:hazard=dust_storm"]
            assert lineage["forks"] == [{"run_id": child, "at_year": 8}]
            assert lineage["provenance"]["packages"].keys() == {"msgspec"}
            points = client.get(f"{API}/runs/{child}/lineage").json()["lineage"]
            assert points[0]["parent_run_id"] == parent and points[0]["changes"]["tech_level"] == 9
        finally:
            ledger.close()
