"""Where the HTTP server executes runs and experiments: never in the request that asks for them.

``Executor`` is the small interface the server needs (``submit`` a run id, ``submit_experiment``
an experiment id); tasks carry ids only, and whoever executes them opens the store by URL. The
default ``LocalExecutor`` runs them in worker processes of this machine (spawned, so a
simulation holds no lock of the server's and its CPU time does not slow requests down); the
scale-out issue adds a distributed one behind the same interface. Progress is not reported
through the executor: it is in the log, which the server follows (infrastructure/http/sse.py).
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Protocol
from uuid import UUID

from domain.errors import TwinLedgerError

log = logging.getLogger("twinledger.http")


class Executor(Protocol):
    def submit(self, run_id: UUID) -> None:
        """Execute a queued run in the background (RunStarted ... RunCompleted/RunFailed)."""

    def submit_experiment(self, experiment_id: UUID) -> None:
        """Evaluate a started experiment in the background, to its end."""

    def shutdown(self) -> None:
        """Stop taking tasks; wait for those under way (a crash would leave them resumable)."""


def execute(url: str, run_id: str) -> None:
    """A task: execute one run on its own connection to the store (in a worker)."""
    from infrastructure.service import Ledger

    with Ledger.open(url, create_tables=False, warn=log.warning) as ledger:
        ledger.execute_run(run_id)


def evaluate(url: str, experiment_id: str) -> None:
    """A task: evaluate one started experiment to its end (in a worker)."""
    from infrastructure.service import Ledger

    with Ledger.open(url, create_tables=False, warn=log.warning) as ledger:
        ledger.continue_experiment(experiment_id)


def _report(kind: str, ident: UUID) -> Callable[[Future[None]], None]:
    def done(future: Future[None]) -> None:
        error = future.exception()
        if error is None:
            return
        if isinstance(error, TwinLedgerError):  # e.g. cancelled before it started: expected
            log.info("%s %s not executed: %s", kind, ident, error)
        else:
            log.error("%s %s failed in the executor: %r", kind, ident, error)

    return done


class LocalExecutor:
    """Runs tasks in ``workers`` processes of this machine, one task at a time each."""

    def __init__(self, url: str, *, workers: int = 1) -> None:
        self.url = url
        self.pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        )

    def submit(self, run_id: UUID) -> None:
        future = self.pool.submit(execute, self.url, str(run_id))
        future.add_done_callback(_report("run", run_id))

    def submit_experiment(self, experiment_id: UUID) -> None:
        future = self.pool.submit(evaluate, self.url, str(experiment_id))
        future.add_done_callback(_report("experiment", experiment_id))

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
