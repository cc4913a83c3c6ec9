"""Retention: removing old rows from the read tables, never events from the log.

Windows (the seed design's defaults, each configurable):
- simulation_results rows: 2 years after they were recorded (created_at);
- simulation_runs rows: 1 year after the run ended (completed_at: completed, failed or cancelled),
  and only once none of their results rows remain (results reference runs);
- digital_twins rows: 90 days after the twin ended (deleted_at: expired or deleted), and only
  once none of their runs rows remain (runs reference twins);
- experiments rows, with their experiment_iterations rows: 1 year after the experiment ended
  (completed_at: completed or failed; a running one stays).

A run of an experiment goes only with its experiment (the experiment's rows reference its runs):
once the experiment's row goes, its runs follow the runs rule; until then they stay, and so does
the twin's row of an experiment that stays. Their results rows go like any others.

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
DEFAULT_EXPERIMENTS = timedelta(days=365)


@dataclass(frozen=True)
class Windows:
    results: timedelta = DEFAULT_RESULTS
    runs: timedelta = DEFAULT_RUNS
    twins: timedelta = DEFAULT_TWINS
    experiments: timedelta = DEFAULT_EXPERIMENTS


@dataclass(frozen=True)
class RetentionReport:
    results: int
    runs: int
    twins: int
    dry_run: bool
    behind: str | None = None  # why the tables could not catch up first (then judged as they are)
    experiments: int = 0


_RESULTS = "FROM {r} WHERE created_at < %s"
_GONE = "{e}.completed_at IS NOT NULL AND {e}.completed_at < %s"  # an experiment past its window
_EXPERIMENTS = "FROM {e} WHERE " + _GONE
_ITERATIONS = (
    "FROM {i} WHERE EXISTS (SELECT 1 FROM {e} WHERE {e}.id = {i}.experiment_id AND " + _GONE + ")"
)


def _run_goes(going: int) -> str:
    """Runs past their window, on {s}; params: runs cut, the ids of the ``going`` experiments
    (runs of an experiment go with it only), results cut."""
    of_going = f" OR {{s}}.experiment_id IN ({', '.join(['%s'] * going)})" if going else ""
    return (
        "{s}.completed_at IS NOT NULL AND {s}.completed_at < %s "
        f"AND ({{s}}.experiment_id IS NULL{of_going}) "
        "AND NOT EXISTS (SELECT 1 FROM {r} WHERE {r}.run_id = {s}.id AND {r}.created_at >= %s)"
    )


def _twins(going: int) -> str:
    """Twins past their window with no experiment that stays and no run that stays; params:
    twins cut, experiments cut, then ``_run_goes``'s."""
    return (
        "FROM {t} WHERE deleted_at IS NOT NULL AND deleted_at < %s "
        "AND NOT EXISTS (SELECT 1 FROM {e} WHERE {e}.digital_twin_id = {t}.id AND NOT ("
        + _GONE
        + ")) AND NOT EXISTS (SELECT 1 FROM {s} WHERE {s}.digital_twin_id = {t}.id "
        "AND NOT (" + _run_goes(going) + "))"
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
    experiments_cut = store.timestamp(now - windows.experiments)
    tables = {
        "r": "simulation_results",
        "s": "simulation_runs",
        "t": "digital_twins",
        "e": "experiments",
        "i": "experiment_iterations",
    }
    counts: list[int] = []
    with store.transaction() as cursor:
        cursor.execute(store.sql("SELECT id " + _EXPERIMENTS, **tables), [experiments_cut])
        going = [row[0] for row in cursor.fetchall()]  # experiments are few
        run_goes = [runs_cut, *going, results_cut]
        steps = [  # deleted children first: results, iterations, experiments, runs, twins
            (_RESULTS, [results_cut]),
            (_ITERATIONS, [experiments_cut]),
            (_EXPERIMENTS, [experiments_cut]),
            ("FROM {s} WHERE " + _run_goes(len(going)), run_goes),
            (_twins(len(going)), [twins_cut, experiments_cut, *run_goes]),
        ]
        for clause, params in steps:
            # Counted before any delete, so a dry run and a real one report the same numbers.
            cursor.execute(store.sql("SELECT count(*) " + clause, **tables), params)
            counts.append(int(cursor.fetchone()[0]))
        if not dry_run:
            for clause, params in steps:
                cursor.execute(store.sql("DELETE " + clause, **tables), params)
    return RetentionReport(
        results=counts[0],
        runs=counts[3],
        twins=counts[4],
        dry_run=dry_run,
        behind=behind,
        experiments=counts[2],
    )
