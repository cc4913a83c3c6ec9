"""experiments and experiment_iterations: parameter searches (domain/experiment.py) as tables.

- ``experiments``: one row per experiment, folded from its events. ExperimentStarted creates it
  (the spec's headline fields as columns, the whole spec as JSON); each IterationEvaluated
  counts an iteration and, when accepted, makes it the best (``best_*``, as the aggregate does);
  ExperimentCompleted / ExperimentFailed end it (``reason``: converged, max_iterations, or the
  error) and name the final run.
  Under objective pareto there is no single best: ``pareto_front`` holds the front's
  iterations after the latest IterationEvaluated.
- ``experiment_iterations``: one row per IterationEvaluated, written once: the candidate's
  parameters (as the event holds them), objective value, mean cost in cents, feasible,
  accepted and cut (1 or 0, the same on both back ends), and its runs: ``evaluation_run_id`` is the
  first sample's run (the link to simulation_runs), ``sample_run_ids`` all of them in sample
  order.

The foreign keys point at digital_twins and simulation_runs: an experiment's runs are queued
(RunQueued) before the IterationEvaluated or ExperimentCompleted that names them, and this
projection never goes past the runs projection (``depends_on``), so the rows are there.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec

from domain.experiment import (
    ExperimentCompleted,
    ExperimentFailed,
    ExperimentStarted,
    IterationEvaluated,
)
from projections.base import Batch, Fold, Projection, ProjectionDataError
from projections.decoding import Lean
from projections.tables import Column, ForeignKey, Index, Table

EXPERIMENTS = Table(
    name="experiments",
    doc="One row per experiment: its spec, status, iteration count and best candidate.",
    columns=(
        Column("id", "uuid", doc="the experiment's id"),
        Column("digital_twin_id", "uuid", doc="the twin its runs run on"),
        Column("name", "text"),
        Column("pattern", "text"),
        Column("duration_years", "int"),
        Column("master_seed", "bigint"),
        Column("samples", "int", doc="sample runs per candidate"),
        Column("max_iterations", "int"),
        Column("objective", "text", doc="maximize_habitability or minimize_cost_to_event"),
        Column("spec", "json", doc="the whole ExperimentSpec, as ExperimentStarted holds it"),
        Column("engine_version", "text"),
        Column("strategy", "text", doc="hill_climb, random, latin_hypercube or tpe"),
        Column("optuna_version", "text", nullable=True, doc="recorded for tpe only"),
        Column("started_by", "text"),
        Column("status", "text", doc="running, completed, failed"),
        Column("reason", "text", nullable=True, doc="converged, max_iterations, or the error"),
        Column("iterations", "int", doc="iterations recorded"),
        Column("best_iteration", "int", nullable=True),
        Column("best_objective_value", "float", nullable=True),
        Column("best_cost_cents", "bigint", nullable=True),
        Column("best_parameters", "json", nullable=True),
        Column("final_run_id", "uuid", nullable=True, doc="the best candidate's final run"),
        Column(
            "pareto_front",
            "json",
            nullable=True,
            doc="objective pareto: the front's iterations, as the last IterationEvaluated holds it",
        ),
        Column("started_at", "timestamp", doc="ExperimentStarted's timestamp"),
        Column("completed_at", "timestamp", nullable=True, doc="when it completed or failed"),
        Column("updated_at", "timestamp"),
    ),
    primary_key=("id",),
    foreign_keys=(
        ForeignKey("digital_twin_id", "digital_twins"),
        ForeignKey("final_run_id", "simulation_runs"),
    ),
    indexes=(
        Index("status_idx", "status"),
        Index("twin_idx", "digital_twin_id"),
    ),
    checks=("status IN ('running', 'completed', 'failed')", "iterations >= 0"),
)

EXPERIMENT_ITERATIONS = Table(
    name="experiment_iterations",
    doc="One row per iteration of an experiment, accepted or rejected, with its runs.",
    columns=(
        Column("experiment_id", "uuid", doc="experiments.id"),
        Column("iteration", "int", doc="from 0"),
        Column("purpose", "text", doc="initial (iteration 0) or evaluation"),
        Column("parameters", "json", doc="the candidate's full run parameters"),
        Column("objective_value", "float", nullable=True),
        Column("cost_cents", "bigint", doc="mean total spend of the samples"),
        Column("feasible", "int", doc="1 or 0"),
        Column("accepted", "int", doc="1 or 0"),
        Column("cut", "int", doc="1 if cut short by early stopping, else 0"),
        Column("cut_at_year", "int", nullable=True, doc="the year it was cut at"),
        Column("evaluation_run_id", "uuid", doc="the first sample's run"),
        Column("sample_run_ids", "json", doc="every sample's run id, in sample order"),
        Column("recorded_at", "timestamp", doc="IterationEvaluated's timestamp"),
    ),
    primary_key=("experiment_id", "iteration"),
    foreign_keys=(
        ForeignKey("experiment_id", "experiments"),
        ForeignKey("evaluation_run_id", "simulation_runs"),
    ),
    checks=("feasible IN (0, 1) AND accepted IN (0, 1) AND cut IN (0, 1)", "iteration >= 0"),
)
ITERATION_COLUMNS = EXPERIMENT_ITERATIONS.column_names
ITERATION_KINDS = tuple(column.kind for column in EXPERIMENT_ITERATIONS.columns)


class Spec(msgspec.Struct):
    """The spec fields that are columns; the spec itself is copied whole (``spec``)."""

    name: str
    pattern: str
    duration_years: int
    master_seed: int
    samples: int
    max_iterations: int
    objective: str
    strategy: str = "hill_climb"


class Started(Lean, kw_only=True):
    twin_id: UUID
    spec: msgspec.Raw
    engine_version: str
    started_by: str
    optuna_version: str | None = None


class Sample(msgspec.Struct):
    run_id: UUID


class Evaluated(Lean, kw_only=True):
    iteration: int
    purpose: str
    parameters: msgspec.Raw
    samples: list[Sample]
    objective_value: float | None
    cost_cents: int
    feasible: bool
    accepted: bool
    cut: bool = False
    cut_at_year: int | None = None
    pareto_front: list[int] | None = None


class Completed(Lean, kw_only=True):
    reason: str
    final_run: Sample | None


class Failed(Lean, kw_only=True):
    error_message: str


_spec = msgspec.json.Decoder(Spec)


class ExperimentsProjection(Projection):
    name = "experiments"
    version = 3  # 2: canonical JSON; statuses by domain/ folds; updated_at a max; 3: issue 14
    tables = (EXPERIMENTS, EXPERIMENT_ITERATIONS)
    depends_on = ("twins", "runs")
    handles = {
        ExperimentStarted: Started,
        IterationEvaluated: Evaluated,
        ExperimentCompleted: Completed,
        ExperimentFailed: Failed,
    }

    def apply(self, batch: Batch) -> None:
        fold = Fold(
            batch,
            EXPERIMENTS,
            mutable=(
                "status",
                "reason",
                "iterations",
                "best_iteration",
                "best_objective_value",
                "best_cost_cents",
                "best_parameters",
                "final_run_id",
                "pareto_front",
                "completed_at",
                "updated_at",
            ),
        )
        fold.load(data.originator_id for _, _, data in batch.events)
        changed: set[UUID] = set()
        iterations: list[tuple[Any, ...]] = []
        store = batch.store
        for _, _, data in batch.events:
            experiment_id = data.originator_id
            if isinstance(data, Started):
                fold.create(experiment_id, _started(data))
            else:
                row = fold.get(experiment_id)
                if row is None:
                    raise ProjectionDataError(f"experiment {experiment_id} is not in experiments")
                if isinstance(data, Evaluated):
                    iterations.append(
                        tuple(
                            store.to_db(kind, value)
                            for kind, value in zip(ITERATION_KINDS, _iteration(data), strict=True)
                        )
                    )
                _apply(row, data)
                row["updated_at"] = max(row["updated_at"], data.timestamp)
            changed.add(experiment_id)
        fold.flush(changed)  # first: the iteration rows reference their experiment's row
        if iterations:
            store.bulk_insert(
                batch.cursor,
                batch.table(EXPERIMENT_ITERATIONS.name),
                ITERATION_COLUMNS,
                iterations,
                ITERATION_KINDS if store.postgres else None,
            )


def _started(data: Started) -> dict[str, Any]:
    spec = _spec.decode(data.spec)
    return {
        "digital_twin_id": data.twin_id,
        "name": spec.name,
        "pattern": spec.pattern,
        "duration_years": spec.duration_years,
        "master_seed": spec.master_seed,
        "samples": spec.samples,
        "max_iterations": spec.max_iterations,
        "objective": spec.objective,
        "spec": data.spec,
        "engine_version": data.engine_version,
        "strategy": spec.strategy,
        "optuna_version": data.optuna_version,
        "started_by": data.started_by,
        "status": "running",
        "reason": None,
        "iterations": 0,
        "best_iteration": None,
        "best_objective_value": None,
        "best_cost_cents": None,
        "best_parameters": None,
        "final_run_id": None,
        "pareto_front": None,
        "started_at": data.timestamp,
        "completed_at": None,
        "updated_at": data.timestamp,
    }


def _iteration(data: Evaluated) -> tuple[Any, ...]:
    """An experiment_iterations row, in column order."""
    if not data.samples:
        raise ProjectionDataError(f"iteration {data.iteration} has no sample runs")
    return (
        data.originator_id,
        data.iteration,
        data.purpose,
        data.parameters,
        data.objective_value,
        data.cost_cents,
        int(data.feasible),
        int(data.accepted),
        int(data.cut),
        data.cut_at_year,
        data.samples[0].run_id,
        [sample.run_id for sample in data.samples],
        data.timestamp,
    )


def _apply(row: dict[str, Any], data: Any) -> None:
    """One event's effect on an experiment's row; mirrors the events' ``apply``."""
    if isinstance(data, Evaluated):
        row["iterations"] += 1
        if data.pareto_front is not None:
            row["pareto_front"] = data.pareto_front
        elif data.accepted:
            row["best_iteration"] = data.iteration
            row["best_objective_value"] = data.objective_value
            row["best_cost_cents"] = data.cost_cents
            row["best_parameters"] = data.parameters
    elif isinstance(data, Completed):
        row["status"] = "completed"
        row["reason"] = data.reason
        row["final_run_id"] = None if data.final_run is None else data.final_run.run_id
        row["completed_at"] = data.timestamp
    elif isinstance(data, Failed):
        row["status"] = "failed"
        row["reason"] = data.error_message
        row["completed_at"] = data.timestamp
    else:  # pragma: no cover - every handled type is listed above
        raise ProjectionDataError(f"no experiment handler for {type(data).__name__}")
