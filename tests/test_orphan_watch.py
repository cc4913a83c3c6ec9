"""A server resumes an experiment whose evaluator dies while the server runs, once.

The evaluator is a real process killed with SIGKILL mid-experiment (a sample run in flight):
the server's own experiment process, or an `experiment run` on the command line beside two
servers on the same store. The servers live on; each looks for orphaned experiments every
second (``serve --resume-every 1``): the experiment ends with the uninterrupted experiment's
iterations, digests and final run, each iteration and each sample year recorded once
(docs/http.md, A running server resumes orphaned experiments).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from infrastructure.application import TwinLedger
from infrastructure.executors import experiment_claim
from infrastructure.experiments import get_experiment, run_experiment, runs_of, start_experiment
from infrastructure.http.executor import ServerExecutor
from tests.test_experiment_search import KILLED_CHILD
from tests.test_experiments import fingerprint, small_spec
from tests.test_server_recovery import (
    API,
    YEARS,
    _experiment_runs,
    fresh_connections,
    run_workers,
    server_process,
    topics,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
WATCH = ("--workers", "1", "--resume-every", "1")


def recorded_once(ledger: TwinLedger, experiment: Any, years: int) -> None:
    """The experiment's own stream and each of its runs' streams: every event once."""
    stream = Counter(topics(ledger, str(experiment.id)))  # versions checked contiguous
    assert stream["IterationEvaluated"] == len(experiment.iterations)
    assert stream["ExperimentCompleted"] == 1 and stream["ExperimentFailed"] == 0
    assert [it.iteration for it in experiment.iterations] == list(range(len(experiment.iterations)))
    for run_id in runs_of(experiment).values():
        run = topics(ledger, str(run_id))
        assert run.count("YearResultRecorded") == years and run.count("RunCompleted") == 1


def uninterrupted(tmp_path: Path, spec: Any) -> list[Any]:
    alone = TwinLedger.open(f"sqlite:///{tmp_path}/alone.db")
    try:
        return fingerprint(alone, get_experiment(alone, run_experiment(alone, spec).id))
    finally:
        alone.close()


def test_a_server_resumes_the_experiment_its_experiment_process_was_evaluating(
    database_url: str, tmp_path: Path
) -> None:
    """The server's experiment process is SIGKILLed while a sample run is in flight; the
    server lives on, notices the orphan and resumes it in a new process."""
    spec = {
        "name": "search",
        "body": "mars",
        "pattern": "mars_terraform",
        "years": YEARS,
        "master_seed": 7,
        "samples": 2,
        "max_iterations": 3,
        "objective": {"kind": "maximize_habitability", "max_cost_cents": 900_000_000_000},
        "base": {"budget_cents": 1_000_000_000_000},
        "space": {"tech_level": [3, 6, 9], "budget_cents": [400_000_000_000, 800_000_000_000]},
    }
    ledger = TwinLedger.open(database_url)
    try:
        with (
            server_process(database_url, *WATCH) as (base, process),
            fresh_connections(base) as http,
        ):
            accepted = http.post(f"{API}/experiments", json=spec)
            assert accepted.status_code == 202, accepted.text
            experiment_id = accepted.json()["id"]

            def a_chunk_saved() -> bool:
                return any(
                    ledger.get_run(run_id).years_recorded > 0
                    for run_id in _experiment_runs(ledger, experiment_id)
                )

            wait_for(a_chunk_saved, "a sample run's first chunk")
            [evaluator] = run_workers(process.pid)  # no run was posted: the experiment process
            os.kill(evaluator, signal.SIGKILL)
            interrupted = get_experiment(ledger, experiment_id)
            assert interrupted.status == "running", "the kill came after the end: proved nothing"

            def ended() -> bool:
                row = http.get(f"{API}/experiments/{experiment_id}").json()
                return bool(row["experiment"]["status"] in ("completed", "failed"))

            wait_for(ended, "the server to resume and end the experiment", every=0.2)
            assert process.poll() is None  # the server lived through it
            assert evaluator not in run_workers(process.pid)

        resumed = get_experiment(ledger, experiment_id)
        assert resumed.status == "completed", resumed
        assert resumed.iterations[: len(interrupted.iterations)] == interrupted.iterations
        recorded_once(ledger, resumed, YEARS)
        assert fingerprint(ledger, resumed) == uninterrupted(
            tmp_path, small_spec(years=YEARS, max_iterations=3)
        )
    finally:
        ledger.close()


def test_two_servers_resume_a_killed_command_line_experiment_once(
    database_url: str, tmp_path: Path
) -> None:
    """`experiment run` (its own process, holding the claim) dies by SIGKILL mid-run while two
    servers watch the store: both find the orphan; one evaluates it, the other is refused or
    finds it ended, so nothing is recorded twice and the result is the uninterrupted one."""
    spec = small_spec(samples=3)
    ledger = TwinLedger.open(database_url)
    try:
        with ExitStack() as servers:
            processes = [
                servers.enter_context(server_process(database_url, *WATCH))[1] for _ in range(2)
            ]
            # K = 3 sample runs per iteration: the 8th (iteration 2's second) dies after its
            # first chunk of 5 years (tests/test_experiment_search.py KILLED_CHILD)
            killed = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    KILLED_CHILD,
                    database_url,
                    "run",
                    "8",
                    spec.model_dump_json(),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert killed.returncode == -signal.SIGKILL, killed.stderr
            experiment_id = killed.stdout.split()[0]

            def ended() -> bool:
                return get_experiment(ledger, experiment_id).status != "running"

            wait_for(ended, "a server to resume and end the experiment", every=0.2)
            assert all(process.poll() is None for process in processes)

        resumed = get_experiment(ledger, experiment_id)
        assert resumed.status == "completed", resumed
        assert len(resumed.iterations) > 2  # two were recorded before the kill
        recorded_once(ledger, resumed, spec.years)
        assert fingerprint(ledger, resumed) == uninterrupted(tmp_path, spec)
    finally:
        ledger.close()


# --- what a server has in hand ------------------------------------------------------------------


def block_until(path: str) -> None:
    """A task for the experiment process: hold it until ``path`` exists."""
    while not Path(path).exists():
        time.sleep(0.05)


def test_a_server_hands_an_experiment_over_once_at_a_time(
    database_url: str, tmp_path: Path
) -> None:
    """An experiment waiting behind another in the server's experiment process has a free
    claim, so it looks orphaned: the watch must not queue it again meanwhile. Once its task
    ended: submitted again if another process was evaluating it (ExperimentBusy: that one may
    die), never again if it was refused for good (here: an id that names no experiment)."""
    ledger = TwinLedger.open(database_url)
    executor = ServerExecutor(database_url)
    try:
        busy = start_experiment(ledger, small_spec(), started_by="test").id
        unknown = uuid.uuid4()
        assert ledger.database is not None
        claim = experiment_claim(ledger.database, busy)  # another process evaluates it
        assert claim.try_acquire()
        go = tmp_path / "go"
        blocker = executor.experiments.submit(block_until, str(go))
        try:
            assert executor.submit_experiment(busy) is True
            assert executor.submit_experiment(unknown) is True
            assert executor.submit_experiment(busy) is False  # waiting in hand: not twice
            assert executor.submit_experiment(unknown) is False
        finally:
            go.touch()
        blocker.result(timeout=120)
        wait_for(lambda: not executor._evaluating, "both tasks to end")
        assert executor.submit_experiment(unknown) is False  # refused for good: left alone
        assert executor.submit_experiment(busy) is True  # ExperimentBusy: it may be orphaned later
        wait_for(lambda: not executor._evaluating, "the task to end")
        claim.release()
        assert len(ledger.recorder.select_events(busy)) == 1  # ExperimentStarted: never evaluated
    finally:
        executor.shutdown()
        ledger.close()
