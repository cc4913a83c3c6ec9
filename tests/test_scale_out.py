"""Scale-out: runs on a real Dask cluster, one follower per store, scheduled operations once.

A real ``dask scheduler`` and two ``dask worker`` processes talk TCP on 127.0.0.1 against
PostgreSQL. A worker is SIGKILLed mid-run; a projections follower is SIGKILLed mid-batch.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eventsourcing.utils import get_topic
from psycopg import sql

from domain.errors import ValidationError
from domain.run import RunCompleted, RunStarted, YearResultRecorded
from infrastructure.application import TwinLedger
from infrastructure.executors import DaskExecutor, open_executor, run_claim
from infrastructure.experiments import get_experiment, run_experiment
from infrastructure.schedule import Scheduler, history
from infrastructure.settings import resolve_database
from projections.runner import Projector
from tests.conftest import fresh_postgres_url
from tests.test_experiments import fingerprint, small_spec

ROOT = Path(__file__).resolve().parent.parent
DASK = (sys.executable, "-m", "dask")  # the `dask` command, from this interpreter
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def spawn(*command: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        list(command),
        cwd=ROOT,
        env={**ENV, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


class Cluster:
    """A scheduler and its workers, each a real process. ``allowed_failures``: how many of a
    task's workers may die before the scheduler gives up on it (KilledWorker); Dask's default
    (3) unless given."""

    def __init__(self, workers: int = 2, *, allowed_failures: int | None = None) -> None:
        self.address = f"tcp://127.0.0.1:{free_port()}"
        port = self.address.rsplit(":", 1)[1]
        settings = {}
        if allowed_failures is not None:
            settings["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = str(allowed_failures)
        self.scheduler = spawn(
            *DASK,
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            port,
            "--no-dashboard",
            env=settings,
        )
        self.workers: list[subprocess.Popen[str]] = []
        for _ in range(workers):
            self.add_worker(wait=False)
        self.wait_for_workers(workers)

    def add_worker(self, *, wait: bool = True) -> subprocess.Popen[str]:
        """One more worker process (waited for until the scheduler counts it, unless not)."""
        worker = spawn(
            *DASK,
            "worker",
            self.address,
            "--nthreads",
            "1",
            "--no-nanny",  # the worker is this process: SIGKILL kills the running task
            "--no-dashboard",
            "--host",
            "127.0.0.1",
            "--name",
            f"worker-{len(self.workers)}",
        )
        self.workers.append(worker)
        if wait:
            self.wait_for_workers(sum(process.poll() is None for process in self.workers))
        return worker

    def wait_for_workers(self, count: int) -> None:
        from distributed import Client

        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(self.address, timeout="5s") as client:
                    client.wait_for_workers(count, timeout=60)
                return
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise

    def close(self) -> None:
        for process in [*self.workers, self.scheduler]:
            stop(process)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    started = Cluster(workers=2)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_postgres_url() as url:
        yield url


def stream_rows(url: str, run_id: Any) -> list[tuple[int, str]]:
    """(version, topic) of every stored event of one run, in version order."""
    database = resolve_database(url)
    with psycopg.connect(database.psycopg_conninfo()) as connection:
        rows = connection.execute(
            sql.SQL(
                "SELECT originator_version, topic FROM {} WHERE originator_id = %s "
                "ORDER BY originator_version"
            ).format(sql.Identifier(database.schema, "twinledger_events")),
            (run_id,),
        ).fetchall()
    return [(int(version), str(topic)) for version, topic in rows]


def mid_run(url: str) -> int:
    """How many runs have saved a chunk of years and not ended."""
    database = resolve_database(url)
    with psycopg.connect(database.psycopg_conninfo()) as connection:
        row = connection.execute(
            sql.SQL(
                "SELECT count(DISTINCT e.originator_id) FROM {t} e WHERE e.topic = %s "
                "AND NOT EXISTS (SELECT 1 FROM {t} c WHERE c.originator_id = e.originator_id "
                "AND c.topic = %s)"
            ).format(t=sql.Identifier(database.schema, "twinledger_events")),
            (get_topic(YearResultRecorded), get_topic(RunCompleted)),
        ).fetchone()
    return 0 if row is None else int(row[0])


# --- runs on the cluster ----------------------------------------------------------------------


@pytest.mark.postgres
def test_fifty_queued_runs_drain_on_the_cluster_though_a_worker_dies(
    cluster: Cluster, postgres_url: str, tmp_path: Path
) -> None:
    """Every run completes, every event exactly once, every digest as if run serially."""
    ledger = TwinLedger.open(postgres_url)
    twin = ledger.clone_twin(name="Mars", body="mars")
    queued = [
        ledger.queue_run(
            twin,
            pattern="mars_terraform",
            duration_years=400,
            seed=seed,
            budget_cents=1_000_000_000_000,
        )
        for seed in range(1, 51)
    ]
    executor = DaskExecutor(postgres_url, cluster.address)
    killed: list[int] = []

    def kill_mid_run() -> None:
        # Both workers are mid-run (a chunk saved, not completed): kill one of them.
        deadline = time.monotonic() + 120
        while mid_run(postgres_url) < 2:
            if time.monotonic() > deadline:
                return
            time.sleep(0.005)
        os.killpg(cluster.workers[0].pid, signal.SIGKILL)
        killed.append(cluster.workers[0].pid)

    killer = threading.Thread(target=kill_mid_run, daemon=True)
    killer.start()
    try:
        outcomes = executor.run_all([str(run_id) for run_id in queued])
    finally:
        executor.close()
    killer.join()
    assert killed, "the worker was not killed"
    assert sorted(o.run_id for o in outcomes) == sorted(str(r) for r in queued)

    serial = TwinLedger.open(f"sqlite:///{tmp_path}/serial.db")
    serial_twin = serial.clone_twin(name="Mars", body="mars")
    resumed = 0
    for seed, run_id in enumerate(queued, start=1):
        run = ledger.get_run(run_id)
        assert run.status == "completed", (run_id, run.status, run.error_message)
        rows = stream_rows(postgres_url, run_id)
        assert [version for version, _ in rows] == list(range(1, len(rows) + 1))
        years = [t for _, t in rows if t == get_topic(YearResultRecorded)]
        assert len(years) == 400  # each year exactly once
        resumed += sum(1 for _, t in rows if t == get_topic(RunStarted)) > 1
        alone = serial.queue_run(
            serial_twin,
            pattern="mars_terraform",
            duration_years=400,
            seed=seed,
            budget_cents=1_000_000_000_000,
        )
        assert serial.execute_run(alone).result_digest == run.result_digest
    assert resumed >= 1, "no run was interrupted by the kill: the test proved nothing"
    ledger.close()
    serial.close()


@pytest.mark.postgres
def test_an_experiment_on_the_cluster_equals_the_serial_one(
    cluster: Cluster, postgres_url: str, tmp_path: Path
) -> None:
    spec = small_spec()
    on_cluster = TwinLedger.open(postgres_url)
    clustered = run_experiment(on_cluster, spec, scheduler=cluster.address)
    alone = TwinLedger.open(f"sqlite:///{tmp_path}/serial.db")
    serial = run_experiment(alone, spec)
    assert fingerprint(on_cluster, get_experiment(on_cluster, clustered.id)) == fingerprint(
        alone, get_experiment(alone, serial.id)
    )
    on_cluster.close()
    alone.close()


def test_a_remote_scheduler_refuses_a_sqlite_store(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as refused:
        open_executor(f"sqlite:///{tmp_path}/x.db", "tcp://127.0.0.1:8786")
    assert refused.value.field == "scheduler"
    assert "PostgreSQL" in str(refused.value)


def test_a_bad_scheduler_address_names_the_field(database_url: str) -> None:
    with pytest.raises(ValidationError) as refused:
        open_executor(database_url, "127.0.0.1:8786")
    assert refused.value.field == "scheduler"


def test_a_claimed_run_is_not_executed_twice_at_once(database_url: str) -> None:
    """The claim is exclusive across connections, and free again once released."""
    ledger = TwinLedger.open(database_url)
    run_id = ledger.queue_run(
        ledger.clone_twin(name="M", body="mars"),
        pattern="mars_terraform",
        duration_years=5,
        budget_cents=1_000_000_000,
    )
    assert ledger.database is not None
    first, second = run_claim(ledger.database, run_id), run_claim(ledger.database, run_id)
    assert first.try_acquire()
    assert not second.try_acquire()
    first.release()
    assert second.try_acquire()
    second.release()
    ledger.close()


# --- projections followers --------------------------------------------------------------------


FOLLOW = """
import os, signal, sys, time
from pathlib import Path
from infrastructure.settings import resolve_database
from projections import follower, tracking
from projections.runner import Projector

url, kill_at, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
original_advance, original_run = tracking.advance, Projector.run_forever
batches = {"n": 0}

def advance(store, cursor, name, old, new):
    original_advance(store, cursor, name, old, new)  # rows and position written, not committed
    batches["n"] += 1
    if batches["n"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

def run_forever(self, **options):
    while not go.exists():  # holds the lock, waits for the test to say go
        time.sleep(0.02)
    original_run(self, **options)

tracking.advance, Projector.run_forever = advance, run_forever
follower.follow(resolve_database(url), poll_seconds=0.2, report=lambda t: print(t, flush=True))
"""


class Follower:
    """A follower process (projections/follower.py) whose output lines are collected; it kills
    itself with SIGKILL in its ``kill_at``-th batch, after writing rows, before committing."""

    def __init__(self, url: str, go: Path, kill_at: int = 0) -> None:
        self.process = spawn(sys.executable, "-c", FOLLOW, url, str(kill_at), str(go))
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.seen):
            try:
                self.seen.append(self.lines.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"no {text!r} within {timeout} s: {self.seen}") from None


def positions(url: str) -> dict[str, int]:
    with Projector(resolve_database(url)) as projector:
        return {status.name: status.position for status in projector.status()}


def test_a_standby_follower_takes_over_when_the_active_one_is_killed_mid_batch(
    database_url: str, tmp_path: Path
) -> None:
    ledger = TwinLedger.open(database_url)
    twin = ledger.clone_twin(name="Mars", body="mars")
    for seed in range(6):
        run = ledger.queue_run(
            twin,
            pattern="mars_terraform",
            duration_years=1000,
            seed=seed,
            budget_cents=1_000_000_000_000,
        )
        ledger.execute_run(run)
    head = ledger.event_count()
    ledger.close()
    Projector(resolve_database(database_url)).close()  # the tables exist before the race

    go = tmp_path / "go"
    active = Follower(database_url, go, kill_at=3)
    active.wait_for("active")
    standby = Follower(database_url, go)
    try:
        standby.wait_for("standing by")
        go.touch()
        assert active.process.wait(timeout=120) == -signal.SIGKILL
        standby.wait_for("active")
        deadline = time.monotonic() + 120
        while min(positions(database_url).values()) < head:
            assert time.monotonic() < deadline, positions(database_url)
            time.sleep(0.1)
    finally:
        stop(active.process)
        stop(standby.process)
    with Projector(resolve_database(database_url)) as projector:
        followed = projector.checksums()
        projector.rebuild()
        assert projector.checksums() == followed


# --- scheduled operations ---------------------------------------------------------------------


def test_scheduled_operations_run_once_across_processes(database_url: str) -> None:
    TwinLedger.open(database_url).close()
    daemons = [
        spawn(
            sys.executable,
            "-c",
            "from infrastructure.cli import main; main()",
            "--db",
            database_url,
            "daemon",
            "--once",
        )
        for _ in range(4)
    ]
    for process in daemons:
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 0, output
    ledger = TwinLedger.open(database_url)
    done = [row["name"] for row in history(ledger)]
    assert sorted(done) == ["expire", "retention", "verify", "verify-chain"]
    ledger.close()


def test_an_operation_runs_again_only_when_due(database_url: str, clock: Any) -> None:
    from datetime import timedelta

    ledger = TwinLedger.open(database_url, clock=clock)
    twin = ledger.clone_twin(name="M", body="mars", expires_in=timedelta(hours=1))
    scheduler = Scheduler(
        ledger, {"expire": timedelta(minutes=5), "verify": timedelta(hours=1)}, clock=clock
    )
    assert {d.name for d in scheduler.tick()} == {"expire", "verify"}
    assert scheduler.tick() == []
    clock.advance(hours=2)
    again = scheduler.tick()
    assert [d.name for d in again] == ["expire", "verify"]
    assert again[0].outcome.startswith("expired 1 twins")
    assert ledger.get_twin(twin).status == "deleted"
    ledger.close()
