"""Where the HTTP server executes runs and experiments: never in the request that asks for them.

Runs go to the executors of infrastructure/executors.py, the interface every entry point uses:
local workers by default (``serve --workers N``), a Dask cluster with ``serve --scheduler
tcp://HOST:8786`` (or TWINLEDGER_SCHEDULER). Tasks carry ids only; whoever executes them opens
the store by URL and claims the run, so a run executes once at a time whatever retries it.
Experiments are evaluated in a process of their own (spawned: the search and its bookkeeping
hold no lock of the server's), their sample runs on the same executor settings. Progress is
not reported through the executor: it is in the log, which the server follows (sse.py).
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Protocol
from uuid import UUID

from domain.errors import TwinLedgerError
from infrastructure.executors import execute_claimed, open_executor

log = logging.getLogger("twinledger.http")


class Executor(Protocol):
    """What the server needs: hand over a run or an experiment, and stop."""

    def submit(self, run_id: UUID) -> None:
        """Execute a queued run in the background (RunStarted ... RunCompleted/RunFailed)."""

    def submit_experiment(self, experiment_id: UUID) -> None:
        """Evaluate a started experiment in the background, to its end."""

    def shutdown(self) -> None:
        """Stop taking tasks; wait for those under way (a crash would leave them resumable)."""


def evaluate(url: str, experiment_id: str, workers: int, scheduler: str | None) -> None:
    """A task: evaluate one started experiment to its end (in a worker process)."""
    from infrastructure.service import Ledger

    with Ledger.open(url, create_tables=False, warn=log.warning) as ledger:
        ledger.continue_experiment(experiment_id, workers=workers, scheduler=scheduler)


def _report(kind: str, ident: UUID) -> Callable[[Any], None]:
    def done(future: Any) -> None:
        try:
            error = future.exception()
        except Exception as cancelled:  # a cancelled future: the server is stopping
            error = cancelled
        if error is None:
            return
        if isinstance(error, TwinLedgerError):  # e.g. cancelled before it started: expected
            log.info("%s %s not executed: %s", kind, ident, error)
        else:
            log.error("%s %s failed in the executor: %r", kind, ident, error)

    return done


class ServerExecutor:
    """Runs on infrastructure/executors.py's executor; experiments in one spawned process."""

    def __init__(self, url: str, *, workers: int = 1, scheduler: str | None = None) -> None:
        self.url = url
        self.workers = workers
        self.scheduler = scheduler
        # Local runs in spawned processes, even one: in a thread of the server a simulation would
        # hold the interpreter's lock and stall every request (infrastructure/executors.py runs a
        # single local worker in a thread, which suits a command, not a server).
        self.local = (
            ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context("spawn")
            )
            if scheduler is None
            else None
        )
        self.runs = None if scheduler is None else open_executor(url, scheduler, workers=workers)
        self.experiments = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn")
        )

    def submit(self, run_id: UUID) -> None:
        if self.local is not None:
            handle: Any = self.local.submit(execute_claimed, self.url, str(run_id))
        else:
            assert self.runs is not None
            handle = self.runs.submit(str(run_id))
        add = getattr(handle, "add_done_callback", None)
        if add is not None:
            add(_report("run", run_id))

    def submit_experiment(self, experiment_id: UUID) -> None:
        future: Future[None] = self.experiments.submit(
            evaluate, self.url, str(experiment_id), self.workers, self.scheduler
        )
        future.add_done_callback(_report("experiment", experiment_id))

    def shutdown(self) -> None:
        self.experiments.shutdown(wait=True, cancel_futures=True)
        if self.local is not None:
            self.local.shutdown(wait=True, cancel_futures=True)
        if self.runs is not None:
            self.runs.close()
