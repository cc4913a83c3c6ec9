"""Executing runs elsewhere: draining the queue, following a run executed on a cluster."""

from __future__ import annotations

import time
from collections import Counter

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from domain.run import SimulationRun
from infrastructure.application import TwinLedger
from infrastructure.cli.base import console, errors
from infrastructure.executors import RunOutcome, open_executor, runs_to_execute, store_url


def drain(
    application: TwinLedger, *, limit: int | None, scheduler: str | None, workers: int
) -> Counter[str]:
    """Execute queued runs (and resume orphaned ones) with one progress bar over all of them."""
    url = store_url(application.database)
    assert application.database is not None
    run_ids = runs_to_execute(application.database, limit)
    if not run_ids:
        console.print("no queued runs")
        return Counter()
    outcomes: Counter[str] = Counter()
    executor = open_executor(url, scheduler, workers=workers)
    try:
        with Progress(
            TextColumn("runs"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}", markup=False),
            TimeElapsedColumn(),
            console=errors,
        ) as progress:
            task = progress.add_task("", total=len(run_ids))

            def done(outcome: RunOutcome) -> None:
                outcomes[outcome.status] += 1
                summary = ", ".join(f"{n} {status}" for status, n in sorted(outcomes.items()))
                progress.update(task, advance=1, description=summary)

            executor.run_all(run_ids, done)
    finally:
        executor.close()
    _read_your_writes(application)
    console.print(", ".join(f"{n} {status}" for status, n in sorted(outcomes.items())))
    return outcomes


def execute_elsewhere(
    application: TwinLedger, run_id: str, *, scheduler: str, poll_seconds: float = 0.5
) -> SimulationRun:
    """Submit one run to the scheduler and follow its progress from the log."""
    url = store_url(application.database)
    stored = application.get_run(run_id)
    executor = open_executor(url, scheduler)
    try:
        handle = executor.submit(str(stored.id))
        with Progress(
            TextColumn(f"run {stored.id} [{stored.pattern}] on {scheduler}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("years"),
            TimeElapsedColumn(),
            console=errors,
        ) as progress:
            task = progress.add_task("run", total=stored.duration_years)
            while not handle.done():
                progress.update(task, completed=application.get_run(stored.id).years_recorded)
                time.sleep(poll_seconds)
            handle.result()  # raises what the task raised
            final = application.get_run(stored.id)
            progress.update(task, completed=final.years_recorded)
    finally:
        executor.close()
    _read_your_writes(application)
    return final


def _read_your_writes(application: TwinLedger) -> None:
    """The runs were written by other processes: catch this command's read tables up too."""
    for hook in application.after_write:
        hook()
