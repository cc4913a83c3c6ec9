"""Issue 14's searches: strategies, Pareto front, early stopping, resume; on both back ends."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from storage import rewrite_stored_event

from domain.errors import TwinLedgerError
from domain.experiment import (
    Experiment,
    RunPurpose,
    SearchSpace,
    pareto_front,
    structured_id,
    structured_run_id,
)
from domain.strategies import latin_hypercube
from domain.values import RunStatus
from infrastructure.application import TwinLedger
from infrastructure.experiments import (
    front_of,
    get_experiment,
    read_experiment_file,
    replay_experiment,
    resume_experiment,
    run_experiment,
)
from tests.test_experiments import small_spec

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.toml"))


def fingerprint(ledger: TwinLedger, experiment: Experiment) -> list[Any]:
    """Everything two executions of one spec must share: candidates, decisions, digests."""
    rows: list[Any] = []
    for it in experiment.iterations:
        stored = [ledger.get_run(s.run_id) for s in it.samples]
        rows.append(
            (
                it.iteration,
                it.indexes,
                it.parameters,
                it.objective_value,
                it.cost_cents,
                it.feasible,
                it.accepted,
                it.cut,
                it.cut_at_year,
                it.early_value,
                it.pareto_front,
                [s.result_digest for s in it.samples],
                [(run.status, run.result_digest) for run in stored],
            )
        )
    final = experiment.final_run
    rows.append(
        (
            experiment.status,
            experiment.reason,
            experiment.best_iteration,
            None if final is None else final.result_digest,
        )
    )
    return rows


def cutting_spec(**overrides: Any) -> Any:
    """A search where later candidates are clearly worse by year 10 (tech level 9 leads)."""
    return small_spec(
        **{
            "years": 30,
            "samples": 2,
            "space": {"tech_level": [9, 5], "budget_cents": [1_000_000_000_000, 200_000_000_000]},
            "early_stop": {"at_year": 10, "margin": 0.0},
            **overrides,
        }
    )


@pytest.mark.parametrize("strategy", ["random", "latin_hypercube", "tpe"])
def test_each_strategy_is_deterministic_for_a_fixed_seed(ledger: TwinLedger, strategy: str) -> None:
    spec = small_spec(strategy=strategy, max_iterations=5)
    first = run_experiment(ledger, spec)
    second = run_experiment(ledger, spec)
    assert first.id != second.id
    assert fingerprint(ledger, first) == fingerprint(ledger, second)
    assert first.status == "completed" and len(first.iterations) >= 4
    tried = [tuple(it.indexes) for it in first.iterations]
    assert len(set(tried)) == len(tried)  # never the same candidate twice
    other_seed = run_experiment(ledger, small_spec(strategy=strategy, master_seed=8))
    assert [it.indexes for it in other_seed.iterations] != [it.indexes for it in first.iterations]
    report = replay_experiment(ledger, first.id)
    assert report.identical, report.differences


def test_random_and_latin_hypercube_differ_from_hill_climbing(ledger: TwinLedger) -> None:
    def spec(strategy: str) -> Any:
        space = {"tech_level": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}
        return small_spec(max_iterations=6, space=space, strategy=strategy)

    orders = {
        strategy: [it.indexes for it in run_experiment(ledger, spec(strategy)).iterations]
        for strategy in ("hill_climb", "random", "latin_hypercube")
    }
    assert orders["hill_climb"][:2] == [[0], [1]]
    assert len({json.dumps(order) for order in orders.values()}) == 3


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**63 - 1),
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=4),
    n=st.integers(1, 40),
)
def test_a_latin_hypercube_uses_every_stratum_once(seed: int, sizes: list[int], n: int) -> None:
    space = SearchSpace(
        pattern_params={f"p{d}": [float(v) for v in range(size)] for d, size in enumerate(sizes)}
    )
    spec = msgspec.structs.replace(
        small_spec().spec(), master_seed=seed, max_iterations=n, space=space
    )
    design = latin_hypercube(spec)
    assert design == latin_hypercube(spec) and len(design) == n
    for dim, size in enumerate(sizes):
        column = [point[dim] for point in design]
        assert all(0 <= index < size for index in column)
        counts = [column.count(index) for index in range(size)]
        if size % n == 0:  # each stratum covers L/n values of its own: all indexes distinct
            assert max(counts) <= 1
        if n % size == 0:  # each value covers n/L strata exactly
            assert counts == [n // size] * size


def test_tpe_records_its_optuna_version_and_replay_refuses_another(
    ledger: TwinLedger, database_url: str
) -> None:
    pinned = next(
        dep.split("==")[1].split()[0].strip('",')
        for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        if dep.startswith("optuna==")
    )
    import optuna

    assert optuna.__version__ == pinned
    experiment = run_experiment(ledger, small_spec(strategy="tpe", max_iterations=7))
    assert experiment.optuna_version == pinned
    assert replay_experiment(ledger, experiment.id).identical
    hill = run_experiment(ledger, small_spec())
    assert hill.optuna_version is None  # only tpe depends on Optuna

    def older(state: dict[str, Any]) -> None:
        state["optuna_version"] = "3.0.0"

    rewrite_stored_event(database_url, experiment.id, 1, older)
    ledger.repository.cache = None  # type: ignore[assignment]
    with pytest.raises(TwinLedgerError, match=r"^optuna_version: .*3.0.0.*--allow-other-version"):
        replay_experiment(ledger, experiment.id)
    flagged = replay_experiment(ledger, experiment.id, allow_other_version=True)
    assert flagged.identical, flagged.differences


def test_optuna_is_not_imported_at_cli_start_up() -> None:
    code = "import sys, infrastructure.cli; print('optuna' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("strategy", ["random", "tpe"])
def test_the_pareto_front_is_the_brute_force_front(ledger: TwinLedger, strategy: str) -> None:
    spec = small_spec(
        strategy=strategy,
        max_iterations=6,
        objective={"kind": "pareto", "max_cost_cents": 10**14},
    )
    experiment = run_experiment(ledger, spec)
    evaluated = [it for it in experiment.iterations if it.feasible]
    brute = sorted(
        a.iteration
        for a in evaluated
        if not any(
            b.objective_value >= a.objective_value  # type: ignore[operator]
            and b.cost_cents <= a.cost_cents
            and (b.objective_value > a.objective_value or b.cost_cents < a.cost_cents)  # type: ignore[operator]
            for b in evaluated
        )
    )
    assert experiment.pareto_front == brute and brute
    assert experiment.best_iteration is None and experiment.final_run is None
    assert [m["iteration"] for m in front_of(experiment)] == sorted(
        brute, key=lambda n: (experiment.iterations[n].cost_cents, n)
    )
    # After each iteration the recorded front is the brute-force front of what was evaluated.
    for it in experiment.iterations:
        points = [
            (e.iteration, e.objective_value, e.cost_cents)
            for e in experiment.iterations[: it.iteration + 1]
            if e.feasible
        ]
        assert it.pareto_front == pareto_front(points)
    assert replay_experiment(ledger, experiment.id).identical


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=12))
def test_pareto_front_has_no_dominated_point(values: list[tuple[int, int]]) -> None:
    points = [(n, float(h), c) for n, (h, c) in enumerate(values)]
    front = pareto_front(points)
    assert front
    for n, h, c in points:
        dominated = any(h2 >= h and c2 <= c and (h2, c2) != (h, c) for _, h2, c2 in points)
        assert (n in front) != dominated


def test_early_stopping_cuts_and_replays_identically(ledger: TwinLedger, database_url: str) -> None:
    experiment = run_experiment(ledger, cutting_spec())
    cut = [it for it in experiment.iterations if it.cut]
    assert cut, [(it.indexes, it.early_value) for it in experiment.iterations]
    for it in cut:
        assert it.cut_at_year == 10 and not it.accepted and it.objective_value is None
        for sample in it.samples:
            run = ledger.get_run(sample.run_id)
            assert run.status == RunStatus.CANCELLED and run.years_recorded == 0
    again = run_experiment(ledger, cutting_spec())
    assert fingerprint(ledger, experiment) == fingerprint(ledger, again)
    report = replay_experiment(ledger, experiment.id)
    assert report.identical, report.differences
    n = cut[0].iteration
    assert replay_experiment(ledger, experiment.id, only=f"iter{n}:evaluation").identical

    def uncut(state: dict[str, Any]) -> None:
        state["cut"] = False

    rewrite_stored_event(database_url, experiment.id, n + 2, uncut)
    ledger.repository.cache = None  # type: ignore[assignment]
    tampered = replay_experiment(ledger, experiment.id)
    assert f"iteration {n}: cut recorded False, replay True" in tampered.differences


def test_a_cost_objective_cuts_on_spend(ledger: TwinLedger) -> None:
    spec = cutting_spec(
        objective={"kind": "minimize_cost_to_event", "target_event": "warming_10k"},
        early_stop={"at_year": 10, "margin": 0},
    )
    experiment = run_experiment(ledger, spec)
    assert any(it.cut for it in experiment.iterations)
    assert all(type(it.early_value) is int for it in experiment.iterations)
    assert replay_experiment(ledger, experiment.id).identical


# --- resume ------------------------------------------------------------------------------------

KILLED_CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    from infrastructure.application import TwinLedger
    from infrastructure.experiments import ExperimentFile, run_experiment
    from infrastructure.inputs import validate

    url, where, at, spec = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    calls = {"n": 0}

    def die(*args):
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "run":  # mid-run: the at-th sample run has saved its first chunk
        original_execute = TwinLedger.execute_run

        def execute_run(self, run_id, **kwargs):
            calls["n"] += 1
            if calls["n"] == at:
                return original_execute(self, run_id, chunk_years=5, on_progress=die)
            return original_execute(self, run_id, **kwargs)

        TwinLedger.execute_run = execute_run
    else:  # mid-queue: the at-th sample run is about to be queued
        original_queue = TwinLedger.queue_run

        def queue_run(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == at:
                die()
            return original_queue(self, *args, **kwargs)

        TwinLedger.queue_run = queue_run
    file = validate(ExperimentFile, json.loads(spec), root="spec")
    run_experiment(
        TwinLedger.open(url), file, on_started=lambda e: print(e.id, flush=True)
    )
    print("not killed", flush=True)
    """
)

RESUMED: dict[str, dict[str, Any]] = {
    "run-tpe": {"strategy": "tpe", "max_iterations": 5},
    "queue-hill_climb-early_stop": {
        "years": 30,
        "space": {"tech_level": [9, 5], "budget_cents": [1_000_000_000_000, 200_000_000_000]},
        "early_stop": {"at_year": 10, "margin": 0.0},
        "max_iterations": 4,
    },
}


@pytest.mark.parametrize("case", sorted(RESUMED))
def test_a_sigkilled_experiment_resumed_equals_an_uninterrupted_one(
    open_ledger: Any, database_url: str, case: str
) -> None:
    overrides = {"samples": 3, **RESUMED[case]}
    spec = small_spec(**overrides)
    where = case.split("-")[0]
    # K = 3 sample runs per iteration: the 8th is iteration 2's second sample
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_CHILD, database_url, where, "8", spec.model_dump_json()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    experiment_id = killed.stdout.split()[0]
    ledger = open_ledger()
    interrupted = get_experiment(ledger, experiment_id)
    assert interrupted.status == "running" and len(interrupted.iterations) == 2
    runs = [
        structured_run_id(
            interrupted.id, structured_id(interrupted.id, 2, RunPurpose.EVALUATION, k)
        )
        for k in range(3)
    ]
    statuses = []
    for run_id in runs:
        try:
            statuses.append(ledger.get_run(run_id).status)
        except TwinLedgerError:
            statuses.append(None)
    if where == "run":
        assert statuses == [RunStatus.COMPLETED, RunStatus.RUNNING, RunStatus.QUEUED]
        assert ledger.get_run(runs[1]).years_recorded == 5
    else:
        assert statuses == [RunStatus.QUEUED, None, None]
    before = ledger.event_count()

    resumed = resume_experiment(ledger, experiment_id)
    assert resumed.status == "completed" and ledger.event_count() > before
    uninterrupted = run_experiment(ledger, spec)
    assert fingerprint(ledger, resumed) == fingerprint(ledger, uninterrupted)
    for it in resumed.iterations:  # every run under its structured id: none queued twice
        for k, sample in enumerate(it.samples):
            ref = structured_id(resumed.id, it.iteration, it.purpose, k)
            assert sample.run_id == structured_run_id(resumed.id, ref)
    report = replay_experiment(ledger, experiment_id)
    assert report.identical, report.differences
    with pytest.raises(TwinLedgerError, match=r"^experiment_id: .* is completed, not running"):
        resume_experiment(ledger, experiment_id)


def test_resume_refuses_an_experiment_that_is_not_running(ledger: TwinLedger) -> None:
    experiment = run_experiment(ledger, small_spec(max_iterations=2))
    before = ledger.event_count()
    with pytest.raises(TwinLedgerError, match=r"^experiment_id:"):
        resume_experiment(ledger, experiment.id)
    with pytest.raises(TwinLedgerError, match=r"^experiment_id:"):
        resume_experiment(ledger, "not-an-id")
    assert ledger.event_count() == before


# --- the spec ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"strategy": "annealing"}, "strategy"),
        ({"strategy": 3}, "strategy"),
        ({"objective": {"kind": "pareto"}}, "strategy"),
        (
            {"strategy": "random", "objective": {"kind": "pareto"}, "early_stop": {"at_year": 3}},
            "early_stop",
        ),
        ({"early_stop": {"at_year": 0}}, "early_stop.at_year"),
        ({"early_stop": {"at_year": 15}}, "early_stop.at_year"),
        ({"early_stop": {"at_year": "5"}}, "early_stop.at_year"),
        ({"early_stop": {"at_year": 5, "margin": -0.1}}, "early_stop.margin"),
        ({"early_stop": {"at_year": 5, "margin": float("nan")}}, "early_stop.margin"),
        ({"early_stop": {"at_year": 5, "margin": float("inf")}}, "early_stop.margin"),
        ({"early_stop": {"at_year": 5, "margin": True}}, "early_stop.margin"),
        ({"early_stop": {"at_year": 5, "margin": 2**62 + 1}}, "early_stop.margin"),
        ({"early_stop": {"at_year": 5, "margin": 2**64}}, "early_stop.margin"),
        ({"early_stop": {"at_year": 5, "margin": 1e300}}, "early_stop.margin"),
        ({"objective": {"kind": "maximize_habitability", "min_improvement": 2**64}}, "objective"),
        ({"objective": {"kind": "maximize_habitability", "min_improvement": 1e19}}, "objective"),
        ({"early_stop": {"at_year": 5, "when": 1}}, "early_stop.when"),
        ({"early_stop": 5}, "early_stop"),
        (
            {
                "objective": {"kind": "minimize_cost_to_event", "target_event": "warming_10k"},
                "early_stop": {"at_year": 5, "margin": 0.5},
            },
            "early_stop.margin",
        ),
        ({"persistence": "some"}, "persistence"),
        ({"persistence": ""}, "persistence"),
    ],
)
def test_a_bad_search_field_is_named(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(TwinLedgerError, match=f"^{field}[.:]"):
        small_spec(**overrides)


def test_a_bad_search_field_exits_2_and_writes_nothing(
    ledger: TwinLedger, database_url: str, tmp_path: Path
) -> None:
    from tests.test_read_cli import twinledger

    spec = tmp_path / "bad.toml"
    spec.write_text(EXAMPLES[0].read_text() + '\nstrategy = "simulated_annealing"\n')
    before = ledger.event_count()
    code, out, err = twinledger(database_url, "experiment", "run", str(spec))
    assert code == 2 and "strategy" in err, (out, err)
    assert ledger.event_count() == before


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_every_example_spec_loads(example: Path) -> None:
    file = read_experiment_file(example)
    assert file.spec().name


def test_experiment_show_prints_the_pareto_front(ledger: TwinLedger, database_url: str) -> None:
    from tests.test_read_cli import ok

    experiment = run_experiment(
        ledger, small_spec(strategy="latin_hypercube", objective={"kind": "pareto"})
    )
    out = ok(database_url, "experiment", "show", str(experiment.id))
    assert "Pareto front" in out and "strategy latin_hypercube" in out
    assert "on front" in out


# --- persistence levels ------------------------------------------------------------------------


def test_a_summary_level_experiment_keeps_no_years_and_replays_to_its_digests(
    ledger: TwinLedger, database_url: str
) -> None:
    from tests.test_read_cli import twinledger

    full = run_experiment(ledger, small_spec(max_iterations=3))
    summary = run_experiment(ledger, small_spec(max_iterations=3, persistence="summary"))
    assert summary.spec.persistence == "summary"
    rows = fingerprint(ledger, full)
    assert fingerprint(ledger, summary) == rows  # the same digests, decisions and final run
    run_id = summary.iterations[1].samples[0].run_id
    events = [type(e).__name__ for e in ledger.repository.event_store.get(run_id)]
    assert events == ["RunQueued", "RunStarted", "RunCompleted"]
    run = ledger.get_run(run_id)
    assert run.persistence == "summary" and run.years_recorded == 0
    report = ledger.replay_run(run_id)
    assert report.identical and report.complete and report.years == 15
    assert report.digest == run.result_digest
    twin_run = full.iterations[1].samples[0].run_id
    assert ledger.state_at_year(run_id, 7) == ledger.state_at_year(twin_run, 7)  # re-derived
    assert replay_experiment(ledger, summary.id).identical

    code, out, err = twinledger(database_url, "results", str(run_id))
    assert code == 2 and "keeps a summary only" in err, (out, err)
    code, out, err = twinledger(database_url, "show-run", str(run_id))
    assert code == 0 and "summary only" in out, (out, err)

    def forged(state: dict[str, Any]) -> None:
        state["result_digest"] = "0" * 64

    rewrite_stored_event(database_url, run_id, 3, forged)
    ledger.repository.cache = None  # type: ignore[assignment]
    tampered = ledger.replay_run(run_id)
    assert not tampered.identical and tampered.divergence is not None
    assert tampered.divergence.field == "result_digest"


def test_a_summary_run_row_has_no_results_and_is_done(ledger: TwinLedger) -> None:
    from projections import queries
    from projections.runner import Projector

    experiment = run_experiment(ledger, small_spec(max_iterations=2, persistence="summary"))
    assert ledger.database is not None
    with Projector(ledger.database) as projector:
        projector.catch_up()
        run_id = str(experiment.iterations[0].samples[0].run_id)
        (row,) = [r for r in queries.runs(projector.store) if r["id"] == run_id]
        assert (row["persistence"], row["status"], row["progress"]) == ("summary", "completed", 1.0)
        assert row["current_year"] == 0 and row["result_digest"]
        with pytest.raises(TwinLedgerError, match=r"^run_id: .* keeps a summary only"):
            queries.results(projector.store, run_id)


def test_queue_run_names_a_bad_persistence(ledger: TwinLedger) -> None:
    twin = ledger.clone_twin(name="t", body="mars", created_by="test")
    before = ledger.event_count()
    with pytest.raises(TwinLedgerError, match=r"^persistence:"):
        ledger.queue_run(
            twin, pattern="mars_terraform", duration_years=5, budget_cents=10, persistence="some"
        )
    assert ledger.event_count() == before
