"""The Experiment aggregate: a deterministic parameter search over runs of one twin.

An experiment proposes candidates (run parameters), evaluates each on K sample runs, and
records every iteration, accepted, rejected or cut short (IterationEvaluated). Candidates come
from a strategy (domain/strategies.py: hill climbing, random, Latin hypercube; tpe in
infrastructure/tpe.py); this module judges them: a single objective (the best is the last
accepted candidate) or two (objective pareto: the Pareto front of the candidates evaluated),
and early stopping (a candidate clearly worse than the best by a given year is cut there).
Every decision is a pure function of the spec, the master seed and the run results, so an
experiment can be replayed, and resumed after a crash, and checked (docs/experiments.md).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from enum import StrEnum
from uuid import UUID, uuid5

import msgspec

from domain.aggregate import Aggregate, Created, Event
from domain.errors import InvalidTransition
from domain.run import Persistence
from domain.values import BodyState, Pattern, Priority, RunParameters, RunSummary, YearResult

ParameterValue = int | float | str


class RunPurpose(StrEnum):
    INITIAL = "initial"
    EVALUATION = "evaluation"
    FINAL = "final"


class Objective(StrEnum):
    MAXIMIZE_HABITABILITY = "maximize_habitability"
    MINIMIZE_COST_TO_EVENT = "minimize_cost_to_event"
    PARETO = "pareto"  # two objectives: mean habitability up, mean total spend down


class Strategy(StrEnum):
    """How candidates are proposed (domain/strategies.py; tpe: infrastructure/tpe.py)."""

    HILL_CLIMB = "hill_climb"
    RANDOM = "random"
    LATIN_HYPERCUBE = "latin_hypercube"
    TPE = "tpe"


class SearchSpace(msgspec.Struct, frozen=True, kw_only=True):
    """The values each searched parameter may take, in order. Money in integer cents."""

    budget_cents: list[int] = msgspec.field(default_factory=list)
    tech_level: list[int] = msgspec.field(default_factory=list)
    priority: list[Priority] = msgspec.field(default_factory=list)
    pattern_params: dict[str, list[float]] = msgspec.field(default_factory=dict)

    def dimensions(self) -> list[tuple[str, list[ParameterValue]]]:
        """Searched dimensions in a defined order: run parameters, then pattern params by name."""
        dims: list[tuple[str, list[ParameterValue]]] = []
        if self.budget_cents:
            dims.append(("budget_cents", list(self.budget_cents)))
        if self.priority:
            dims.append(("priority", [str(value) for value in self.priority]))
        if self.tech_level:
            dims.append(("tech_level", list(self.tech_level)))
        for name in sorted(self.pattern_params):
            dims.append((f"pattern_params.{name}", list(self.pattern_params[name])))
        return dims


class ExperimentSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What the user asked for; recorded whole in ExperimentStarted."""

    name: str
    pattern: Pattern
    duration_years: int
    master_seed: int
    samples: int
    max_iterations: int
    objective: Objective
    space: SearchSpace
    base_budget_cents: int
    base_tech_level: int = 5
    base_priority: Priority = Priority.NORMAL
    base_pattern_params: dict[str, float] = msgspec.field(default_factory=dict)
    max_cost_cents: int | None = None
    target_event: str | None = None
    min_improvement: float = 0.0
    strategy: Strategy = Strategy.HILL_CLIMB
    early_stop_at_year: int | None = None  # cut a candidate clearly worse than the best by then
    early_stop_margin: float | int = 0  # integer cents for minimize_cost_to_event
    persistence: Persistence = Persistence.FULL


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """One point of the search: an index into each dimension's values."""

    indexes: list[int]


class SampleOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What the search needs from one sample run."""

    run_id: UUID
    seed: int
    result_digest: str
    habitability_score: float
    total_spend_cents: int
    cost_to_event_cents: int | None


class ExperimentStarted(Created, frozen=True, kw_only=True):
    """An experiment began on a twin; carries the whole spec and the engine version."""

    twin_id: UUID
    twin_state: BodyState
    spec: ExperimentSpec
    engine_version: str
    started_by: str
    optuna_version: str | None = None  # the tpe strategy's candidates depend on it

    def apply(self, experiment: Experiment) -> None:
        experiment.twin_id = self.twin_id
        experiment.twin_state = self.twin_state
        experiment.spec = self.spec
        experiment.engine_version = self.engine_version
        experiment.started_by = self.started_by
        experiment.optuna_version = self.optuna_version


class IterationEvaluated(Event, frozen=True, kw_only=True):
    """One candidate evaluated on its sample runs; accepted or rejected, always recorded."""

    iteration: int
    purpose: RunPurpose
    parameters: dict[str, ParameterValue]
    indexes: list[int]
    samples: list[SampleOutcome]
    objective_value: float | int | None  # minimize_cost_to_event: integer cents
    cost_cents: int
    feasible: bool
    accepted: bool
    cut: bool = False  # early stopping: simulated only to cut_at_year, clearly worse
    cut_at_year: int | None = None
    early_value: float | int | None = None  # the candidate's objective measure at that year
    pareto_front: list[int] | None = None  # objective pareto: the front's iterations after this

    def apply(self, experiment: Experiment) -> None:
        experiment.iterations.append(self)
        if self.pareto_front is not None:
            experiment.pareto_front = list(self.pareto_front)
        elif self.accepted:
            experiment.best_iteration = self.iteration


class ExperimentCompleted(Event, frozen=True, kw_only=True):
    """The search ended; names the best iteration and the final run of its candidate."""

    reason: str
    best_iteration: int | None
    final_run: SampleOutcome | None

    def apply(self, experiment: Experiment) -> None:
        experiment.status = "completed"
        experiment.reason = self.reason
        experiment.final_run = self.final_run


class ExperimentFailed(Event, frozen=True, kw_only=True):
    """The experiment stopped on an error; its recorded iterations stay."""

    error_message: str

    def apply(self, experiment: Experiment) -> None:
        experiment.status = "failed"
        experiment.reason = self.error_message


class Experiment(Aggregate):
    def __init__(self) -> None:
        self.status = "running"
        self.iterations: list[IterationEvaluated] = []
        self.best_iteration: int | None = None
        self.reason = ""
        self.final_run: SampleOutcome | None = None
        self.pareto_front: list[int] | None = None

    twin_id: UUID
    twin_state: BodyState
    spec: ExperimentSpec
    engine_version: str
    started_by: str
    optuna_version: str | None

    @classmethod
    def start(
        cls,
        *,
        twin_id: UUID,
        twin_state: BodyState,
        spec: ExperimentSpec,
        engine_version: str,
        started_by: str,
        optuna_version: str | None = None,
    ) -> Experiment:
        return cls._create(
            ExperimentStarted,
            twin_id=twin_id,
            twin_state=twin_state,
            spec=spec,
            engine_version=engine_version,
            started_by=started_by,
            optuna_version=optuna_version,
        )

    @property
    def best(self) -> IterationEvaluated | None:
        return None if self.best_iteration is None else self.iterations[self.best_iteration]

    def record(self, evaluation: Evaluation) -> None:
        if self.status != "running":
            raise InvalidTransition(f"experiment_id: experiment {self.id} is {self.status}")
        if evaluation.iteration != len(self.iterations):
            raise InvalidTransition(
                f"iteration: expected {len(self.iterations)}, got {evaluation.iteration}"
            )
        self.trigger_event(
            IterationEvaluated,
            iteration=evaluation.iteration,
            purpose=evaluation.purpose,
            parameters=evaluation.parameters,
            indexes=evaluation.indexes,
            samples=evaluation.samples,
            objective_value=evaluation.objective_value,
            cost_cents=evaluation.cost_cents,
            feasible=evaluation.feasible,
            accepted=evaluation.accepted,
            cut=evaluation.cut,
            cut_at_year=evaluation.cut_at_year,
            early_value=evaluation.early_value,
            pareto_front=evaluation.pareto_front,
        )

    def complete(self, reason: str, final_run: SampleOutcome | None) -> None:
        if self.status != "running":
            raise InvalidTransition(f"experiment_id: experiment {self.id} is {self.status}")
        self.trigger_event(
            ExperimentCompleted,
            reason=reason,
            best_iteration=self.best_iteration,
            final_run=final_run,
        )

    def fail(self, error_message: str) -> None:
        if self.status == "running":
            self.trigger_event(ExperimentFailed, error_message=error_message)


# --- the search (pure) -------------------------------------------------------------------------


class Evaluation(msgspec.Struct, frozen=True, kw_only=True):
    """An iteration's candidate, its sample outcomes and the decision taken."""

    iteration: int
    purpose: RunPurpose
    parameters: dict[str, ParameterValue]
    indexes: list[int]
    samples: list[SampleOutcome]
    objective_value: float | int | None  # minimize_cost_to_event: integer cents
    cost_cents: int
    feasible: bool
    accepted: bool
    cut: bool = False
    cut_at_year: int | None = None
    early_value: float | int | None = None
    pareto_front: list[int] | None = None


Judged = IterationEvaluated | Evaluation
"""An iteration as the search sees it: recorded (IterationEvaluated) or just decided."""


def sample_seed(master_seed: int, sample: int) -> int:
    """The seed of sample ``sample``: SHA-256 of "MASTER:sample:K", first 8 bytes, top bit cleared.

    Every candidate is evaluated on the same K seeds (common random numbers), so candidates are
    compared under the same draws of chance and differences come from their parameters.
    """
    digest = hashlib.sha256(f"{master_seed}:sample:{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def final_seed(master_seed: int) -> int:
    """The seed of the final run of the best candidate: SHA-256 of "MASTER:final"."""
    digest = hashlib.sha256(f"{master_seed}:final".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def initial_indexes(spec: ExperimentSpec) -> list[int]:
    """Start from the first value of every dimension."""
    return [0 for _ in spec.space.dimensions()]


def parameters_of(spec: ExperimentSpec, indexes: list[int]) -> dict[str, ParameterValue]:
    """The full run parameters of a candidate: the base, overridden by the searched values."""
    params: dict[str, ParameterValue] = {
        "budget_cents": spec.base_budget_cents,
        "tech_level": spec.base_tech_level,
        "priority": str(spec.base_priority),
    }
    for name in sorted(spec.base_pattern_params):
        params[f"pattern_params.{name}"] = spec.base_pattern_params[name]
    for (name, values), index in zip(spec.space.dimensions(), indexes, strict=True):
        params[name] = values[index]
    return params


def run_parameters(params: dict[str, ParameterValue]) -> RunParameters:
    """The RunParameters of a candidate's full parameter dict."""
    return RunParameters(
        budget_cents=int(params["budget_cents"]),
        tech_level=int(params["tech_level"]),
        priority=Priority(str(params["priority"])),
        pattern_params={
            name.removeprefix("pattern_params."): float(value)
            for name, value in sorted(params.items())
            if name.startswith("pattern_params.")
        },
    )


def neighbours(spec: ExperimentSpec, indexes: list[int]) -> list[list[int]]:
    """Candidates one step away, dimensions in order, +1 before -1."""
    found = []
    for dim, (_, values) in enumerate(spec.space.dimensions()):
        for step in (1, -1):
            moved = indexes[dim] + step
            if 0 <= moved < len(values):
                candidate = list(indexes)
                candidate[dim] = moved
                found.append(candidate)
    return found


def cost_to_event(results: list[YearResult], event_name: str) -> int | None:
    """Spend (cents) from year 1 through the year ``event_name`` first happened, or None."""
    spent = 0
    for result in results:
        spent += result.economic.spend_cents
        if any(event.name == event_name for event in result.key_events):
            return spent
    return None


def outcome(
    run_id: UUID,
    seed: int,
    digest: str,
    summary: RunSummary,
    results: list[YearResult],
    spec: ExperimentSpec,
) -> SampleOutcome:
    return SampleOutcome(
        run_id=run_id,
        seed=seed,
        result_digest=digest,
        habitability_score=summary.success_metrics.habitability_score,
        total_spend_cents=summary.total_spend_cents,
        cost_to_event_cents=None
        if spec.target_event is None
        else cost_to_event(results, spec.target_event),
    )


def best_of(history: Sequence[Judged]) -> Judged | None:
    """The best candidate so far: the last accepted (single objective; None under pareto)."""
    for it in reversed(history):
        if it.accepted and it.pareto_front is None:
            return it
    return None


def judge(
    spec: ExperimentSpec,
    iteration: int,
    indexes: list[int],
    samples: list[SampleOutcome],
    history: Sequence[Judged],
    *,
    early_value: float | int | None = None,
) -> Evaluation:
    """Score a candidate on its samples and decide whether it becomes the best.

    Under objective pareto, ``objective_value`` is the mean habitability, ``accepted`` means
    the candidate joined the Pareto front, and ``pareto_front`` is the front after it.
    """
    count = len(samples)
    cost = sum(sample.total_spend_cents for sample in samples) // count  # integer cents
    feasible = spec.max_cost_cents is None or cost <= spec.max_cost_cents
    value: float | int | None
    if spec.objective != Objective.MINIMIZE_COST_TO_EVENT:
        # math.fsum: correctly rounded, so the same on every Python version and in any order
        # (the built-in sum of floats changed in 3.12, and with it accept/reject decisions).
        value = math.fsum(sample.habitability_score for sample in samples) / count
    else:
        costs = [sample.cost_to_event_cents for sample in samples]
        if any(c is None for c in costs):
            value, feasible = None, False
        else:
            value = sum(c for c in costs if c is not None) // count  # integer cents
    front: list[int] | None = None
    if spec.objective == Objective.PARETO:
        points = [(it.iteration, it.objective_value, it.cost_cents) for it in history if _on(it)]
        if feasible and value is not None:
            points.append((iteration, value, cost))
        front = pareto_front(points)
        accepted = iteration in front
    else:
        accepted = feasible and value is not None and _improves(spec, value, best_of(history))
    return Evaluation(
        iteration=iteration,
        purpose=RunPurpose.INITIAL if iteration == 0 else RunPurpose.EVALUATION,
        parameters=parameters_of(spec, indexes),
        indexes=list(indexes),
        samples=samples,
        objective_value=value,
        cost_cents=cost,
        feasible=feasible,
        accepted=accepted,
        early_value=early_value,
        pareto_front=front,
    )


def _on(it: Judged) -> bool:
    """May this iteration be on a Pareto front: evaluated in full and feasible."""
    return it.feasible and not it.cut and it.objective_value is not None


def pareto_front(points: Sequence[tuple[int, float | int | None, int]]) -> list[int]:
    """The iterations of the (iteration, habitability, cost) points no other point dominates.

    A dominates B when A's habitability is at least B's and its cost at most B's, one of them
    strictly. Equal points are both on the front. Sorted by iteration.
    """
    front = []
    for n, value, cost in points:
        assert value is not None
        dominated = any(
            other is not None
            and other >= value
            and other_cost <= cost
            and (other > value or other_cost < cost)
            for _, other, other_cost in points
        )
        if not dominated:
            front.append(n)
    return sorted(front)


def early_measure(spec: ExperimentSpec, results: list[YearResult]) -> float | int:
    """One sample's objective measure at the early-stop year (``results`` are its years 1..K).

    maximize_habitability: its habitability then (clamped to 0..1, as the final score is);
    minimize_cost_to_event: its spend through year K, or through the event if reached by then
    (a lower bound of its cost to the event).
    """
    if spec.objective == Objective.MINIMIZE_COST_TO_EVENT:
        assert spec.target_event is not None
        reached = cost_to_event(results, spec.target_event)
        return reached if reached is not None else sum(r.economic.spend_cents for r in results)
    return min(1.0, max(0.0, results[-1].environment.habitability))


def early_value(spec: ExperimentSpec, measures: list[float | int]) -> float | int:
    """The candidate's measure at year K: the mean of its samples' (fsum; integer cents)."""
    if spec.objective == Objective.MINIMIZE_COST_TO_EVENT:
        return sum(int(m) for m in measures) // len(measures)
    return math.fsum(measures) / len(measures)


def clearly_worse(spec: ExperimentSpec, value: float | int, history: Sequence[Judged]) -> bool:
    """Cut the candidate: its year-K measure is worse than the best's by more than the margin.

    maximize_habitability compares with the best's habitability at year K; minimize_cost_to_event
    with the best's final cost to the event (a candidate that has spent more by year K cannot
    reach the event for less). No best yet: never cut.
    """
    best = best_of(history)
    if spec.early_stop_at_year is None or best is None:
        return False
    margin = spec.early_stop_margin
    if spec.objective == Objective.MINIMIZE_COST_TO_EVENT:
        return best.objective_value is not None and value > best.objective_value + margin
    return best.early_value is not None and value < best.early_value - margin


def cut_evaluation(
    spec: ExperimentSpec,
    iteration: int,
    indexes: list[int],
    samples: list[SampleOutcome],
    value: float | int,
) -> Evaluation:
    """A candidate cut short at the early-stop year: rejected, with what its samples did by then."""
    return Evaluation(
        iteration=iteration,
        purpose=RunPurpose.INITIAL if iteration == 0 else RunPurpose.EVALUATION,
        parameters=parameters_of(spec, indexes),
        indexes=list(indexes),
        samples=samples,
        objective_value=None,
        cost_cents=sum(sample.total_spend_cents for sample in samples) // len(samples),
        feasible=False,
        accepted=False,
        cut=True,
        cut_at_year=spec.early_stop_at_year,
        early_value=value,
        pareto_front=None,
    )


def _improves(spec: ExperimentSpec, value: float, best: Judged | None) -> bool:
    if best is None or best.objective_value is None:
        return True
    if spec.objective == Objective.MAXIMIZE_HABITABILITY:
        return value > best.objective_value + spec.min_improvement
    return value < best.objective_value - spec.min_improvement


def next_candidate(
    spec: ExperimentSpec, tried: list[list[int]], best: Judged | None
) -> list[int] | None:
    """The next candidate to evaluate, or None when the search has converged."""
    if not tried:
        return initial_indexes(spec)
    start = best.indexes if best is not None else tried[0]
    for candidate in neighbours(spec, list(start)):
        if candidate not in tried:
            return candidate
    return None


def structured_run_id(experiment_id: UUID, ref: str) -> UUID:
    """The run id of a structured id: a UUID5 of it, so a resumed experiment finds its runs."""
    return uuid5(experiment_id, ref)


def structured_id(
    experiment_id: UUID, iteration: int, purpose: RunPurpose, sample: int | None
) -> str:
    """``{experiment_id}-iter{N}-{purpose}[-sample{K}]``."""
    suffix = "" if sample is None else f"-sample{sample}"
    return f"{experiment_id}-iter{iteration}-{purpose}{suffix}"
