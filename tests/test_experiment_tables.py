"""The experiments and experiment_iterations read tables, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import Clock
from typer.testing import CliRunner

from domain.engine import ENGINE_VERSION
from domain.experiment import Experiment
from infrastructure.application import TwinLedger
from infrastructure.cli import app
from infrastructure.experiments import run_experiment
from infrastructure.retention import Windows, apply_retention
from projections import queries
from projections.checksum import canonical_json
from projections.results import ResultsProjection
from projections.runner import Projector
from projections.runs import RunsProjection
from projections.twins import TwinsProjection
from tests.projection_scenario import copy_events
from tests.test_experiments import small_spec
from tests.test_queries_doc import queries as documented
from tests.test_read_cli import ok
from tests.test_read_model_identity import table_text

DOC_EXPERIMENT = "7c2e0f6a-0000-4000-8000-000000000003"


def spec(**overrides: Any) -> Any:
    return small_spec(**{"max_iterations": 4, **overrides})


def never_reached() -> dict[str, Any]:
    """An objective no candidate meets: every iteration infeasible, no best, no final run."""
    return {"kind": "minimize_cost_to_event", "target_event": "never_happens"}


@pytest.fixture
def projector(ledger: TwinLedger) -> Iterator[Projector]:
    assert ledger.database is not None
    with Projector(ledger.database) as opened:
        yield opened


def same_json(value: Any, expected: Any) -> bool:
    """JSON columns compared canonically (jsonb prints some floats differently)."""
    return bool(canonical_json(value) == canonical_json(msgspec.to_builtins(expected)))


def test_the_tables_hold_the_experiment_and_every_iteration(
    ledger: TwinLedger, projector: Projector
) -> None:
    experiment = run_experiment(ledger, spec(), started_by="tester")
    projector.catch_up()
    store = projector.store

    (row,) = queries.experiments(store)
    best = experiment.best
    final = experiment.final_run
    assert best is not None and final is not None
    assert row["id"] == str(experiment.id)
    assert row["digital_twin_id"] == str(experiment.twin_id)
    assert (row["name"], row["pattern"], row["duration_years"]) == ("search", "mars_terraform", 15)
    assert (row["master_seed"], row["samples"], row["max_iterations"]) == (7, 2, 4)
    assert row["objective"] == "maximize_habitability"
    assert same_json(row["spec"], experiment.spec)
    assert (row["engine_version"], row["started_by"]) == (ENGINE_VERSION, "tester")
    assert (row["status"], row["reason"]) == ("completed", experiment.reason)
    assert row["iterations"] == len(experiment.iterations) == 4
    assert row["best_iteration"] == best.iteration
    assert row["best_objective_value"] == best.objective_value
    assert row["best_cost_cents"] == best.cost_cents
    assert type(row["best_cost_cents"]) is int
    assert same_json(row["best_parameters"], best.parameters)
    assert row["final_run_id"] == str(final.run_id)
    assert row["started_at"] <= row["completed_at"] == row["updated_at"]

    iterations = queries.experiment_iterations(store, str(experiment.id))
    runs = {run["id"]: run for run in queries.runs(store)}
    assert [it["iteration"] for it in iterations] == [0, 1, 2, 3]
    # The search accepts some candidates and rejects others: both are recorded.
    assert [it["accepted"] for it in iterations] == [
        int(it.accepted) for it in experiment.iterations
    ]
    assert {it["accepted"] for it in iterations} == {0, 1}
    for it, recorded in zip(iterations, experiment.iterations, strict=True):
        assert it["experiment_id"] == str(experiment.id)
        assert it["purpose"] == recorded.purpose
        assert same_json(it["parameters"], recorded.parameters)
        assert it["objective_value"] == recorded.objective_value
        assert it["cost_cents"] == recorded.cost_cents and type(it["cost_cents"]) is int
        assert it["feasible"] == int(recorded.feasible)
        assert it["sample_run_ids"] == [str(s.run_id) for s in recorded.samples]
        assert len(it["sample_run_ids"]) == 2
        assert it["evaluation_run_id"] == str(recorded.samples[0].run_id)
        run = runs[it["evaluation_run_id"]]  # the link to the evaluation run
        assert (run["experiment_id"], run["iteration"], run["sample_index"]) == (
            str(experiment.id),
            recorded.iteration,
            0,
        )
        assert run["run_purpose"] == recorded.purpose and run["status"] == "completed"
        assert run["habitability_score"] == recorded.samples[0].habitability_score
    assert runs[row["final_run_id"]]["run_purpose"] == "final"


def test_an_experiment_without_a_best_or_that_failed(
    ledger: TwinLedger, projector: Projector
) -> None:
    hopeless = run_experiment(ledger, spec(objective=never_reached()))
    twin = ledger.get_twin(hopeless.twin_id)
    crashed = Experiment.start(
        twin_id=twin.id,
        twin_state=twin.state,
        spec=spec().spec(),
        engine_version=ENGINE_VERSION,
        started_by="tester",
    )
    ledger.save(crashed)
    projector.catch_up()  # the row exists while it runs, then follows its end
    (running,) = queries.experiments(projector.store, status="running")
    assert (running["id"], running["reason"], running["completed_at"]) == (
        str(crashed.id),
        None,
        None,
    )
    crashed.fail("RuntimeError: the engine fell over")
    ledger.save(crashed)
    projector.catch_up()

    rows = {row["id"]: row for row in queries.experiments(projector.store)}
    none = rows[str(hopeless.id)]
    assert (none["status"], none["reason"], none["iterations"]) == ("completed", "converged", 3)
    assert none["best_iteration"] is None and none["best_parameters"] is None
    assert none["best_cost_cents"] is None and none["final_run_id"] is None
    iterations = queries.experiment_iterations(projector.store, str(hopeless.id))
    assert [(it["objective_value"], it["feasible"], it["accepted"]) for it in iterations] == [
        (None, 0, 0)
    ] * 3
    failed = rows[str(crashed.id)]
    assert (failed["status"], failed["reason"]) == ("failed", "RuntimeError: the engine fell over")
    assert failed["iterations"] == 0 and failed["completed_at"] is not None
    assert queries.experiment_iterations(projector.store, str(crashed.id)) == []
    assert [row["id"] for row in queries.experiments(projector.store, twin=str(twin.id))] == [
        str(hopeless.id),
        str(crashed.id),
    ]


def test_a_rebuild_gives_identical_tables(ledger: TwinLedger, projector: Projector) -> None:
    run_experiment(ledger, spec())
    run_experiment(ledger, spec(objective=never_reached()))
    projector.catch_up()
    before = projector.checksums()
    assert before["experiments"][0] == 2 and before["experiment_iterations"][0] == 7
    projector.rebuild(["experiments"])
    assert projector.checksums() == before
    applied = projector.rebuild(["twins"])  # the experiments tables point at twins and runs
    assert "experiments" in applied
    assert projector.checksums() == before
    with Projector(projector.database, batch_size=3) as small:
        small.rebuild()
        assert small.checksums() == before


def test_sqlite_and_postgres_give_the_same_experiment_rows(
    ledger: TwinLedger, database_url: str, other_database_url: str
) -> None:
    run_experiment(ledger, spec())
    other = TwinLedger.open(other_database_url)
    try:
        assert copy_events(ledger, other) == ledger.event_count()
        assert ledger.database is not None and other.database is not None
        with Projector(ledger.database) as here, Projector(other.database, batch_size=50) as there:
            here.catch_up()
            there.catch_up()
            assert here.store.postgres != there.store.postgres
            mine, theirs = here.checksums(), there.checksums()
    finally:
        other.close()
    assert mine == theirs
    assert (mine["experiments"][0], mine["experiment_iterations"][0]) == (1, 4)
    # Row by row, JSON as its stored canonical text, and the CLI's output: the same bytes.
    assert table_text(database_url) == table_text(other_database_url)
    for output in ("json", "csv"):
        listed = ok(database_url, "experiments", "--format", output)
        assert listed == ok(other_database_url, "experiments", "--format", output)


def test_an_existing_database_gets_the_tables_from_the_log(ledger: TwinLedger) -> None:
    """A ledger whose projections predate the experiments tables: they are built from 0."""
    run_experiment(ledger, spec())
    assert ledger.database is not None
    older = (TwinsProjection, RunsProjection, ResultsProjection)
    with Projector(ledger.database, projections=older) as before:
        # Experiment events are not theirs: skipped, never a stop.
        assert set(before.catch_up().values()) == {ledger.event_count()}
        with before.store.reading() as cursor:
            assert not before.store.table_exists(cursor, "experiments")
        old = before.checksums()
    with Projector(ledger.database) as now:
        assert set(now.catch_up().values()) == {ledger.event_count()}
        current = now.checksums()
        assert current["experiment_iterations"][0] == 4
        assert {name: current[name] for name in old} == old
        now.rebuild()
        assert now.checksums() == current


def test_retention_keeps_what_experiments_reference_then_removes_old_experiments(
    ledger: TwinLedger, projector: Projector, clock: Clock
) -> None:
    experiment = run_experiment(ledger, spec(max_iterations=2))
    alone = ledger.queue_run(
        experiment.twin_id, pattern="mars_terraform", duration_years=3, budget_cents=10**12
    )
    ledger.execute_run(alone)
    ledger.delete_twin(experiment.twin_id, reason="done")
    projector.catch_up()
    before = projector.checksums(["experiments"])
    experiment_runs = {
        row["id"] for row in queries.runs(projector.store) if row["experiment_id"] is not None
    }
    assert len(experiment_runs) == 2 * 2 + 1

    # Past every window but the experiments': results, the standalone run; the twin is kept.
    later = clock.now + timedelta(days=3000)
    report = apply_retention(projector, later, Windows(experiments=timedelta(days=4000)))
    assert (report.runs, report.twins, report.experiments) == (1, 0, 0) and report.results > 0
    assert {row["id"] for row in queries.runs(projector.store)} == experiment_runs
    assert [row["id"] for row in queries.twins(projector.store)] == [str(experiment.twin_id)]
    assert projector.checksums(["experiments"]) == before
    projector.rebuild(["experiments"])  # its runs are still there to point at
    assert projector.checksums(["experiments"]) == before

    # The default experiments window (1 year) has passed too: the experiment goes with its
    # iterations, then its runs and its twin; a dry run counts the same.
    counted = apply_retention(projector, later, dry_run=True)
    assert (counted.experiments, counted.runs, counted.twins) == (1, 5, 1)
    report = apply_retention(projector, later)
    assert (report.experiments, report.runs, report.twins) == (1, 5, 1)
    assert queries.experiments(projector.store) == [] and queries.runs(projector.store) == []
    assert queries.twins(projector.store) == []


def test_retention_keeps_a_running_experiment(
    ledger: TwinLedger, projector: Projector, clock: Clock
) -> None:
    experiment = run_experiment(ledger, spec(max_iterations=2))
    running = Experiment.start(
        twin_id=experiment.twin_id,
        twin_state=experiment.twin_state,
        spec=experiment.spec,
        engine_version=ENGINE_VERSION,
        started_by="test",
    )
    ledger.save_and_notify(running)
    projector.catch_up()
    report = apply_retention(projector, clock.now + timedelta(days=3000))
    assert report.experiments == 1 and report.twins == 0  # the twin of a running one stays
    assert [row["id"] for row in queries.experiments(projector.store)] == [str(running.id)]


def test_the_documented_experiment_query_answers(ledger: TwinLedger, projector: Projector) -> None:
    experiment = run_experiment(ledger, spec())
    projector.catch_up()
    store = projector.store
    backend = "postgres" if store.postgres else "sqlite"
    assert "experiment-iterations" in documented("postgres")
    text = documented(backend)["experiment-iterations"].replace(DOC_EXPERIMENT, str(experiment.id))
    with store.reading() as cursor:
        if store.postgres:
            cursor.execute(f'SET LOCAL search_path TO "{store.schema}"')
        cursor.execute(text)
        rows = [tuple(str(v) if i == 7 else v for i, v in enumerate(row)) for row in cursor]
    expected = [
        (
            it.iteration,
            str(it.purpose),
            int(it.accepted),
            it.parameters["budget_cents"],
            it.parameters["tech_level"],
            it.objective_value,
            it.cost_cents,
            str(it.samples[0].run_id),
            it.samples[0].habitability_score,
        )
        for it in experiment.iterations
    ]
    assert rows == expected


runner = CliRunner()


def twinledger(db: str, *args: str) -> str:
    result = runner.invoke(app, ["--db", db, *args])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def test_the_cli_lists_experiments_from_the_table(database_url: str, tmp_path: Path) -> None:
    spec_file = tmp_path / "search.toml"
    spec_file.write_text(
        'name = "CLI search"\nbody = "mars"\npattern = "mars_terraform"\nyears = 15\n'
        "master_seed = 7\nsamples = 2\nmax_iterations = 3\n"
        '[objective]\nkind = "maximize_habitability"\n'
        "[base]\nbudget_cents = 1_000_000_000_000\n"
        "[space]\ntech_level = [3, 6, 9]\n"
    )
    twinledger(database_url, "experiment", "run", str(spec_file))
    listed = json.loads(twinledger(database_url, "experiments", "--format", "json"))
    assert [row["name"] for row in listed] == ["CLI search"]
    (row,) = listed
    assert (row["status"], row["iterations"], row["max_iterations"]) == ("completed", 3, 3)
    assert isinstance(row["best_cost_cents"], int) and row["best_objective_value"] > 0
    assert row["spec"]["samples"] == 2  # JSON columns decoded

    table = twinledger(database_url, "experiments")
    assert row["id"] in table and "experiments (1)" in table  # ids are never cut
    rows = list(
        csv.DictReader(io.StringIO(twinledger(database_url, "experiments", "--format", "csv")))
    )
    assert [r["id"] for r in rows] == [row["id"]]
    assert rows[0]["best_cost_cents"] == str(row["best_cost_cents"])
    assert (
        json.loads(
            twinledger(database_url, "experiments", "--status", "failed", "--format", "json")
        )
        == []
    )
    on_twin = twinledger(
        database_url, "experiments", "--twin", row["digital_twin_id"], "--format", "json"
    )
    assert [r["id"] for r in json.loads(on_twin)] == [row["id"]]
    # The `experiment` commands are still there next to `experiments`.
    assert f"experiment {row['id']}" in twinledger(database_url, "experiment", "show", row["id"])
    bad = runner.invoke(app, ["--db", database_url, "experiments", "--format", "xml"])
    assert bad.exit_code == 2 and "format" in bad.stderr


def test_the_tables_hold_the_pareto_front_strategy_and_cuts(
    ledger: TwinLedger, projector: Projector
) -> None:
    pareto = run_experiment(
        ledger, spec(strategy="tpe", objective={"kind": "pareto"}, max_iterations=5)
    )
    cutting = run_experiment(
        ledger,
        spec(
            years=30,
            space={"tech_level": [9, 5], "budget_cents": [1_000_000_000_000, 200_000_000_000]},
            early_stop={"at_year": 10, "margin": 0.0},
        ),
    )
    projector.catch_up()
    rows = {row["id"]: row for row in queries.experiments(projector.store)}
    row = rows[str(pareto.id)]
    assert pareto.pareto_front and row["pareto_front"] == pareto.pareto_front
    assert (row["strategy"], row["optuna_version"]) == ("tpe", pareto.optuna_version)
    assert row["best_iteration"] is None and row["final_run_id"] is None
    assert rows[str(cutting.id)]["pareto_front"] is None
    assert rows[str(cutting.id)]["optuna_version"] is None
    iterations = queries.experiment_iterations(projector.store, str(cutting.id))
    assert [(r["cut"], r["cut_at_year"]) for r in iterations] == [
        (int(it.cut), it.cut_at_year) for it in cutting.iterations
    ]
    assert any(r["cut"] == 1 and r["objective_value"] is None for r in iterations)
