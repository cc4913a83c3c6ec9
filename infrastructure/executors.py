"""Where runs execute: in this process (the default) or on a Dask cluster (docs/scale-out.md).

Tasks carry a store URL and a run id, nothing else: a worker opens the store itself, claims the
run (infrastructure/locks.py: one execution of a run at a time, whatever the engine retries),
and executes or resumes it. Because a run is a pure function of its RunQueued, a run whose
worker died is resumed by another from its last saved chunk and gets the same digest.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor as Executor_
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

from domain.errors import RunBusy, ValidationError
from domain.run import SimulationRun
from infrastructure.application import TwinLedger
from infrastructure.locks import StoreLock, nobody_holds
from infrastructure.settings import Database, resolve_database

SCHEDULER_VARIABLE = "TWINLEDGER_SCHEDULER"
MAX_SCHEDULER_CHARS = 1000
PRIORITY_ORDER = {"high": 0, "normal": 1, "low": 2}


@dataclass(frozen=True)
class RunOutcome:
    """How a run stood when its task ended."""

    run_id: str
    status: str
    years_recorded: int
    duration_years: int
    result_digest: str | None
    error_message: str | None


# --- the task ------------------------------------------------------------------------------------

_ledgers: dict[str, TwinLedger] = {}
_ledgers_lock = threading.Lock()


def _ledger(url: str) -> TwinLedger:
    """One ledger per store per worker process (no DDL: the store exists)."""
    with _ledgers_lock:
        if url not in _ledgers:
            _ledgers[url] = TwinLedger.open(url, create_tables=False)
        return _ledgers[url]


def execute_claimed(url: str, run_id: str, claim_timeout: float | None = None) -> RunOutcome:
    """A task: open the store by URL, then ``execute_or_report`` the run."""
    run = execute_or_report(_ledger(url), run_id, claim_timeout=claim_timeout)
    return RunOutcome(
        run_id=str(run.id),
        status=str(run.status),
        years_recorded=run.years_recorded,
        duration_years=run.duration_years,
        result_digest=run.result_digest,
        error_message=run.error_message,
    )


def execute_or_report(
    ledger: TwinLedger, run_id: str | UUID, *, claim_timeout: float | None = None
) -> SimulationRun:
    """Claim the run, then execute or resume it; an ended run is only reported.

    Every executor of runs takes the same claim (``claimed``; ``run execute`` through the
    service, failing at once instead of waiting). A second task for the same run (an engine
    retry, a zombie, ``execute --queued`` beside the experiment that owns the run) waits for
    the claim, then finds the run ended, or resumes it from its last saved chunk if the first
    holder died.
    """
    with claimed(ledger.database, run_id, timeout=claim_timeout):
        run = ledger.get_run(run_id)
        return run if run.ended else ledger.execute_run(run.id)


@contextlib.contextmanager
def claimed(
    database: Database | None, run_id: str | UUID, *, timeout: float | None = None
) -> Iterator[None]:
    """Hold the run's claim for the block: RunBusy if another holder keeps it past ``timeout``
    seconds (0: fail at once; None: wait). No database (a private in-memory store): no other
    process can reach the run, nothing to claim."""
    if database is None:
        yield
        return
    claim = run_claim(database, run_id)
    if not claim.acquire(timeout=timeout):
        waited = "right now" if not timeout else f"(waited {timeout} s)"
        raise RunBusy(f"run_id: run {run_id} is being executed by another process {waited}")
    try:
        yield
    finally:
        claim.release()


def run_claim(database: Database, run_id: str | UUID) -> StoreLock:
    """The lock that makes one process at a time execute this run."""
    return StoreLock(database, f"run:{UUID(str(run_id))}")


def experiment_claim(database: Database, experiment_id: str | UUID) -> StoreLock:
    """The lock that makes one process at a time evaluate this experiment (its search and the
    events it records; its sample runs have claims of their own)."""
    return StoreLock(database, f"experiment:{UUID(str(experiment_id))}")


def experiments_to_resume(database: Database, *, catch_up: bool = True) -> list[str]:
    """Experiments left ``running`` by a dead evaluator (nobody holds their claim), oldest
    first: what ``twinledger serve`` resumes on start and looks for while it runs
    (docs/experiments.md, Resume). ``catch_up=False`` reads the read tables as they stand (a
    server's log follower keeps them current)."""
    from projections import queries

    with _read_tables(database, catch_up) as store:
        running = queries.experiments(store, status="running")
    return unclaimed(database, [str(row["id"]) for row in running], experiment_claim)


def orphaned_runs(database: Database, *, catch_up: bool = True) -> list[str]:
    """Runs left ``running`` by a dead executor (nobody holds their claim), less experiments'
    sample runs (their experiment's evaluator owns them; a dead one's experiment is resumed
    instead): what a server looks for while it runs (infrastructure/http/orphans.py).
    ``catch_up`` as for ``experiments_to_resume``."""
    from projections import queries

    with _read_tables(database, catch_up) as store:
        running = queries.runs(store, status="running")
    ids = [row["id"] for row in running if row.get("experiment_id") is None]
    return unclaimed(database, ids, run_claim)


def runs_to_execute(
    database: Database, limit: int | None = None, *, experiments: bool = True
) -> list[str]:
    """Queued runs (high priority first, then oldest), then runs left running by a dead executor
    (``running`` with no holder of their claim): what ``execute --queued`` drains and what
    ``twinledger serve`` resumes on start.

    ``experiments=False`` leaves out an experiment's sample runs: the server leaves them to the
    experiment's evaluator. ``execute --queued`` takes them (a dead experiment's samples): safe,
    as every executor claims the run it executes (docs/scale-out.md).
    """
    from projections import queries

    with _read_tables(database, catch_up=True) as store:
        queued = queries.runs(store, status="queued")
        running = queries.runs(store, status="running")
    if not experiments:
        queued = [row for row in queued if row.get("experiment_id") is None]
        running = [row for row in running if row.get("experiment_id") is None]
    queued.sort(
        key=lambda row: (
            PRIORITY_ORDER.get((row.get("parameters") or {}).get("priority", "normal"), 1),
            row["queued_at"],
            row["id"],
        )
    )
    chosen = [row["id"] for row in queued]
    chosen += unclaimed(database, [row["id"] for row in running], run_claim)
    return chosen if limit is None else chosen[:limit]


def unclaimed(
    database: Database, ids: Iterable[str], claim: Callable[[Database, str], StoreLock]
) -> list[str]:
    """Those of ``ids`` whose claim nobody holds (taken and let go at once): a run or an
    experiment left ``running`` whose executor or evaluator died."""
    ids = list(ids)
    free = nobody_holds(database, [claim(database, ident) for ident in ids])
    return [ident for ident, nobody in zip(ids, free, strict=True) if nobody]


@contextlib.contextmanager
def _read_tables(database: Database, catch_up: bool) -> Iterator[Any]:
    from projections.runner import Projector

    with Projector(database) as projector:
        if catch_up:
            projector.catch_up()
        yield projector.store


# --- executors -----------------------------------------------------------------------------------


class Handle(Protocol):
    """A submitted run: a concurrent.futures.Future or a distributed.Future."""

    def result(self, timeout: float | None = None) -> RunOutcome: ...

    def done(self) -> bool: ...


class Executor(Protocol):
    """Executes runs somewhere; the CLI, experiments and the HTTP server use only this."""

    url: str

    def submit(self, run_id: str, claim_timeout: float | None = None) -> Handle:
        """Execute or resume the run (``execute_claimed``; ``claim_timeout`` as there)."""
        ...

    def run_all(
        self, run_ids: Iterable[str], on_done: Callable[[RunOutcome], None] | None = None
    ) -> list[RunOutcome]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Runs on this machine, no set-up: the default.

    One worker: a thread of this process (a server stays responsive, a command stays simple).
    More: that many spawned processes (simulation is Python: threads would share one core).
    """

    def __init__(self, url: str, workers: int = 1) -> None:
        self.url = url
        self._pool: Executor_ = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="run")
            if workers <= 1
            else ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context("spawn")
            )
        )

    def submit(self, run_id: str, claim_timeout: float | None = None) -> Future[RunOutcome]:
        return self._pool.submit(execute_claimed, self.url, str(run_id), claim_timeout)

    def run_all(
        self, run_ids: Iterable[str], on_done: Callable[[RunOutcome], None] | None = None
    ) -> list[RunOutcome]:
        futures = [self.submit(run_id) for run_id in run_ids]
        return _collect(as_completed(futures), on_done)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor:
    """Runs as Dask tasks on a cluster (``tcp://HOST:8786``) or a LocalCluster (``local``).

    Tasks are impure (``pure=False``). A task whose worker dies is run again by the scheduler
    until ``distributed.scheduler.allowed-failures`` deaths (then KilledWorker); ``retries``
    reruns a task that raised (a refusal such as RunBusy, too). The run's claim makes a rerun
    that overlaps a zombie wait, then resume or report.
    """

    def __init__(self, url: str, scheduler: str, *, retries: int = 3, workers: int = 0) -> None:
        database = resolve_database(url)
        if not database.is_postgres and scheduler != "local":
            raise ValidationError(
                "scheduler",
                f"a remote Dask scheduler ({scheduler}) needs a PostgreSQL store that every worker "
                f"can reach; {database.describe()} is a SQLite file on this machine "
                "(use --scheduler local, or --db postgresql://...)",
            )
        from distributed import Client, LocalCluster

        self.url = url
        self.retries = retries
        self._cluster: Any = None
        try:
            if scheduler == "local":
                self._cluster = LocalCluster(
                    n_workers=workers or (os.cpu_count() or 1),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address="127.0.0.1:0",  # loopback, any free port
                    host="127.0.0.1",
                )
                self._client = Client(self._cluster)
            else:
                self._client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as error:
            raise ValidationError(
                "scheduler", f"cannot reach the Dask scheduler {scheduler}: {error}"
            ) from None

    def submit(self, run_id: str, claim_timeout: float | None = None) -> Any:
        return self._client.submit(
            execute_claimed,
            self.url,
            str(run_id),
            claim_timeout,
            key=f"twinledger-run-{run_id}-{uuid.uuid4().hex[:8]}",
            pure=False,
            retries=self.retries,
        )

    def run_all(
        self, run_ids: Iterable[str], on_done: Callable[[RunOutcome], None] | None = None
    ) -> list[RunOutcome]:
        from distributed import as_completed as dask_completed

        futures = [self.submit(run_id) for run_id in run_ids]
        if not futures:
            return []
        return _collect(dask_completed(futures), on_done)

    def close(self) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def _collect(
    finished: Iterator[Any], on_done: Callable[[RunOutcome], None] | None
) -> list[RunOutcome]:
    outcomes = []
    for future in finished:
        outcome: RunOutcome = future.result()
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)
    return outcomes


def check_scheduler(scheduler: str | None) -> str | None:
    """The scheduler ``scheduler`` names (or $TWINLEDGER_SCHEDULER; None: local), its address
    checked before anything is written: a command that would fail at its first sample run
    (an experiment recorded, then failed) is refused at once, naming ``scheduler``."""
    scheduler = scheduler or os.environ.get(SCHEDULER_VARIABLE) or None
    if scheduler is None or scheduler == "local":
        return scheduler
    if (
        not scheduler.startswith(("tcp://", "tls://", "ws://", "wss://"))
        or len(scheduler) > MAX_SCHEDULER_CHARS
        or re.search(r"[^\x21-\x7e]", scheduler)  # an address: printable ASCII, no spaces
    ):
        shown = repr(scheduler if len(scheduler) <= 60 else scheduler[:60] + "...")
        raise ValidationError(
            "scheduler", f"{shown} is not a scheduler address (tcp://HOST:8786) or 'local'"
        )
    return scheduler


def open_executor(url: str, scheduler: str | None = None, *, workers: int = 1) -> Executor:
    """The executor for ``scheduler`` (or $TWINLEDGER_SCHEDULER): Dask if set, else local."""
    scheduler = check_scheduler(scheduler)
    if scheduler is None:
        return LocalExecutor(url, workers)
    return DaskExecutor(url, scheduler, workers=workers if workers > 1 else 0)


def store_url(database: Database | None) -> str:
    """The URL workers open; a private in-memory store cannot be shared with them."""
    if database is None or database.sqlite_path.startswith("file:"):
        raise ValidationError("db", "executing elsewhere needs a database file or PostgreSQL")
    return database.url
