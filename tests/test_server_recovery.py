"""A server finishes the runs it accepted, whatever dies: itself, or one of its run workers.

The server is a real `twinledger serve` process in a session of its own. Either it is killed
with SIGKILL, its worker processes with it (the whole process group, as a supervisor or the OOM
killer of a container would), then started again on the same store; or only its run worker is
killed while it lives on (docs/http.md, A restarted server resumes).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from fastapi.testclient import TestClient

from infrastructure.application import RunLink, TwinLedger
from infrastructure.bench.http_load import LOOPBACK, free_port, serve_command, wait_until_up
from infrastructure.http.app import Settings, create_app
from tests.test_http_api import NoExecutor

API = "/api/v1"
BUDGET = 1_000_000_000_000
YEARS = 1000
RUN = {"pattern": "mars_terraform", "years": YEARS, "budget_cents": BUDGET}


@contextmanager
def server_process(
    url: str, *options: str, log: IO[str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`twinledger serve` in a new session (so its workers share its process group), its
    stderr written to ``log`` (a file the caller reads) or to a file of its own."""
    port = free_port()
    command, env = serve_command(url, port, *options)
    with ExitStack() as files:
        if log is None:
            log = files.enter_context(tempfile.TemporaryFile(mode="w+"))
        process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
            start_new_session=True,
        )
        try:
            yield wait_until_up(f"http://{LOOPBACK}:{port}", process, log, 90), process
        finally:
            kill_group(process)


def fresh_connections(base: str) -> httpx.Client:
    """A client that opens a connection per request: the server closes one idle for 5 s
    (uvicorn's keep-alive), and a request sent on it as it closes is reset."""
    return httpx.Client(base_url=base, timeout=60, limits=httpx.Limits(max_keepalive_connections=0))


def kill_group(process: subprocess.Popen[str]) -> None:
    """SIGKILL the server and every process of its group (its run workers)."""
    with suppress(ProcessLookupError):  # the group may be gone already
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def topics(ledger: TwinLedger, run_id: str) -> list[str]:
    """The topic of each stored event of the run, in order (its versions checked contiguous)."""
    recorded = list(ledger.recorder.select_events(uuid.UUID(run_id)))
    assert [event.originator_version for event in recorded] == list(range(1, len(recorded) + 1))
    return [event.topic.rsplit(":", 1)[-1] for event in recorded]


def uninterrupted_digest(tmp_path: Path, seed: int) -> str:
    alone = TwinLedger.open(f"sqlite:///{tmp_path}/alone-{seed}.db")
    try:
        twin = alone.clone_twin(name="Mars", body="mars")
        run = alone.queue_run(
            twin,
            pattern="mars_terraform",
            duration_years=YEARS,
            budget_cents=BUDGET,
            seed=seed,
            initiated_by="api",
        )
        digest = alone.execute_run(run).result_digest
    finally:
        alone.close()
    assert digest is not None
    return digest


def wait_for(condition: Any, what: str, timeout: float = 180.0, every: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def test_a_restarted_server_finishes_what_a_killed_one_accepted(
    database_url: str, tmp_path: Path
) -> None:
    """One worker: run A executes, run B waits behind it. The server and its worker die by
    SIGKILL once A has saved a chunk: A is left running (its claim released by the death), B
    queued. The restarted server finishes both, each year recorded once, each digest that of
    the same run executed without interruption."""
    ledger = TwinLedger.open(database_url)
    try:
        with server_process(database_url, "--workers", "1") as (base, process):
            with fresh_connections(base) as http:
                twin = http.post(f"{API}/twins", json={"name": "Mars", "body": "mars"})
                assert twin.status_code == 201, twin.text
                twin_id = twin.json()["id"]
                accepted = [
                    http.post(f"{API}/runs", json={"twin_id": twin_id, "seed": seed, **RUN})
                    for seed in (1, 2)
                ]
            assert [response.status_code for response in accepted] == [202, 202]
            run_a, run_b = (response.json()["id"] for response in accepted)
            wait_for(lambda: ledger.get_run(run_a).years_recorded > 0, "run A's first chunk")
            kill_group(process)

        interrupted = ledger.get_run(run_a)
        assert interrupted.status == "running" and interrupted.years_recorded < YEARS, (
            "the kill came after run A ended: the test proved nothing"
        )
        assert topics(ledger, run_b) == ["RunQueued"]

        with (
            server_process(database_url, "--workers", "1") as (base, _),
            fresh_connections(base) as http,
        ):

            def ended() -> bool:
                rows = [http.get(f"{API}/runs/{run_id}").json() for run_id in (run_a, run_b)]
                return all(row["status"] in ("completed", "failed") for row in rows)

            wait_for(ended, "both runs to end after the restart", every=0.2)
            served = {run_id: http.get(f"{API}/runs/{run_id}").json() for run_id in (run_a, run_b)}

        for run_id, seed in ((run_a, 1), (run_b, 2)):
            assert served[run_id]["status"] == "completed", served[run_id]
            assert served[run_id]["result_digest"] == uninterrupted_digest(tmp_path, seed)
            stream = topics(ledger, run_id)
            assert stream.count("YearResultRecorded") == YEARS  # each year exactly once
            assert stream.count("RunCompleted") == 1
        assert topics(ledger, run_a).count("RunStarted") == 2  # resumed, not started over
        assert topics(ledger, run_b).count("RunStarted") == 1
    finally:
        ledger.close()


def run_workers(server_pid: int) -> list[int]:
    """The server's run worker processes (spawned by multiprocessing; not its resource tracker)."""
    children = []
    for task in Path(f"/proc/{server_pid}/task").iterdir():  # each thread's: a request's thread
        with suppress(OSError):  # started the pool; a thread may end meanwhile
            children += (task / "children").read_text().split()
    return [
        int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def test_a_server_whose_run_worker_dies_finishes_the_run(database_url: str, tmp_path: Path) -> None:
    """The worker executing a run is SIGKILLed mid-run: the server replaces its broken pool,
    the run resumes from its last chunk to the uninterrupted digest, and the server goes on
    accepting and executing runs."""
    ledger = TwinLedger.open(database_url)
    try:
        with (
            server_process(database_url, "--workers", "1") as (base, process),
            fresh_connections(base) as http,
        ):
            twin_id = http.post(f"{API}/twins", json={"name": "Mars", "body": "mars"}).json()["id"]
            first = http.post(f"{API}/runs", json={"twin_id": twin_id, "seed": 1, **RUN})
            assert first.status_code == 202, first.text
            run_id = first.json()["id"]
            wait_for(lambda: ledger.get_run(run_id).years_recorded > 0, "the run's first chunk")
            workers = run_workers(process.pid)
            assert len(workers) == 1, workers
            os.kill(workers[0], signal.SIGKILL)
            assert ledger.get_run(run_id).status == "running", "the kill came too late"

            second = http.post(f"{API}/runs", json={"twin_id": twin_id, "seed": 2, **RUN})
            assert second.status_code == 202, second.text  # a broken pool takes no run: 500
            runs = {run_id: 1, second.json()["id"]: 2}

            def ended() -> bool:
                rows = [http.get(f"{API}/runs/{ident}").json() for ident in runs]
                return all(row["status"] in ("completed", "failed") for row in rows)

            wait_for(ended, "both runs to end", every=0.2)
            served = {ident: http.get(f"{API}/runs/{ident}").json() for ident in runs}
            assert process.poll() is None  # the server lived through it
            assert workers[0] not in run_workers(process.pid)
        for ident, seed in runs.items():
            assert served[ident]["status"] == "completed", served[ident]
            assert served[ident]["result_digest"] == uninterrupted_digest(tmp_path, seed)
            assert topics(ledger, ident).count("YearResultRecorded") == YEARS
        assert topics(ledger, run_id).count("RunStarted") == 2  # resumed, not started over
    finally:
        ledger.close()


# --- which runs a server takes up -------------------------------------------------------------


def _store_with_runs(url: str) -> dict[str, str]:
    """A queued run, an experiment's queued sample run, and a completed run."""
    ledger = TwinLedger.open(url)
    try:
        twin = ledger.clone_twin(name="Mars", body="mars")
        options: dict[str, Any] = {
            "pattern": "mars_terraform",
            "duration_years": 5,
            "budget_cents": BUDGET,
        }
        queued = ledger.queue_run(twin, seed=1, **options)
        sample = ledger.queue_run(
            twin, seed=2, link=RunLink(uuid.uuid4(), 0, 0, "sample"), **options
        )
        done = ledger.queue_run(twin, seed=3, **options)
        ledger.execute_run(done)
    finally:
        ledger.close()
    return {"queued": str(queued), "sample": str(sample), "done": str(done)}


@pytest.mark.parametrize(
    ("options", "resumes"),
    [
        ({}, True),
        ({"resume_queued": False}, False),
        ({"read_only": True}, False),
    ],
    ids=["default", "no-resume-queued", "read-only"],
)
def test_a_server_takes_up_queued_runs_but_not_experiments(
    database_url: str, options: dict[str, Any], resumes: bool
) -> None:
    runs = _store_with_runs(database_url)
    executor = NoExecutor()
    app = create_app(Settings(url=database_url, **options), executor=executor)
    with TestClient(app):
        submitted = [str(run_id) for run_id in executor.runs]
    assert submitted == ([runs["queued"]] if resumes else [])


@pytest.mark.parametrize(
    ("options", "resumes"),
    [
        ({}, True),
        ({"resume_queued": False}, False),
        ({"read_only": True}, False),
    ],
    ids=["default", "no-resume-queued", "read-only"],
)
def test_a_server_takes_up_orphaned_experiments_but_not_live_ones(
    database_url: str, options: dict[str, Any], resumes: bool
) -> None:
    """Two experiments stand ``running``: one orphaned (nobody holds its claim: its evaluator
    died), one whose evaluator lives (this test holds its claim). The server submits the
    orphaned one only, as `experiment resume` would find it."""
    from infrastructure.executors import experiment_claim
    from infrastructure.experiments import start_experiment
    from tests.test_experiments import small_spec

    ledger = TwinLedger.open(database_url)
    try:
        orphaned, live = (
            start_experiment(ledger, small_spec(), started_by="test").id for _ in range(2)
        )
        assert ledger.database is not None
        claim = experiment_claim(ledger.database, live)
        assert claim.try_acquire()
        try:
            executor = NoExecutor()
            app = create_app(Settings(url=database_url, **options), executor=executor)
            with TestClient(app):
                submitted = list(executor.experiments)
        finally:
            claim.release()
    finally:
        ledger.close()
    assert submitted == ([orphaned] if resumes else [])


def test_a_restarted_server_finishes_an_experiment_a_killed_one_was_evaluating(
    database_url: str, tmp_path: Path
) -> None:
    """The server and its processes die by SIGKILL while an experiment it accepted is being
    evaluated (a sample run in flight). The restarted server resumes the experiment: it
    completes with the uninterrupted experiment's iterations, digests and final run, each
    iteration recorded once, each sample run's years once."""
    from infrastructure.experiments import get_experiment, run_experiment, runs_of
    from tests.test_experiments import fingerprint, small_spec, spec_data

    spec = spec_data(years=YEARS, max_iterations=3)
    ledger = TwinLedger.open(database_url)
    try:
        with server_process(database_url, "--workers", "1") as (base, process):
            with fresh_connections(base) as http:
                accepted = http.post(f"{API}/experiments", json=spec)
                assert accepted.status_code == 202, accepted.text
                experiment_id = accepted.json()["id"]

            def a_chunk_saved() -> bool:
                return any(
                    ledger.get_run(run_id).years_recorded > 0
                    for run_id in _experiment_runs(ledger, experiment_id)
                )

            wait_for(a_chunk_saved, "a sample run's first chunk")
            kill_group(process)

        interrupted = get_experiment(ledger, experiment_id)
        assert interrupted.status == "running", "the kill came after the end: proved nothing"
        with (
            server_process(database_url, "--workers", "1") as (base, _),
            fresh_connections(base) as http,
        ):

            def ended() -> bool:
                row = http.get(f"{API}/experiments/{experiment_id}").json()
                return bool(row["experiment"]["status"] in ("completed", "failed"))

            wait_for(ended, "the experiment to end after the restart", every=0.2)

        resumed = get_experiment(ledger, experiment_id)
        assert resumed.status == "completed", resumed
        # resumed, not started over: what was recorded before the kill stands, nothing twice
        assert resumed.iterations[: len(interrupted.iterations)] == interrupted.iterations
        assert [it.iteration for it in resumed.iterations] == list(range(len(resumed.iterations)))
        for run_id in runs_of(resumed).values():
            stream = topics(ledger, str(run_id))
            assert stream.count("YearResultRecorded") == YEARS
            assert stream.count("RunCompleted") == 1
        alone = TwinLedger.open(f"sqlite:///{tmp_path}/alone.db")
        try:
            serial = run_experiment(alone, small_spec(years=YEARS, max_iterations=3))
            assert fingerprint(ledger, resumed) == fingerprint(
                alone, get_experiment(alone, serial.id)
            )
        finally:
            alone.close()
    finally:
        ledger.close()


def _experiment_runs(ledger: TwinLedger, experiment_id: str) -> list[str]:
    """The experiment's sample runs queued so far (from the read tables, caught up)."""
    from projections import queries
    from projections.runner import Projector

    assert ledger.database is not None
    with Projector(ledger.database) as projector:
        projector.catch_up()
        rows = queries.runs(projector.store)
    return [str(row["id"]) for row in rows if str(row.get("experiment_id")) == experiment_id]


def test_a_dead_experiment_process_does_not_refuse_the_next_experiment(tmp_path: Path) -> None:
    """The process evaluating experiments dies: the next one gets a new process, not a 500."""
    from infrastructure.http.executor import ServerExecutor

    url = f"sqlite:///{tmp_path}/ledger.db"
    TwinLedger.open(url).close()
    executor = ServerExecutor(url)
    try:
        died = executor.experiments.submit(os._exit, 1)  # as a SIGKILL or the OOM killer would
        with pytest.raises(BrokenProcessPool):
            died.result(timeout=120)
        broken = executor.experiments
        executor.submit_experiment(uuid.uuid4())  # an unknown one: evaluated, found missing
        assert executor.experiments is not broken
    finally:
        executor.shutdown()


def test_serve_survives_clients_that_hang_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command line lets SIGPIPE end a process (`twinledger runs | head` ends quietly), and
    `serve` runs in that process: a write to a client that hung up (the run page closes its
    progress stream as the run ends) killed the server, exit -13. `serve` ignores SIGPIPE, so
    such a write fails for that connection alone. Also: --no-resume-queued reaches the app."""
    import uvicorn
    from typer.testing import CliRunner

    from infrastructure.cli import app

    seen: list[tuple[Any, bool]] = []

    def fake_run(application: Any, **options: Any) -> None:
        seen.append((signal.getsignal(signal.SIGPIPE), application.state.settings.resume_queued))

    monkeypatch.setattr(uvicorn, "run", fake_run)
    previous = signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # as infrastructure.cli.main does
    try:
        db = f"sqlite:///{tmp_path}/ledger.db"
        done = CliRunner().invoke(app, ["--db", db, "serve", "--no-resume-queued"])
        assert done.exit_code == 0, done.output
    finally:
        signal.signal(signal.SIGPIPE, previous)
    assert seen == [(signal.SIG_IGN, False)]
