"""A server on a real Dask cluster whose worker dies mid-run while the server lives on.

`twinledger serve --scheduler tcp://...` accepts a run over HTTP; the ``dask worker`` process
executing it is SIGKILLed after the run's first chunk (that process only: its PID is the one
the scheduler names). Either the scheduler gives the task to a live worker (Dask's default
allowed failures) and the run ends completed, or it gives up on the task at once (allowed
failures 0: KilledWorker) and the server leaves the run alone until a later resume, here a
second server's start (docs/http.md, A running server resumes orphaned runs and experiments).
Either way every year is recorded once and the digest is the uninterrupted run's. PostgreSQL
only, as every test on a remote scheduler (its workers must reach the store).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infrastructure.application import TwinLedger
from tests.test_scale_out import Cluster, cluster, postgres_url  # noqa: F401 (fixtures)
from tests.test_server_recovery import (
    API,
    RUN,
    YEARS,
    fresh_connections,
    server_process,
    topics,
    uninterrupted_digest,
    wait_for,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def fragile_cluster() -> Iterator[Cluster]:
    """Two workers; the scheduler gives up on a task the first time its worker dies."""
    started = Cluster(workers=2, allowed_failures=0)
    try:
        yield started
    finally:
        started.close()


def worker_executing(address: str, run_id: str) -> int | None:
    """The PID of the worker processing the run's task, as the scheduler says (None: none)."""
    from distributed import Client

    with Client(address, timeout="10s") as client:
        for worker, keys in client.processing().items():
            if any(str(key).startswith(f"twinledger-run-{run_id}-") for key in keys):
                return int(client.run(os.getpid, workers=[worker])[worker])  # asked the worker
    return None


def accept_and_kill_its_worker(http: httpx.Client, ledger: TwinLedger, dask: Cluster) -> str:
    """POST a run, wait for its first chunk, SIGKILL the worker executing it; the run id."""
    twin = http.post(f"{API}/twins", json={"name": "Mars", "body": "mars"})
    assert twin.status_code == 201, twin.text
    accepted = http.post(f"{API}/runs", json={"twin_id": twin.json()["id"], "seed": 1, **RUN})
    assert accepted.status_code == 202, accepted.text
    run_id = str(accepted.json()["id"])
    named: list[int | None] = [None]

    def the_scheduler_names_it() -> bool:
        named[0] = worker_executing(dask.address, run_id)
        return named[0] is not None

    # Named first (a single task on an idle one-thread worker runs where it is assigned), so
    # the kill follows the first chunk (of four) at once, long before the run could end.
    wait_for(the_scheduler_names_it, "the scheduler to name the run's worker", every=0.05)
    [worker] = [process for process in dask.workers if process.pid == named[0]]
    wait_for(lambda: ledger.get_run(run_id).years_recorded > 0, "the run's first chunk")
    os.kill(worker.pid, signal.SIGKILL)  # that process only
    assert worker.wait(timeout=30) == -signal.SIGKILL
    interrupted = ledger.get_run(run_id)
    assert interrupted.status == "running" and interrupted.years_recorded < YEARS, (
        "the kill came after the run ended: the test proved nothing"
    )
    return run_id


def recorded_once(ledger: TwinLedger, run_id: str, tmp_path: Path, digest: str | None) -> None:
    """Completed, every year once, resumed once, the uninterrupted run's digest."""
    run = ledger.get_run(run_id)
    assert run.status == "completed", (run.status, run.error_message)
    stream = topics(ledger, run_id)  # versions checked contiguous
    assert stream.count("YearResultRecorded") == YEARS  # each year exactly once
    assert stream.count("RunCompleted") == 1
    assert stream.count("RunStarted") == 2  # the first worker's start, one resume
    assert run.result_digest == digest == uninterrupted_digest(tmp_path, 1)


def test_a_server_on_dask_finishes_a_run_whose_worker_was_killed(
    cluster: Cluster,  # noqa: F811
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The scheduler gives the task to another worker (the one already there, or the one
    that joins); the server's watch may hand the orphan over meanwhile (claim taken at once or
    not at all): the run ends completed, resumed once."""
    ledger = TwinLedger.open(postgres_url)
    try:
        with (
            server_process(postgres_url, "--scheduler", cluster.address, "--resume-every", "1") as (
                base,
                process,
            ),
            fresh_connections(base) as http,
        ):
            run_id = accept_and_kill_its_worker(http, ledger, cluster)
            cluster.add_worker()  # a new worker joins the one left

            def ended() -> bool:
                return bool(http.get(f"{API}/runs/{run_id}").json()["status"] != "running")

            wait_for(ended, "the run to end on the cluster", every=0.2)
            served = http.get(f"{API}/runs/{run_id}").json()
            assert process.poll() is None  # the server lived through it
        recorded_once(ledger, run_id, tmp_path, served["result_digest"])
    finally:
        ledger.close()


def test_a_run_dask_gave_up_on_is_left_alone_until_a_later_resume(
    fragile_cluster: Cluster,
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The scheduler gives up at the first death (KilledWorker): the server leaves the run
    running and never resubmits it, though its watch sees an orphan every second; a second
    server's start resumes it, once."""
    ledger = TwinLedger.open(postgres_url)
    watch = ("--scheduler", fragile_cluster.address, "--resume-every", "1")
    try:
        with (
            (tmp_path / "first.log").open("w+") as log,
            server_process(postgres_url, *watch, log=log) as (base, first),
            fresh_connections(base) as http,
        ):
            run_id = accept_and_kill_its_worker(http, ledger, fragile_cluster)
            left_alone = f"run {run_id}: Dask gave up on its task, its workers having died"

            def gave_up() -> bool:  # logged once the server's executor leaves the run alone
                return left_alone in Path(log.name).read_text()

            wait_for(gave_up, "the server to learn that Dask gave up on the task", every=0.1)
            assert ledger.get_run(run_id).status == "running"

            with server_process(postgres_url, *watch) as (_, second):  # the later resume

                def ended() -> bool:
                    return ledger.get_run(run_id).status != "running"

                wait_for(ended, "the second server to resume and end the run", every=0.2)
                assert second.poll() is None
            assert first.poll() is None
            said = Path(log.name).read_text()
        assert f"run {run_id}: nobody is executing it" not in said, said  # left alone
        recorded_once(ledger, run_id, tmp_path, ledger.get_run(run_id).result_digest)
    finally:
        ledger.close()
