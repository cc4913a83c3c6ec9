"""Where the HTTP server executes runs and experiments: never in the request that asks for them.

Runs go to the executors of infrastructure/executors.py, the interface every entry point uses:
local workers by default (``serve --workers N``), a Dask cluster with ``serve --scheduler
tcp://HOST:8786`` (or TWINLEDGER_SCHEDULER). Tasks carry ids only; whoever executes them opens
the store by URL and claims the run, so a run executes once at a time whatever retries it.
Experiments are evaluated in a process of their own (spawned: the search and its bookkeeping
hold no lock of the server's), their sample runs on the same executor settings; an
experiment is in hand here once at a time (submitted again only after its task ended), and one
its task showed cannot be evaluated here is left alone. Progress is not reported through the
executor: it is in the log, which the server follows (sse.py).
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol
from uuid import UUID

from domain.errors import ExperimentBusy, RunBusy, TwinLedgerError
from infrastructure.executors import (
    execute_claimed,
    experiments_to_resume,
    open_executor,
    orphaned_runs,
    runs_to_execute,
)
from infrastructure.settings import Database

log = logging.getLogger("twinledger.http")
MAX_WORKER_DEATHS = 3  # as Dask's allowed-failures: a run whose worker dies more is left alone


class Executor(Protocol):
    """What the server needs: hand over a run or an experiment, and stop."""

    def submit(self, run_id: UUID, *, claim_timeout: float | None = None) -> bool | None:
        """Execute a queued run, or resume an orphaned one, in the background (RunStarted ...
        RunCompleted/RunFailed), waiting up to ``claim_timeout`` seconds for its claim (None:
        as long as it takes); False if it was not submitted (in hand here, or left alone)."""

    def submit_experiment(self, experiment_id: UUID) -> bool:
        """Evaluate a started experiment in the background, to its end; False if it was not
        submitted (this executor has it in hand already, or leaves it alone)."""

    def shutdown(self) -> None:
        """Stop taking tasks; wait for those under way (a crash would leave them resumable)."""


def resume(database: Database, executor: Executor) -> list[str]:
    """Submit the runs nobody is executing: queued ones (a server that accepted them died before
    executing them, or another process queued them) and orphaned ``running`` ones (their claim
    is free: their executor died). The same choice as ``execute --queued``, less experiments'
    sample runs, which their experiment's evaluator owns. A run executing elsewhere meanwhile
    is harmless: its claim makes the second task wait, then find it ended (docs/http.md).

    Then the experiments nobody is evaluating (``resume_experiments``). Returns the ids
    submitted, runs first."""
    run_ids = [
        run_id
        for run_id in runs_to_execute(database, experiments=False)
        if executor.submit(UUID(run_id)) is not False
    ]
    if run_ids:
        log.warning("resumed %d queued or interrupted runs", len(run_ids))
    return run_ids + resume_experiments(database, executor)


def resume_orphans(database: Database, executor: Executor) -> list[str]:
    """The server's look for orphans while it runs (orphans.py): the runs and the experiments
    left ``running`` with a free claim (their executor or evaluator died: a command-line
    ``execute`` or ``experiment run``, a Dask worker, another server, a process of this one),
    read from the read tables as the log follower keeps them. Each is resumed under its claim,
    taken at once or not at all (``claim_timeout=0``, ExperimentBusy): with several servers on
    one store, one resumes it and the others are refused (RunBusy, ExperimentBusy: not left
    alone, as the one resuming may die too) or find it ended. Returns the ids submitted."""
    run_ids = [
        run_id
        for run_id in orphaned_runs(database, catch_up=False)
        if executor.submit(UUID(run_id), claim_timeout=0) is not False  # False: in hand here
    ]
    for run_id in run_ids:
        log.warning("run %s: nobody is executing it: resuming it", run_id)
    return run_ids + resume_experiments(database, executor, catch_up=False)


def resume_experiments(
    database: Database, executor: Executor, *, catch_up: bool = True
) -> list[str]:
    """Submit the experiments nobody is evaluating (``running``, their claim free: their
    evaluator died), as ``experiment resume`` would: on start, and every few seconds while the
    server runs (``resume_orphans``). The evaluation takes the claim and reads the experiment
    again, so one that another process took up meanwhile is not evaluated twice
    (ExperimentBusy, or found ended). Returns the ids submitted."""
    submitted = [
        experiment_id
        for experiment_id in experiments_to_resume(database, catch_up=catch_up)
        if executor.submit_experiment(UUID(experiment_id)) is not False  # False: in hand here
    ]
    for experiment_id in submitted:
        log.warning("experiment %s: nobody is evaluating it: resuming it", experiment_id)
    return submitted


def evaluate(url: str, experiment_id: str, workers: int, scheduler: str | None) -> None:
    """A task: evaluate one started experiment (just started, or orphaned by a dead evaluator)
    to its end, in a worker process, under its claim, as ``experiment resume`` does: refused
    if another process is evaluating it, or if it was recorded by another engine."""
    from infrastructure.service import Ledger

    with Ledger.open(url, create_tables=False, warn=log.warning) as ledger:
        ledger.resume_experiment(experiment_id, workers=workers, scheduler=scheduler)


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


def _died(error: BaseException | None) -> bool:
    """The task's process died under it: a local pool broken, or Dask's KilledWorker (the
    scheduler gave up on the task after its workers died past its allowed failures)."""
    return isinstance(error, BrokenProcessPool) or type(error).__name__ == "KilledWorker"


class ServerExecutor:
    """Runs on infrastructure/executors.py's executor; experiments in one spawned process.

    The same bookkeeping for runs and experiments: each is in hand once at a time (submitted
    again only after its task ended: one waiting behind another has a free claim, so looks
    orphaned), and left alone once refused for good (a TwinLedgerError other than RunBusy or
    ExperimentBusy: recorded by another engine, no such id) or once its process died more than
    MAX_WORKER_DEATHS times.

    A local worker that dies (killed, out of memory) breaks its pool: every run the pool held
    fails at once. The server then starts a new pool and submits those runs to it again (each
    resumes from its last saved chunk), each death counted. (On Dask, the scheduler retries a
    task whose worker died, up to its allowed failures: KilledWorker past them.) A dead
    experiment process's experiment is an orphan the server's watch resumes (orphans.py).
    """

    def __init__(self, url: str, *, workers: int = 1, scheduler: str | None = None) -> None:
        self.url = url
        self.workers = workers
        self.scheduler = scheduler
        self._lock = threading.Lock()
        self._stopping = False
        self._in_hand: set[UUID] = set()  # runs and experiments whose task has not ended
        self._pools: dict[UUID, ProcessPoolExecutor] = {}  # a local run: the pool executing it
        self._deaths: Counter[UUID] = Counter()
        self._left_alone: set[UUID] = set()  # runs and experiments not to submit again
        # Local runs in spawned processes, even one: in a thread of the server a simulation would
        # hold the interpreter's lock and stall every request (infrastructure/executors.py runs a
        # single local worker in a thread, which suits a command, not a server).
        self.local = self._pool() if scheduler is None else None
        self.runs = None if scheduler is None else open_executor(url, scheduler, workers=workers)
        self.experiments = self._pool(1)

    def _pool(self, workers: int | None = None) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=workers or self.workers, mp_context=multiprocessing.get_context("spawn")
        )

    def _take(self, ident: UUID) -> bool:
        """In hand from now on, unless it is already, is left alone, or the server stops."""
        with self._lock:
            if self._stopping or ident in self._in_hand or ident in self._left_alone:
                return False
            self._in_hand.add(ident)
            return True

    def _count_death(self, kind: str, ident: UUID, *, dask_gave_up: bool = False) -> bool:
        """One more death of the process under ``ident``'s task (the lock held); False, and
        left alone from now on, past MAX_WORKER_DEATHS or once Dask gave up on the task
        (KilledWorker: its scheduler counted the deaths, as many as its allowed failures say)."""
        self._deaths[ident] = MAX_WORKER_DEATHS + 1 if dask_gave_up else self._deaths[ident] + 1
        if self._deaths[ident] <= MAX_WORKER_DEATHS:
            return True
        self._left_alone.add(ident)
        self._in_hand.discard(ident)
        why = (
            "Dask gave up on its task, its workers having died (KilledWorker)"
            if dask_gave_up
            else f"its process died {self._deaths[ident]} times"
        )
        log.error("%s %s: %s; left running", kind, ident, why)
        return False

    def _ended(self, kind: str, ident: UUID) -> Callable[[Any], None]:
        """When a task ends: no longer in hand; left alone if its process died too often or it
        was refused for good; not if another process held its claim (RunBusy, ExperimentBusy):
        should that one die, it is an orphan again."""
        report = _report(kind, ident)

        def done(future: Any) -> None:
            try:
                error = None if future.cancelled() else future.exception()
            except Exception as gone:  # a Dask future lost with its client: the server stops
                error = gone
            with self._lock:
                self._in_hand.discard(ident)
                if _died(error):
                    self._count_death(
                        kind, ident, dask_gave_up=not isinstance(error, BrokenProcessPool)
                    )
                elif isinstance(error, TwinLedgerError) and not isinstance(
                    error, RunBusy | ExperimentBusy
                ):
                    self._left_alone.add(ident)
            report(future)

        return done

    def submit(self, run_id: UUID, *, claim_timeout: float | None = None) -> bool:
        if not self._take(run_id):
            return False
        if self.runs is not None:
            try:
                handle = self.runs.submit(str(run_id), claim_timeout)
            except BaseException:
                with self._lock:
                    self._in_hand.discard(run_id)
                raise
            add = getattr(handle, "add_done_callback", None)
            if add is not None:
                add(self._ended("run", run_id))
            else:  # no way to learn when it ends: not kept in hand
                with self._lock:
                    self._in_hand.discard(run_id)
            return True
        with self._lock:
            pool = self.local
            assert pool is not None
            self._pools[run_id] = pool
        self._start(pool, run_id, claim_timeout)
        return True

    def _start(self, pool: ProcessPoolExecutor, run_id: UUID, claim_timeout: float | None) -> None:
        try:
            future = pool.submit(execute_claimed, self.url, str(run_id), claim_timeout)
        except BrokenProcessPool:  # broken before this run got in: held, so submitted again
            self._replace(pool)
            return
        ended = self._ended("run", run_id)

        def done(finished: Future[Any]) -> None:
            if not finished.cancelled() and isinstance(finished.exception(), BrokenProcessPool):
                self._replace(pool)
                return
            with self._lock:
                if self._pools.get(run_id) is pool:
                    del self._pools[run_id]
            ended(finished)

        future.add_done_callback(done)

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        """A new pool for a broken one, and the broken one's runs submitted to it, waiting for
        their claims (the dead worker's is released with it). Each of the broken pool's futures
        calls this (from its management thread): the first does the work."""
        with self._lock:
            if self._stopping:
                return
            if self.local is broken:
                self.local = self._pool()
                log.error("a run worker process died: a new pool resumes the runs it held")
            pool = self.local
            assert pool is not None
            again = []
            for run_id in [run for run, held in self._pools.items() if held is broken]:
                if self._count_death("run", run_id):
                    self._pools[run_id] = pool
                    again.append(run_id)
                else:
                    del self._pools[run_id]
        for run_id in again:
            self._start(pool, run_id, None)

    def submit_experiment(self, experiment_id: UUID) -> bool:
        """Hand the experiment to the experiment process, unless it is in hand already (its
        task has not ended: it may wait behind another experiment, its claim free meanwhile)
        or left alone. A process that died (SIGKILL, out of memory) breaks its pool: the next
        submission gets a new one, and the experiments it held, their claims released with it,
        are orphans the server's watch resumes (orphans.py), up to MAX_WORKER_DEATHS times."""
        if not self._take(experiment_id):
            return False
        with self._lock:
            pool = self.experiments
        args = (self.url, str(experiment_id), self.workers, self.scheduler)
        try:
            try:
                future: Future[None] = pool.submit(evaluate, *args)
            except BrokenProcessPool:
                with self._lock:
                    if self.experiments is pool:
                        self.experiments = self._pool(1)
                    pool = self.experiments
                future = pool.submit(evaluate, *args)
        except BaseException:
            with self._lock:
                self._in_hand.discard(experiment_id)
            raise
        future.add_done_callback(self._ended("experiment", experiment_id))
        return True

    def shutdown(self) -> None:
        with self._lock:
            self._stopping = True
            experiments = self.experiments
        experiments.shutdown(wait=True, cancel_futures=True)
        if self.local is not None:
            self.local.shutdown(wait=True, cancel_futures=True)
        if self.runs is not None:
            self.runs.close()
