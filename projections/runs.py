"""simulation_runs: one row per run, folded from the run's events.

``progress`` is years recorded / duration (0 to 1) and ``current_year`` the last year recorded:
YearResultRecorded is decoded for its ``year`` only, and a batch's years of one run become one
UPDATE. ``completed_at`` is when the run ended, whichever way (completed, failed, cancelled);
``error_message`` is the failure or the cancel reason. ``results`` is the RunSummary as stored
in RunCompleted, and its headline numbers are columns too (habitability_score, money in cents).

Experiment linkage (experiment_id, iteration, sample_index, run_purpose) is read from RunQueued
fields of those names when the event has them; a standalone run leaves them NULL.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec

from domain.aggregate import Event
from domain.run import (
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunQueued,
    RunStarted,
    YearResultRecorded,
    next_run_status,
)
from domain.values import RunStatus
from projections.base import Batch, Fold, Projection, ProjectionDataError
from projections.decoding import Lean
from projections.tables import Column, ForeignKey, Index, Table

SIMULATION_RUNS = Table(
    name="simulation_runs",
    doc="One row per run: its inputs, status and progress, and its summary once completed.",
    columns=(
        Column("id", "uuid", doc="the run's id"),
        Column("digital_twin_id", "uuid", doc="the twin it runs on"),
        Column("source_body", "text"),
        Column("pattern", "text"),
        Column("duration_years", "int"),
        Column("parameters", "json", doc="RunParameters: budget, tech level, priority, ..."),
        Column("budget_cents", "bigint"),
        Column("seed", "bigint"),
        Column("engine_version", "text"),
        Column("status", "text", doc="queued, running, completed, failed, cancelled"),
        Column("progress", "float", doc="years recorded / duration, 0 to 1"),
        Column("current_year", "int", doc="the last year recorded (0 before the first)"),
        Column("queued_at", "timestamp"),
        Column("started_at", "timestamp", nullable=True, doc="the first RunStarted"),
        Column("completed_at", "timestamp", nullable=True, doc="when it ended, any outcome"),
        Column("updated_at", "timestamp"),
        Column("error_message", "text", nullable=True, doc="failure, or cancel reason"),
        Column("results", "json", nullable=True, doc="the RunSummary of a completed run"),
        Column("result_digest", "text", nullable=True),
        Column("habitability_score", "float", nullable=True),
        Column("total_spend_cents", "bigint", nullable=True),
        Column("total_revenue_cents", "bigint", nullable=True),
        Column("final_balance_cents", "bigint", nullable=True),
        Column("initiated_by", "text"),
        Column("experiment_id", "uuid", nullable=True),
        Column("iteration", "int", nullable=True),
        Column("sample_index", "int", nullable=True),
        Column("run_purpose", "text", nullable=True),
        Column("persistence", "text", doc="full (every year recorded) or summary (none)"),
    ),
    primary_key=("id",),
    foreign_keys=(ForeignKey("digital_twin_id", "digital_twins"),),
    indexes=(
        Index("status_idx", "status"),
        Index("twin_status_idx", "digital_twin_id, status"),
        Index("experiment_idx", "experiment_id, iteration", where="experiment_id IS NOT NULL"),
    ),
    checks=("progress >= 0 AND progress <= 1",),
)


class Queued(Lean, kw_only=True):
    twin_id: UUID
    source_body: str
    pattern: str
    duration_years: int
    parameters: msgspec.Raw
    seed: int
    engine_version: str
    initiated_by: str
    experiment_id: UUID | None = None
    iteration: int | None = None
    sample_index: int | None = None
    run_purpose: str | None = None
    persistence: str = "full"


class Budget(msgspec.Struct):
    budget_cents: int


class Started(Lean, kw_only=True):
    pass


class YearRecorded(Lean, kw_only=True):
    year: int


class Completed(Lean, kw_only=True):
    summary: msgspec.Raw
    result_digest: str


class Metrics(msgspec.Struct):
    habitability_score: float


class Headline(msgspec.Struct):
    success_metrics: Metrics
    total_spend_cents: int
    total_revenue_cents: int
    final_balance_cents: int


class Failed(Lean, kw_only=True):
    error_message: str


class Cancelled(Lean, kw_only=True):
    reason: str


_budget = msgspec.json.Decoder(Budget)
_headline = msgspec.json.Decoder(Headline)


class RunsProjection(Projection):
    name = "runs"
    version = 3  # 2: canonical JSON; statuses by domain/ folds; updated_at a max; 3: persistence
    tables = (SIMULATION_RUNS,)
    depends_on = ("twins",)
    handles = {
        RunQueued: Queued,
        RunStarted: Started,
        YearResultRecorded: YearRecorded,
        RunCompleted: Completed,
        RunFailed: Failed,
        RunCancelled: Cancelled,
    }

    def apply(self, batch: Batch) -> None:
        fold = Fold(
            batch,
            SIMULATION_RUNS,
            mutable=(
                "status",
                "progress",
                "current_year",
                "started_at",
                "completed_at",
                "updated_at",
                "error_message",
            ),
            write_once=(
                "results",
                "result_digest",
                "habitability_score",
                "total_spend_cents",
                "total_revenue_cents",
                "final_balance_cents",
            ),
            load_also=("duration_years", "persistence"),
        )
        events = batch.events
        # UUIDs compared and hashed by their int: UUID's own __eq__ and __hash__ are Python
        # functions, called for every event of a batch.
        fold.load({data.originator_id.int: data.originator_id for _, _, data in events}.values())
        changed: set[UUID] = set()
        statuses: dict[tuple[str, type[Event]], str] = {}  # next_run_status, once per batch
        row: dict[str, Any] | None = None
        run_int: int | None = None
        for _, event, data in events:
            if type(data) is YearRecorded and row is not None and data.originator_id.int == run_int:
                # The bulk of a batch: the years of the run the previous event was for.
                key = (row["status"], event)
                status = statuses.get(key)
                if status is None:
                    status = statuses[key] = str(next_run_status(RunStatus(key[0]), event))
                row["status"] = status
                row["current_year"] = year = data.year
                row["progress"] = year / row["duration_years"]
                if data.timestamp > row["updated_at"]:
                    row["updated_at"] = data.timestamp
                continue
            run_id = data.originator_id
            run_int = run_id.int
            if isinstance(data, Queued):
                row = fold.create(run_id, _queued(data))
            else:
                row = fold.get(run_id)
                if row is None:
                    raise ProjectionDataError(f"run {run_id} is not in simulation_runs")
                _apply(row, event, data)
                row["updated_at"] = max(row["updated_at"], data.timestamp)
            changed.add(run_id)
        fold.flush(changed)


def _queued(data: Queued) -> dict[str, Any]:
    return {
        "digital_twin_id": data.twin_id,
        "source_body": data.source_body,
        "pattern": data.pattern,
        "duration_years": data.duration_years,
        "parameters": data.parameters,
        "budget_cents": _budget.decode(data.parameters).budget_cents,
        "seed": data.seed,
        "engine_version": data.engine_version,
        "status": str(RunStatus.QUEUED),
        "progress": 0.0,
        "current_year": 0,
        "queued_at": data.timestamp,
        "started_at": None,
        "completed_at": None,
        "updated_at": data.timestamp,
        "error_message": None,
        "results": None,
        "result_digest": None,
        "habitability_score": None,
        "total_spend_cents": None,
        "total_revenue_cents": None,
        "final_balance_cents": None,
        "initiated_by": data.initiated_by,
        "experiment_id": data.experiment_id,
        "iteration": data.iteration,
        "sample_index": data.sample_index,
        "run_purpose": data.run_purpose,
        "persistence": data.persistence,
    }


def _apply(row: dict[str, Any], event: type[Event], data: Any) -> None:
    """One event's effect on a run's row; the status by domain/run.py's next_run_status."""
    row["status"] = str(next_run_status(RunStatus(row["status"]), event))
    if isinstance(data, YearRecorded):
        row["current_year"] = data.year
        row["progress"] = data.year / row["duration_years"]
    elif isinstance(data, Started):
        if row["started_at"] is None:
            row["started_at"] = data.timestamp
    elif isinstance(data, Completed):
        headline = _headline.decode(data.summary)
        row["completed_at"] = data.timestamp
        if row["persistence"] == "summary":  # no years recorded, and none to come: done
            row["progress"] = 1.0
        row["results"] = data.summary
        row["result_digest"] = data.result_digest
        row["habitability_score"] = headline.success_metrics.habitability_score
        row["total_spend_cents"] = headline.total_spend_cents
        row["total_revenue_cents"] = headline.total_revenue_cents
        row["final_balance_cents"] = headline.final_balance_cents
    elif isinstance(data, Failed):
        row["completed_at"] = data.timestamp
        row["error_message"] = data.error_message
    elif isinstance(data, Cancelled):
        row["completed_at"] = data.timestamp
        row["error_message"] = data.reason
    else:  # pragma: no cover - every handled type is listed above
        raise ProjectionDataError(f"no run handler for {type(data).__name__}")
