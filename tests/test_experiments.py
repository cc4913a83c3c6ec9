"""Experiments: a deterministic parameter search whose runs and decisions replay identically."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from storage import rewrite_stored_event

from domain.errors import TwinLedgerError
from domain.experiment import Experiment, RunPurpose, final_seed, sample_seed
from infrastructure.application import TwinLedger
from infrastructure.experiments import (
    ExperimentFile,
    get_experiment,
    read_experiment_file,
    replay_experiment,
    resolve_run,
    run_experiment,
    runs_of,
)
from infrastructure.inputs import validate

EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "mars-search.toml"


def spec_data(**overrides: Any) -> dict[str, Any]:
    """A small search spec as a user hands it in (the body of POST /experiments, a spec file)."""
    data: dict[str, Any] = {
        "name": "search",
        "body": "mars",
        "pattern": "mars_terraform",
        "years": 15,
        "master_seed": 7,
        "samples": 2,
        "max_iterations": 5,
        "objective": {"kind": "maximize_habitability", "max_cost_cents": 900_000_000_000},
        "base": {"budget_cents": 1_000_000_000_000},
        "space": {"tech_level": [3, 6, 9], "budget_cents": [400_000_000_000, 800_000_000_000]},
    }
    data.update(overrides)
    return data


def small_spec(**overrides: Any) -> ExperimentFile:
    return validate(ExperimentFile, spec_data(**overrides), root="spec")


def fingerprint(ledger: TwinLedger, experiment: Experiment) -> list[Any]:
    """Everything that must be identical between two executions of the same spec."""
    rows: list[Any] = []
    for it in experiment.iterations:
        digests = [ledger.get_run(s.run_id).result_digest for s in it.samples]
        rows.append(
            (it.iteration, it.parameters, it.objective_value, it.cost_cents, it.accepted, digests)
        )
    final = experiment.final_run
    rows.append(
        (
            experiment.reason,
            experiment.best_iteration,
            None if final is None else final.result_digest,
        )
    )
    return rows


def test_sample_seeds_follow_the_documented_rule() -> None:
    expected = int.from_bytes(hashlib.sha256(b"42:sample:0").digest()[:8], "big") >> 1
    assert sample_seed(42, 0) == expected
    assert sample_seed(42, 1) != sample_seed(42, 0) != sample_seed(43, 0)
    assert 0 <= final_seed(42) < 2**63


def test_the_same_spec_gives_identical_experiments_serial_and_parallel(
    open_ledger: Callable[[], TwinLedger],
) -> None:
    ledger = open_ledger()
    spec = small_spec()
    serial = run_experiment(ledger, spec)
    again = run_experiment(ledger, spec)
    parallel = run_experiment(ledger, spec, workers=2)
    assert serial.status == "completed"
    assert len(serial.iterations) >= 2
    assert (
        fingerprint(ledger, serial) == fingerprint(ledger, again) == fingerprint(ledger, parallel)
    )
    assert serial.id != again.id
    assert {it.accepted for it in serial.iterations} >= {True}


def test_runs_carry_their_experiment_and_structured_ids_resolve(ledger: TwinLedger) -> None:
    experiment = run_experiment(ledger, small_spec())
    runs = runs_of(experiment)
    first = f"{experiment.id}-iter0-initial-sample1"
    assert resolve_run(ledger, first) == runs[first]
    run = ledger.get_run(runs[first])
    assert (run.experiment_id, run.iteration, run.sample_index, run.run_purpose) == (
        experiment.id,
        0,
        1,
        "initial",
    )
    assert run.seed == sample_seed(7, 1)
    best = experiment.best
    assert best is not None
    final = ledger.get_run(resolve_run(ledger, f"{experiment.id}-iter{best.iteration}-final"))
    assert final.run_purpose == RunPurpose.FINAL and final.sample_index is None
    with pytest.raises(TwinLedgerError, match="run_id"):
        resolve_run(ledger, f"{experiment.id}-iter99-evaluation-sample0")


def test_replay_is_identical_and_detects_a_tampered_iteration(
    ledger: TwinLedger, database_url: str
) -> None:
    experiment = run_experiment(ledger, small_spec())
    report = replay_experiment(ledger, experiment.id)
    assert report.identical, report.differences
    assert report.runs_checked == sum(len(it.samples) for it in experiment.iterations) + 1
    only = replay_experiment(ledger, experiment.id, only="iter1:evaluation:sample0")
    assert only.identical and only.runs_checked == 1

    # Flip iteration 1's decision in the store (iteration N is the experiment's version N + 2).
    def flip(state: dict[str, Any]) -> None:
        state["accepted"] = not state["accepted"]

    rewrite_stored_event(database_url, experiment.id, 3, flip)
    ledger.repository.cache = None  # type: ignore[assignment]
    tampered = replay_experiment(ledger, experiment.id)
    assert not tampered.identical
    assert any(d.startswith("iteration 1: accepted recorded") for d in tampered.differences), (
        tampered.differences
    )


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"years": 0}, "years"),
        ({"samples": 0}, "samples"),
        ({"master_seed": -1}, "master_seed"),
        ({"objective": {"kind": "maximize_fun"}}, "objective.kind"),
        ({"objective": {"kind": "minimize_cost_to_event"}}, "objective"),
        ({"base": {"budget_cents": 1.5}}, "base.budget_cents"),
        ({"space": {"tech_level": [3, 11]}}, "space.tech_level.1"),
        ({"space": {}}, "space"),
        ({"twin": "abc"}, "spec"),
    ],
)
def test_a_bad_spec_names_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(TwinLedgerError, match=f"^{field}:"):
        small_spec(**overrides)


def test_a_bad_spec_file_writes_nothing(ledger: TwinLedger, tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text(EXAMPLE.read_text().replace("years = 60", "years = 1001"))
    before = ledger.event_count()
    with pytest.raises(TwinLedgerError, match=r"^years:"):
        run_experiment(ledger, read_experiment_file(spec))
    spec.write_text("name = ")
    with pytest.raises(TwinLedgerError, match="not valid TOML"):
        read_experiment_file(spec)
    assert ledger.event_count() == before


def test_the_documented_example_runs(ledger: TwinLedger) -> None:
    experiment = run_experiment(ledger, read_experiment_file(EXAMPLE))
    assert experiment.status == "completed"
    assert get_experiment(ledger, experiment.id).iterations == experiment.iterations


def test_a_cost_objective_is_integer_cents(ledger: TwinLedger) -> None:
    spec = small_spec(
        samples=2,
        max_iterations=3,
        objective={"kind": "minimize_cost_to_event", "target_event": "warming_10k"},
    )
    experiment = run_experiment(ledger, spec)
    reached = [it for it in experiment.iterations if it.objective_value is not None]
    assert reached
    for it in reached:
        costs = [sample.cost_to_event_cents for sample in it.samples]
        assert all(type(cost) is int for cost in costs)
        assert type(it.objective_value) is int
        assert it.objective_value == sum(c for c in costs if c is not None) // len(costs)
