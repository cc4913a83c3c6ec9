"""What the service layer (infrastructure/service.py) returns: typed, serialisable records.

The CLI prints them, the HTTP API sends them as JSON (and describes them in its OpenAPI schema),
Python callers read their attributes. Rows of the read tables keep the plain form of
projections/queries.py: ids and timestamps as strings (ISO 8601, UTC, microseconds), so they
print the same from SQLite and PostgreSQL. Money is always integer GCC cents (``*_cents``).
Columns a projection adds later pass through (``extra="allow"``) until a field names them.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

Item = TypeVar("Item", bound=BaseModel)


class View(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Body(View):
    """A built-in reference body a twin can be cloned from (docs/catalog.md)."""

    key: str
    name: str
    description: str
    solar_system: str
    simulation_type: str
    mean_temperature_k: float
    surface_pressure_kpa: float
    surface_gravity_m_s2: float
    state: dict[str, Any]


class Twin(View):
    """A digital_twins row (docs/queries.md)."""

    id: str
    name: str
    description: str
    source_body: str
    solar_system: str
    created_by: str
    simulation_type: str
    status: str
    state: Any
    simulation_parameters: Any
    created_at: str
    updated_at: str
    expires_at: str
    deleted_at: str | None
    ended_reason: str | None
    run_count: int
    active_run_count: int
    completed_run_count: int
    failed_run_count: int
    last_run_outcome: str | None
    active_run_ids: Any


class Run(View):
    """A simulation_runs row: inputs, status, progress, and the summary once completed."""

    id: str
    digital_twin_id: str
    source_body: str
    pattern: str
    duration_years: int
    parameters: Any
    budget_cents: int
    seed: int
    engine_version: str
    status: str
    progress: float
    current_year: int
    queued_at: str
    started_at: str | None
    completed_at: str | None
    updated_at: str
    error_message: str | None
    results: Any | None
    result_digest: str | None
    habitability_score: float | None
    total_spend_cents: int | None
    total_revenue_cents: int | None
    final_balance_cents: int | None
    initiated_by: str
    experiment_id: str | None
    iteration: int | None
    sample_index: int | None
    run_purpose: str | None
    persistence: str = "full"  # or summary: no year recorded (docs/experiments.md)


class Result(View):
    """A simulation_results row: one run, one year, one result type."""

    run_id: str
    year: int
    result_type: str
    data: Any
    created_at: str


class Experiment(View):
    """An experiments row."""

    id: str
    digital_twin_id: str
    name: str
    pattern: str
    duration_years: int
    master_seed: int
    samples: int
    max_iterations: int
    objective: str
    spec: Any
    engine_version: str
    started_by: str
    status: str
    reason: str | None
    iterations: int
    best_iteration: int | None
    best_objective_value: float | None
    best_cost_cents: int | None
    best_parameters: Any | None
    final_run_id: str | None
    strategy: str = "hill_climb"
    optuna_version: str | None = None
    pareto_front: list[int] | None = None  # objective pareto: the front's iterations
    started_at: str
    completed_at: str | None
    updated_at: str


class Iteration(View):
    """An experiment_iterations row: one candidate, accepted or rejected."""

    experiment_id: str
    iteration: int
    purpose: str
    parameters: Any
    objective_value: float | None
    cost_cents: int
    feasible: int
    accepted: int
    cut: int = 0  # 1: cut short by early stopping at cut_at_year
    cut_at_year: int | None = None
    evaluation_run_id: str
    sample_run_ids: Any
    recorded_at: str


class ExperimentDetail(BaseModel):
    """An experiment with every iteration, in order."""

    experiment: Experiment
    iterations: list[Iteration]


class Page(BaseModel, Generic[Item]):
    """One page of a keyset-paginated list: pass ``next_cursor`` back for the next page
    (None on the last page). Rows written meanwhile are neither skipped nor repeated."""

    items: list[Item]
    next_cursor: str | None


class StoredEvent(BaseModel):
    """One stored event of a stream, for audit: as recorded, decoded from its stored JSON."""

    originator_id: str
    originator_version: int
    topic: str
    state: dict[str, Any]


class Divergence(BaseModel):
    year: int | None
    field: str
    recorded: str
    replayed: str


class ReplayVerdict(BaseModel):
    """A run re-simulated from its RunQueued and compared year by year (docs/simulation.md)."""

    run_id: str
    identical: bool
    years: int
    complete: bool
    digest: str
    recorded_digest: str | None
    divergence: Divergence | None
    failure: str | None = None  # a run that failed in the engine: the failure, replayed
    parent_note: str | None = None  # a fork: how its prefix was checked against its parent


class ForkPoint(BaseModel):
    """Where a fork left its parent: years 1..at_year are the parent's, ``changes`` apply
    from the start of year at_year + 1 (docs/simulation.md, Forks)."""

    parent_run_id: str
    at_year: int
    changes: dict[str, Any]
    described: str


class Fork(BaseModel):
    """A fork made from a run."""

    run_id: str
    at_year: int


class Provenance(BaseModel):
    """Where and with what a run was queued (not an input of the simulation)."""

    engine_version: str
    python: str
    packages: dict[str, str]
    git_commit: str | None
    host: str


class RunLineage(BaseModel):
    """A run's what-if inputs and family, from its RunQueued: scheduled interventions, the
    fork points of its lineage (oldest first; the last made this run), the forks made from it,
    and its provenance (None for runs recorded before provenance existed)."""

    run_id: str
    interventions: list[str]
    lineage: list[ForkPoint]
    forks: list[Fork]
    provenance: Provenance | None


class RunDetail(Run):
    """One run as ``show-run --format json`` prints it: its simulation_runs row, the fork point
    that made it (parent, fork year, changes; None for a run that is not a fork) and its whole
    lineage as ``GET /runs/{id}/lineage`` gives it (older fork points, the forks made from it)."""

    forked_from: ForkPoint | None
    lineage: RunLineage


class RunState(BaseModel):
    """A run as it stood at the end of ``year``, folded from its recorded events only."""

    run_id: str
    year: int
    economic: dict[str, Any]
    environment: dict[str, Any]
    total_spend_cents: int
    total_revenue_cents: int
    key_events: list[dict[str, Any]]


class ExperimentVerdict(BaseModel):
    """An experiment re-run from ExperimentStarted alone and compared with its record."""

    experiment_id: str
    identical: bool
    iterations: int
    runs_checked: int
    differences: list[str]


class ProjectionState(BaseModel):
    name: str
    tables: list[str]
    position: int
    head: int
    lag: int
    current_schema: bool
    error: str | None
    error_position: int | None
    blocked_by: list[str]
    parked: int = 0  # events it could not apply, waiting for a retry or a skip
    skipped: int = 0  # parked events skipped deliberately


class ParkedEvent(BaseModel):
    """An event a projection could not apply and set aside (docs/projections.md)."""

    projection: str
    position: int
    originator_id: str
    originator_version: int
    topic: str
    error_class: str
    error_message: str
    parked_at: str
    skipped_at: str | None
    skipped_by: str | None
    skip_reason: str | None


class ProjectionsReport(BaseModel):
    """Where each projection stands against the head of the log, and its parked events."""

    head: int
    projections: list[ProjectionState]
    parked: list[ParkedEvent]
