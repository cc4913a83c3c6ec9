"""A server resumes a run or an experiment whose executor dies while the server runs, once.

The executor is a real process killed with SIGKILL mid-run: an `execute` on the command line
beside two servers on the same store; for experiments, the server's own experiment process,
or an `experiment run` beside two servers. The servers live on; each looks for orphans every
second (``serve --resume-every 1``): the run ends with the uninterrupted run's digest, each
year recorded once; the experiment with the uninterrupted experiment's iterations, digests and
final run, each iteration and each sample year recorded once (docs/http.md, A running server
resumes orphaned runs and experiments).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from infrastructure.application import TwinLedger
from infrastructure.executors import experiment_claim, run_claim
from infrastructure.experiments import get_experiment, run_experiment, runs_of, start_experiment
from infrastructure.http.app import Settings, create_app
from infrastructure.http.executor import ServerExecutor
from tests.test_experiment_search import KILLED_CHILD
from tests.test_experiments import fingerprint, small_spec, spec_data
from tests.test_http_api import NoExecutor
from tests.test_server_recovery import (
    API,
    BUDGET,
    YEARS,
    _experiment_runs,
    fresh_connections,
    run_workers,
    server_process,
    topics,
    uninterrupted_digest,
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
    spec = spec_data(years=YEARS, max_iterations=3)
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


# --- runs ---------------------------------------------------------------------------------------

EXECUTE_AND_DIE = textwrap.dedent(
    """
    import os, signal, sys
    from infrastructure.service import Ledger

    def die(*args):  # after the first chunk of 5 years is saved, the claim still held
        os.kill(os.getpid(), signal.SIGKILL)

    url, run_id = sys.argv[1], sys.argv[2]
    Ledger.open(url).execute_run(run_id, chunk_years=5, on_progress=die)  # as `run execute`
    print("not killed", flush=True)
    """
)


def test_two_servers_resume_a_killed_command_line_run_once(
    database_url: str, tmp_path: Path
) -> None:
    """`run execute` (its own process, holding the run's claim) dies by SIGKILL after its first
    chunk while two servers watch the store: both find the orphaned run; one resumes it, the
    other is refused (RunBusy) or finds it ended, so every year is recorded once and the run
    ends with the digest of the same run executed without interruption."""
    ledger = TwinLedger.open(database_url)
    try:
        with ExitStack() as servers:
            processes = [
                servers.enter_context(server_process(database_url, *WATCH))[1] for _ in range(2)
            ]
            twin = ledger.clone_twin(name="Mars", body="mars")
            run_id = str(
                ledger.queue_run(
                    twin,
                    pattern="mars_terraform",
                    duration_years=YEARS,
                    budget_cents=BUDGET,
                    seed=3,
                    initiated_by="cli",
                )
            )  # queued: the watch leaves it to whoever executes it
            killed = subprocess.run(
                [sys.executable, "-c", EXECUTE_AND_DIE, database_url, run_id],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert killed.returncode == -signal.SIGKILL, (killed.stdout, killed.stderr)

            def ended() -> bool:
                return ledger.get_run(run_id).status != "running"

            wait_for(ended, "a server to resume and end the run", every=0.2)
            assert all(process.poll() is None for process in processes)

        resumed = ledger.get_run(run_id)
        assert resumed.status == "completed", resumed
        stream = topics(ledger, run_id)
        assert stream.count("YearResultRecorded") == YEARS  # each year exactly once
        assert stream.count("RunCompleted") == 1
        assert stream.count("RunStarted") == 2  # the command's start, one server's resume
        assert resumed.result_digest == uninterrupted_digest(tmp_path, 3)
    finally:
        ledger.close()


class Recording(NoExecutor):
    """Executes nothing; records each run submitted and how long its task would wait for the
    claim (the watch: 0; the start: as long as it takes)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, float | None]] = []

    def submit(self, run_id: uuid.UUID, *, claim_timeout: float | None = None) -> bool:
        self.calls.append((str(run_id), claim_timeout))
        return super().submit(run_id, claim_timeout=claim_timeout)


def orphaned_run(ledger: TwinLedger, url: str, seed: int) -> str:
    """A run left ``running`` by a `run execute` SIGKILLed after its first chunk."""
    twin = ledger.clone_twin(name="Mars", body="mars")
    run_id = str(
        ledger.queue_run(
            twin, pattern="mars_terraform", duration_years=YEARS, budget_cents=BUDGET, seed=seed
        )
    )
    killed = subprocess.run(
        [sys.executable, "-c", EXECUTE_AND_DIE, url, run_id],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, (killed.stdout, killed.stderr)
    assert ledger.get_run(run_id).status == "running"
    return run_id


@pytest.mark.parametrize(
    ("options", "watches"),
    [({}, True), ({"resume_queued": False}, False), ({"read_only": True}, False)],
    ids=["default", "no-resume-queued", "read-only"],
)
def test_the_watch_submits_orphaned_runs_not_live_ones_and_is_off_when_asked(
    database_url: str, options: dict[str, Any], watches: bool
) -> None:
    """Two runs stand ``running``: one orphaned, one whose executor lives (this test holds its
    claim). The watch submits the orphan, taking its claim at once or not at all
    (claim_timeout 0), never the live one; --no-resume-queued and --read-only have no watch."""
    ledger = TwinLedger.open(database_url)
    try:
        orphan, live = (orphaned_run(ledger, database_url, seed) for seed in (1, 2))
        assert ledger.database is not None
        claim = run_claim(ledger.database, live)
        assert claim.try_acquire()
        try:
            executor = Recording()
            settings = Settings(url=database_url, resume_every=0.1, **options)
            app = create_app(settings, executor=executor)
            with TestClient(app):
                assert (app.state.watch is not None) == watches
                if watches:
                    wait_for(lambda: (orphan, 0) in executor.calls, "the watch to submit it")
                calls = list(executor.calls)
        finally:
            claim.release()
    finally:
        ledger.close()
    assert all(run_id == orphan for run_id, _ in calls), calls  # never the live one
    assert calls[:1] == ([(orphan, None)] if watches else [])  # the start's resume, then the watch


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
        wait_for(lambda: not executor._in_hand, "both tasks to end")
        assert executor.submit_experiment(unknown) is False  # refused for good: left alone
        assert executor.submit_experiment(busy) is True  # ExperimentBusy: it may be orphaned later
        wait_for(lambda: not executor._in_hand, "the task to end")
        claim.release()
        assert len(ledger.recorder.select_events(busy)) == 1  # ExperimentStarted: never evaluated
    finally:
        executor.shutdown()
        ledger.close()


def test_a_server_hands_a_run_over_once_at_a_time(database_url: str, tmp_path: Path) -> None:
    """The experiments' rules, for runs: a run waiting in the server's pool is not submitted
    again meanwhile; once its task ended, submitted again if another process held its claim
    (RunBusy: that one may die), never again if it was refused for good (an id that names no
    run)."""
    ledger = TwinLedger.open(database_url)
    executor = ServerExecutor(database_url)
    try:
        twin = ledger.clone_twin(name="Mars", body="mars")
        busy = ledger.queue_run(
            twin, pattern="mars_terraform", duration_years=5, budget_cents=BUDGET, seed=1
        )
        unknown = uuid.uuid4()
        assert ledger.database is not None
        claim = run_claim(ledger.database, busy)  # another process executes it
        assert claim.try_acquire()
        go = tmp_path / "go"
        assert executor.local is not None
        blocker = executor.local.submit(block_until, str(go))
        try:
            assert executor.submit(busy, claim_timeout=0) is True
            assert executor.submit(unknown, claim_timeout=0) is True
            assert executor.submit(busy, claim_timeout=0) is False  # waiting in hand: not twice
            assert executor.submit(unknown) is False
        finally:
            go.touch()
        blocker.result(timeout=120)
        wait_for(lambda: not executor._in_hand, "both tasks to end")
        assert executor.submit(unknown) is False  # refused for good: left alone
        assert executor.submit(busy, claim_timeout=0) is True  # RunBusy: it may be orphaned later
        wait_for(lambda: not executor._in_hand, "the task to end")
        claim.release()
        assert topics(ledger, str(busy)) == ["RunQueued"]  # never executed
    finally:
        executor.shutdown()
        ledger.close()


class Ended:
    """A task's future as a done-callback sees it: ended with ``error``."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    def cancelled(self) -> bool:
        return False

    def exception(self) -> BaseException | None:
        return self.error


def test_a_run_dask_gave_up_on_is_left_alone_and_a_busy_one_is_not(database_url: str) -> None:
    """On Dask the scheduler retries a task whose worker died, and raises KilledWorker once
    the deaths pass its allowed failures: the server counts that as the deaths past
    MAX_WORKER_DEATHS and leaves the run alone, as it does after a local pool broke four
    times; a run refused because another process held its claim stays eligible."""
    from concurrent.futures.process import BrokenProcessPool

    from distributed import KilledWorker

    from domain.errors import RunBusy
    from infrastructure.http.executor import MAX_WORKER_DEATHS

    executor = ServerExecutor(database_url)
    try:
        gave_up, busy, broken = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        for run_id, error in [
            (gave_up, KilledWorker("twinledger-run-x", None, 3)),
            (busy, RunBusy("run_id: run is being executed by another process right now")),
        ]:
            assert executor._take(run_id)
            executor._ended("run", run_id)(Ended(error))
        for _ in range(MAX_WORKER_DEATHS):
            assert executor._take(broken)
            executor._ended("run", broken)(Ended(BrokenProcessPool()))
        assert executor._left_alone == {gave_up}
        assert not executor._in_hand
        assert executor._take(broken)  # three deaths: once more
        executor._ended("run", broken)(Ended(BrokenProcessPool()))
        assert executor._left_alone == {gave_up, broken}  # the fourth: left alone
        assert executor.submit(gave_up) is False and executor.submit(broken) is False
    finally:
        executor.shutdown()
