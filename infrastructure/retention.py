"""Retention: removing old rows from the read tables, never events from the log.

Windows (the seed design's defaults, each configurable):
- simulation_results rows: 2 years after they were recorded (created_at);
- simulation_runs rows: 1 year after the run ended (completed_at: completed, failed or cancelled),
  and only once none of their results rows remain (results reference runs);
- digital_twins rows: 90 days after the twin ended (deleted_at: expired or deleted), and only
  once none of their runs rows remain (runs reference twins).

Experiments have no window: their rows (experiments, experiment_iterations) are few and stay,
and so do the rows they reference: the runs rows of an experiment's runs (experiment_id set)
and the twins rows of experiments. Their results rows go like any others.

The event log is the audit trail and keeps everything. A rebuild of the projections restores
removed rows from it (so retention is applied again after a rebuild); only events archived and
removed from the log (`twinledger archive`, then a store without them) stay gone.

An event a projection cannot apply (an unreadable stream) does not stop retention: the tables
are judged as far as they caught up (a row that lags can only look younger or still live, so
fewer rows go, never a wrong one) and the report says why they are behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from projections.runner import ProjectionsStopped, Projector

DEFAULT_RESULTS = timedelta(days=730)
DEFAULT_RUNS = timedelta(days=365)
DEFAULT_TWINS = timedelta(days=90)


@dataclass(frozen=True)
class Windows:
    results: timedelta = DEFAULT_RESULTS
    runs: timedelta = DEFAULT_RUNS
    twins: timedelta = DEFAULT_TWINS


@dataclass(frozen=True)
class RetentionReport:
    results: int
    runs: int
    twins: int
    dry_run: bool
    behind: str | None = None  # why the tables could not catch up first (then judged as they are)


_RESULTS = "FROM {r} WHERE created_at < %s"
_RUNS = (
    "FROM {s} WHERE completed_at IS NOT NULL AND completed_at < %s AND experiment_id IS NULL "
    "AND NOT EXISTS (SELECT 1 FROM {r} WHERE {r}.run_id = {s}.id AND {r}.created_at >= %s)"
)
_TWINS = (
    "FROM {t} WHERE deleted_at IS NOT NULL AND deleted_at < %s "
    "AND NOT EXISTS (SELECT 1 FROM {e} WHERE {e}.digital_twin_id = {t}.id) "
    "AND NOT EXISTS (SELECT 1 FROM {s} WHERE {s}.digital_twin_id = {t}.id "
    "AND NOT ({s}.completed_at IS NOT NULL AND {s}.completed_at < %s "
    "AND {s}.experiment_id IS NULL "
    "AND NOT EXISTS (SELECT 1 FROM {r} WHERE {r}.run_id = {s}.id AND {r}.created_at >= %s)))"
)


def apply_retention(
    projector: Projector, now: datetime, windows: Windows = Windows(), *, dry_run: bool = False
) -> RetentionReport:
    """Remove (or with ``dry_run`` only count) rows past their windows, in one transaction.

    The tables are caught up first, so rows the log already ended are judged as ended."""
    behind: str | None = None
    try:
        projector.catch_up()
    except ProjectionsStopped as stopped:
        behind = str(stopped)
    store = projector.store
    results_cut = store.timestamp(now - windows.results)
    runs_cut = store.timestamp(now - windows.runs)
    twins_cut = store.timestamp(now - windows.twins)
    tables = {
        "r": "simulation_results",
        "s": "simulation_runs",
        "t": "digital_twins",
        "e": "experiments",
    }
    steps = [
        (_RESULTS, [results_cut]),
        (_RUNS, [runs_cut, results_cut]),
        (_TWINS, [twins_cut, runs_cut, results_cut]),
    ]
    counts: list[int] = []
    with store.transaction() as cursor:
        for clause, params in steps:
            # Counted before any delete, so a dry run and a real one report the same numbers.
            cursor.execute(store.sql("SELECT count(*) " + clause, **tables), params)
            counts.append(int(cursor.fetchone()[0]))
        if not dry_run:
            for clause, params in steps:  # children first: results, runs, twins
                cursor.execute(store.sql("DELETE " + clause, **tables), params)
    return RetentionReport(
        results=counts[0], runs=counts[1], twins=counts[2], dry_run=dry_run, behind=behind
    )
