"""Provenance recorded with every run and shown; the git commit read from a checkout's files;
RunQueued version 1 still decodes; structured run ids accepted by every command taking a run;
an experiment's id given for a run points to the experiment commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from storage import rewrite_stored_event
from test_experiments import small_spec
from typer.testing import CliRunner

from domain.engine import ENGINE_VERSION
from domain.values import RunStatus
from infrastructure.application import TwinLedger
from infrastructure.cli import app
from infrastructure.experiments import run_experiment, runs_of
from infrastructure.provenance import PROJECT_ROOT, current_provenance, git_commit

runner = CliRunner()
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def twinledger(db: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--db", db, *args])
    return result.exit_code, result.stdout, result.stderr


def completed(ledger: TwinLedger, years: int = 20) -> UUID:
    twin_id = ledger.clone_twin(name="Mars", body="mars")
    run_id = ledger.queue_run(
        twin_id, pattern="mars_terraform", duration_years=years, budget_cents=10**12, seed=3
    )
    assert ledger.execute_run(run_id).status == RunStatus.COMPLETED
    return run_id


def test_each_run_records_its_provenance_and_show_run_prints_it(
    ledger: TwinLedger, database_url: str
) -> None:
    run = ledger.get_run(completed(ledger))
    provenance = run.provenance
    assert provenance is not None
    assert provenance.engine_version == ENGINE_VERSION
    assert provenance.python.startswith(("CPython ", "PyPy "))
    assert set(provenance.packages) == {"msgspec"}
    assert provenance.git_commit == git_commit(PROJECT_ROOT)
    assert provenance.host
    code, out, _ = twinledger(database_url, "show-run", str(run.id))
    assert code == 0
    assert f"engine {ENGINE_VERSION}, {provenance.python}" in out
    assert f"msgspec {provenance.packages['msgspec']}" in out
    assert (provenance.git_commit or "(not a git checkout)") in out
    assert provenance.host in out


def test_provenance_is_read_once() -> None:
    assert current_provenance() is current_provenance()


def test_the_git_commit_is_read_from_the_checkouts_files(tmp_path: Path) -> None:
    assert git_commit(tmp_path) is None  # not a checkout
    git = tmp_path / "repo" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "refs" / "heads" / "main").write_text(COMMIT + "\n")
    assert git_commit(tmp_path / "repo") == COMMIT
    (git / "refs" / "heads" / "main").unlink()  # packed, as after git gc
    (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{COMMIT} refs/heads/main\n")
    assert git_commit(tmp_path / "repo") == COMMIT
    (git / "HEAD").write_text(COMMIT[::-1] + "\n")  # detached
    assert git_commit(tmp_path / "repo") == COMMIT[::-1]
    # a worktree: .git is a file naming its git dir, refs live in the common dir
    worktree_git = git / "worktrees" / "wt"
    worktree_git.mkdir(parents=True)
    (worktree_git / "HEAD").write_text("ref: refs/heads/main\n")
    (worktree_git / "commondir").write_text("../..\n")
    (tmp_path / "wt").mkdir()
    (tmp_path / "wt" / ".git").write_text(f"gitdir: {worktree_git}\n")
    assert git_commit(tmp_path / "wt") == COMMIT


def test_a_version_1_run_queued_still_decodes_upcast(ledger: TwinLedger, database_url: str) -> None:
    run_id = completed(ledger)

    def as_version_1(state: dict[str, Any]) -> None:
        for key in ("class_version", "interventions", "forks", "provenance"):
            del state[key]

    version = next(iter(ledger.repository.event_store.get(run_id))).originator_version
    rewrite_stored_event(database_url, run_id, version, as_version_1)
    reader = TwinLedger.open(database_url)
    try:
        run = reader.get_run(run_id)
        assert run.provenance is None and run.interventions == [] and run.forks == []
        assert reader.replay_run(run_id).identical
    finally:
        reader.close()
    code, out, _ = twinledger(database_url, "show-run", str(run_id))
    assert code == 0 and "provenance" not in out


@pytest.fixture
def experiment_runs(ledger: TwinLedger) -> tuple[UUID, dict[str, UUID]]:
    experiment = run_experiment(ledger, small_spec(years=12, max_iterations=2))
    return experiment.id, runs_of(experiment)


def test_structured_ids_are_accepted_by_every_command_taking_a_run(
    ledger: TwinLedger,
    database_url: str,
    experiment_runs: tuple[UUID, dict[str, UUID]],
    tmp_path: Path,
) -> None:
    experiment_id, runs = experiment_runs
    ref = f"{experiment_id}-iter0-initial-sample1"
    run_id = runs[ref]
    assert ledger.resolve_run_id(ref) == run_id
    code, out, err = twinledger(database_url, "show-run", ref)
    assert code == 0 and f"run {run_id}" in out, err
    code, out, err = twinledger(database_url, "replay", ref)
    assert code == 0 and out.startswith("identical: 12 years"), err
    code, out, err = twinledger(database_url, "replay", ref, "--to-year", "5")
    assert code == 0 and f"run {run_id}" in out, err
    code, out, err = twinledger(database_url, "results", ref, "--format", "json")
    assert code == 0 and '"year": 12' in out, err
    archive = tmp_path / "a.jsonl"
    code, out, err = twinledger(database_url, "archive", ref, "-o", str(archive))
    assert code == 0 and str(run_id) in archive.read_text(), err
    code, out, err = twinledger(database_url, "fork", ref, "--at-year", "6", "--seed", "9")
    assert code == 0, err
    assert [child for child, _ in ledger.children_of(run_id)] != []
    # commands that refuse a finished run still resolve it: the refusal names the run's id
    for command in ("cancel", "execute"):
        code, _, err = twinledger(database_url, command, ref)
        assert code == 2 and f"run {run_id} has already ended" in err, err


def test_an_experiment_id_given_for_a_run_points_to_the_experiment_commands(
    ledger: TwinLedger,
    database_url: str,
    experiment_runs: tuple[UUID, dict[str, UUID]],
) -> None:
    experiment_id, _ = experiment_runs
    before = ledger.event_count()
    code, _, err = twinledger(database_url, "replay", str(experiment_id))
    assert code == 2
    assert err.startswith("error: run_id:")
    assert f"twinledger experiment replay {experiment_id}" in err.replace("\n", " ")
    code, _, err = twinledger(database_url, "show-run", str(experiment_id))
    assert code == 2 and "is an experiment" in err
    code, _, err = twinledger(database_url, "replay", f"{experiment_id}-iter99-evaluation")
    assert code == 2 and err.startswith("error: run_id:")
    assert ledger.event_count() == before
