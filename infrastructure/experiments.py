"""Running, replaying and reading experiments: the service layer over domain/experiment.py.

Live, each iteration's K sample runs are queued and executed in the ledger like any other run
(linked by experiment_id, iteration, sample_index and run_purpose), serially or in worker
processes; the search decides from their results. Replay re-runs the same search in memory from
ExperimentStarted alone and compares every candidate, run digest and decision with the record.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import msgspec
from pydantic import BeforeValidator, Field, StrictFloat, StrictInt, model_validator
from pydantic_core import PydanticCustomError

from domain.catalog import find_body
from domain.digest import ResultDigest
from domain.engine import ENGINE_VERSION, RunInputs, Simulation, check_parameters
from domain.errors import ExperimentBusy, InvalidTransition, NotFound, ValidationError
from domain.experiment import (
    Evaluation,
    Experiment,
    ExperimentSpec,
    IterationEvaluated,
    Objective,
    RunPurpose,
    SampleOutcome,
    SearchSpace,
    Strategy,
    best_of,
    clearly_worse,
    cost_to_event,
    cut_evaluation,
    early_measure,
    early_value,
    final_seed,
    judge,
    outcome,
    parameters_of,
    run_parameters,
    sample_seed,
    structured_id,
    structured_run_id,
)
from domain.run import Persistence
from domain.strategies import HillClimb, LatinHypercube, Proposer, RandomSearch
from domain.values import (
    MAX_SEED,
    MAX_YEARS,
    Pattern,
    Priority,
    RunParameters,
    RunStatus,
    YearResult,
)
from domain.world import MAX_GIVEN_CENTS
from infrastructure.application import RunLink, TwinLedger
from infrastructure.executors import (
    Executor,
    check_scheduler,
    execute_or_report,
    experiment_claim,
    open_executor,
    store_url,
)
from infrastructure.inputs import (
    MAX_ENTRIES,
    Cents,
    InputModel,
    Line,
    Name,
    ParameterKey,
    check_name,
    check_pattern_fits,
    parse_document,
    read_input_file,
    validate,
)
from infrastructure.locks import StoreLock

OnIteration = Callable[[Evaluation], None]


def _int_within_cents(value: Any) -> Any:
    """An integer past the bound, refused as given: as a float, 2**62 + 1 rounds onto 2**62."""
    if type(value) is int and value > MAX_GIVEN_CENTS:
        raise PydanticCustomError(
            "less_than_equal",
            "Input should be less than or equal to {le}",
            {"le": MAX_GIVEN_CENTS},
        )
    return value


# Search thresholds are in the objective's unit, integer cents for a cost objective: bounded as
# every amount of cents is (MAX_GIVEN_CENTS), whatever the objective.
Margin = Annotated[  # an integer stays one: integer cents for a cost objective
    StrictInt | StrictFloat, Field(ge=0, le=MAX_GIVEN_CENTS, allow_inf_nan=False)
]
Improvement = Annotated[  # a float, as ExperimentSpec records it
    StrictFloat,
    Field(ge=0, le=MAX_GIVEN_CENTS, allow_inf_nan=False),
    BeforeValidator(_int_within_cents),
]


# --- the spec file -----------------------------------------------------------------------------


class ObjectiveIn(InputModel):
    kind: Objective
    max_cost_cents: Cents | None = None
    target_event: Annotated[Line, Field(min_length=1, max_length=100)] | None = None
    min_improvement: Improvement = 0.0

    @model_validator(mode="after")
    def _event_for_cost(self) -> ObjectiveIn:
        if self.kind == Objective.MINIMIZE_COST_TO_EVENT and self.target_event is None:
            raise ValueError("minimize_cost_to_event needs target_event")
        return self


class EarlyStopIn(InputModel):
    at_year: Annotated[StrictInt, Field(ge=1, le=MAX_YEARS)]
    margin: Margin = 0


class BaseIn(InputModel):
    budget_cents: Cents
    tech_level: Annotated[StrictInt, Field(ge=1, le=10)] = 5
    priority: Priority = Priority.NORMAL
    pattern_params: Annotated[
        dict[ParameterKey, Annotated[StrictFloat, Field(allow_inf_nan=False)]],
        Field(max_length=MAX_ENTRIES),
    ] = {}


class SpaceIn(InputModel):
    budget_cents: Annotated[list[Cents], Field(max_length=50)] = []
    tech_level: Annotated[list[Annotated[StrictInt, Field(ge=1, le=10)]], Field(max_length=10)] = []
    priority: list[Priority] = []
    pattern_params: dict[
        ParameterKey,
        Annotated[
            list[Annotated[StrictFloat, Field(allow_inf_nan=False)]],
            Field(min_length=1, max_length=50),
        ],
    ] = {}

    @model_validator(mode="after")
    def _not_empty(self) -> SpaceIn:
        if not (self.budget_cents or self.tech_level or self.priority or self.pattern_params):
            raise ValueError("search at least one parameter")
        return self


class ExperimentFile(InputModel):
    """An experiment spec file (TOML); docs/experiments.md describes each field."""

    name: Name
    twin: Line | None = None
    body: Line | None = None
    pattern: Pattern
    years: Annotated[StrictInt, Field(ge=1, le=MAX_YEARS)]
    master_seed: Annotated[StrictInt, Field(ge=0, le=MAX_SEED)]
    samples: Annotated[StrictInt, Field(ge=1, le=32)] = 3
    max_iterations: Annotated[StrictInt, Field(ge=1, le=500)] = 20
    workers: Annotated[StrictInt, Field(ge=1, le=32)] = 1
    strategy: Strategy = Strategy.HILL_CLIMB
    early_stop: EarlyStopIn | None = None
    persistence: Persistence = Persistence.FULL
    objective: ObjectiveIn
    base: BaseIn
    space: SpaceIn

    @model_validator(mode="after")
    def _one_twin_source(self) -> ExperimentFile:
        if (self.twin is None) == (self.body is None):
            raise ValueError(
                "give exactly one of twin (an existing twin id) or body (a catalog key)"
            )
        if self.pattern == Pattern.CUSTOM:
            raise ValueError("experiments search the built-in patterns, not custom")
        self._parameters_in_range()
        check_search(self)
        return self

    def _parameters_in_range(self) -> None:
        """Every pattern parameter the search may try is known and in range, checked now so a
        bad spec is refused before anything is written (not at its first sample run)."""
        for where, values in [
            ("base", [self.base.pattern_params]),
            ("space", [{k: v} for k, vs in self.space.pattern_params.items() for v in vs]),
        ]:
            for params in values:
                try:
                    check_parameters(
                        self.pattern,
                        RunParameters(budget_cents=0, pattern_params=dict(params)),
                    )
                except ValidationError as error:
                    raise ValidationError(f"{where}.{error.field}", error.message) from None

    def spec(self) -> ExperimentSpec:
        return ExperimentSpec(
            name=self.name,
            pattern=self.pattern,
            duration_years=self.years,
            master_seed=self.master_seed,
            samples=self.samples,
            max_iterations=self.max_iterations,
            objective=self.objective.kind,
            space=msgspec.convert(self.space.model_dump(mode="json"), type=SearchSpace),
            base_budget_cents=self.base.budget_cents,
            base_tech_level=self.base.tech_level,
            base_priority=self.base.priority,
            base_pattern_params=dict(sorted(self.base.pattern_params.items())),
            max_cost_cents=self.objective.max_cost_cents,
            target_event=self.objective.target_event,
            min_improvement=self.objective.min_improvement,
            strategy=self.strategy,
            early_stop_at_year=None if self.early_stop is None else self.early_stop.at_year,
            early_stop_margin=0 if self.early_stop is None else self.early_stop.margin,
            persistence=self.persistence,
        )


def check_search(file: ExperimentFile) -> None:
    """The rules between the search fields (docs/experiments.md); each names its field."""
    pareto = file.objective.kind == Objective.PARETO
    if pareto and file.strategy == Strategy.HILL_CLIMB:
        raise ValidationError(
            "strategy",
            "objective pareto needs random, latin_hypercube or tpe (no single best to climb from)",
        )
    stop = file.early_stop
    if stop is None:
        return
    if pareto:
        raise ValidationError("early_stop", "not with objective pareto (no single best)")
    if stop.at_year >= file.years:
        raise ValidationError("early_stop.at_year", f"must be before the last year ({file.years})")
    if file.objective.kind == Objective.MINIMIZE_COST_TO_EVENT and not isinstance(stop.margin, int):
        raise ValidationError(
            "early_stop.margin", "must be an integer number of GCC cents for a cost objective"
        )


def read_experiment_file(path: str | Path) -> ExperimentFile:
    """Read and validate an experiment spec (TOML); every refusal names ``spec`` or its field."""
    data = parse_document(read_input_file(path, "spec"), path, "spec", toml=True)
    return validate(ExperimentFile, data, root="spec")


# --- running -----------------------------------------------------------------------------------


def proposer_for(spec: ExperimentSpec) -> Proposer:
    """The spec's strategy; Optuna is imported only for tpe."""
    if spec.strategy == Strategy.TPE:
        from infrastructure.tpe import TpeProposer

        return TpeProposer()
    proposers: dict[Strategy, Callable[[], Proposer]] = {
        Strategy.HILL_CLIMB: HillClimb,
        Strategy.RANDOM: RandomSearch,
        Strategy.LATIN_HYPERCUBE: LatinHypercube,
    }
    return proposers[spec.strategy]()


def installed_optuna(spec: ExperimentSpec) -> str | None:
    """The Optuna version to record: only the tpe strategy depends on it."""
    if spec.strategy != Strategy.TPE:
        return None
    from infrastructure.tpe import optuna_version

    return optuna_version()


def run_experiment(
    ledger: TwinLedger,
    file: ExperimentFile,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    started_by: str = "cli",
    on_iteration: OnIteration | None = None,
    on_started: Callable[[Experiment], None] | None = None,
) -> Experiment:
    """Run a whole experiment and return it, completed.

    Sample runs execute here, in ``workers`` local processes, or on the Dask ``scheduler``
    (infrastructure/executors.py); the search decides from their recorded results alone, so
    where they ran changes nothing.
    """
    workers = workers or file.workers
    _check_elsewhere(ledger, workers, scheduler)
    claims: list[StoreLock] = []  # held from before ExperimentStarted: never resumed meanwhile
    try:
        experiment = start_experiment(
            ledger,
            file,
            started_by=started_by,
            claim=lambda ident: claims.append(_claim(ledger, ident)),
        )
        if on_started is not None:
            on_started(experiment)
        return continue_experiment(
            ledger,
            experiment,
            workers=workers,
            scheduler=scheduler,
            on_iteration=on_iteration,
            claim=claims[0] if claims else None,
        )
    finally:
        for held in claims:
            held.release()


def _claim(ledger: TwinLedger, experiment_id: UUID) -> StoreLock:
    """Take the experiment's claim (infrastructure/executors.py ``experiment_claim``) at once,
    or ExperimentBusy: another process is evaluating it."""
    assert ledger.database is not None
    claim = experiment_claim(ledger.database, experiment_id)
    if not claim.try_acquire():
        raise ExperimentBusy(
            f"experiment_id: experiment {experiment_id} is being evaluated by another process "
            "right now"
        )
    return claim


def start_experiment(
    ledger: TwinLedger,
    file: ExperimentFile,
    *,
    started_by: str,
    claim: Callable[[UUID], None] | None = None,
) -> Experiment:
    """Record ExperimentStarted (cloning the spec's body first if it names one), nothing more:
    ``continue_experiment`` evaluates it, here or in a background worker. ``claim`` is called
    with the new experiment's id before ExperimentStarted is saved (to take its claim)."""
    started_by = check_name(started_by, "started_by")
    spec = file.spec()
    if file.twin is not None:
        twin = ledger.get_twin(file.twin)
        check_pattern_fits(spec.pattern, twin.simulation_type, str(twin.id))
    else:
        assert file.body is not None
        reference = find_body(file.body)
        if reference is None:
            raise ValidationError("body", f"unknown body {file.body!r}")
        check_pattern_fits(spec.pattern, reference.simulation_type, file.body)
        twin = ledger.get_twin(
            ledger.clone_twin(name=spec.name[:200], body=file.body, created_by=started_by)
        )
    twin.check_accepts_runs(ledger.clock())
    experiment = Experiment.start(
        twin_id=twin.id,
        twin_state=twin.state,
        spec=spec,
        engine_version=ENGINE_VERSION,
        started_by=started_by,
        optuna_version=installed_optuna(spec),
    )
    if claim is not None and ledger.database is not None:
        claim(experiment.id)
    ledger.save_and_notify(experiment)
    return experiment


def resume_experiment(
    ledger: TwinLedger,
    experiment_id: UUID | str,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    on_iteration: OnIteration | None = None,
) -> Experiment:
    """Carry on an experiment left running (its process died): the same search, same runs.

    The recorded iterations are the history the strategy proposes from again; the iteration in
    flight finds its runs by their structured ids (UUID5) and reuses the completed ones, resumes
    the running ones and queues the missing ones. The result is the uninterrupted experiment's.
    Whoever evaluates an experiment holds its claim (``continue_experiment``): while its
    process lives, a resume is refused (ExperimentBusy); once it died, the claim is free.
    """
    experiment = get_experiment(ledger, experiment_id)
    _check_running(experiment)
    _check_versions(experiment, allow_other_version=False, verb="resume")
    return continue_experiment(
        ledger, experiment, workers=workers, scheduler=scheduler, on_iteration=on_iteration
    )


def _check_running(experiment: Experiment) -> None:
    if experiment.status != "running":
        raise InvalidTransition(
            f"experiment_id: experiment {experiment.id} is {experiment.status}, not running"
        )


def _check_elsewhere(ledger: TwinLedger, workers: int, scheduler: str | None) -> None:
    """Refused before anything is written (an experiment started, or a running one failed by a
    typo in --scheduler): samples elsewhere need a shared store and a scheduler address."""
    if scheduler:
        check_scheduler(scheduler)
    if (workers > 1 or bool(scheduler)) and (
        ledger.database is None or "mode=memory" in ledger.database.sqlite_path
    ):
        raise ValidationError("workers", "parallel samples need a database file or PostgreSQL")


def continue_experiment(
    ledger: TwinLedger,
    experiment: Experiment,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    on_iteration: OnIteration | None = None,
    claim: StoreLock | None = None,
) -> Experiment:
    """Evaluate a started experiment to its end, from wherever it stands: iteration 0 (after
    ``start_experiment``) or the iteration in flight of a resumed one.

    Under the experiment's claim, as every evaluator (``claim``: one already held by the
    caller): ExperimentBusy at once if another process holds it. With the claim, the
    experiment is read again: one that another evaluator ended meanwhile is returned as it is
    (InvalidTransition if it was not running), so no iteration is ever evaluated twice."""
    _check_elsewhere(ledger, workers, scheduler)
    if ledger.database is None:  # a private in-memory store: no other process reaches it
        return _evaluate(ledger, experiment, workers, scheduler, on_iteration)
    held = claim if claim is not None else _claim(ledger, experiment.id)
    try:
        current = get_experiment(ledger, experiment.id)
        _check_running(current)
        return _evaluate(ledger, current, workers, scheduler, on_iteration)
    finally:
        if claim is None:
            held.release()


def _evaluate(
    ledger: TwinLedger,
    experiment: Experiment,
    workers: int,
    scheduler: str | None,
    on_iteration: OnIteration | None,
) -> Experiment:
    spec = experiment.spec
    elsewhere = workers > 1 or bool(scheduler)
    pool = (
        open_executor(store_url(ledger.database), scheduler, workers=workers) if elsewhere else None
    )
    proposer = proposer_for(spec)
    try:
        reason = "max_iterations"
        while len(experiment.iterations) < spec.max_iterations:
            candidate = proposer.propose(spec, experiment.iterations)
            if candidate is None:
                reason = proposer.done_reason
                break
            evaluation = _evaluate_live(ledger, experiment, candidate, pool)
            experiment.record(evaluation)
            ledger.save_and_notify(experiment)
            if on_iteration is not None:
                on_iteration(evaluation)
        final = None
        best = experiment.best
        if best is not None:
            final = _final_live(ledger, experiment, best)
        experiment.complete(reason, final)
        ledger.save_and_notify(experiment)
    except BaseException as error:
        if not isinstance(error, KeyboardInterrupt):
            stored = get_experiment(ledger, experiment.id)
            stored.fail(f"{type(error).__name__}: {error}")
            ledger.save_and_notify(stored)
        raise
    finally:
        if pool is not None:
            pool.close()
    return experiment


def _queue(
    ledger: TwinLedger,
    experiment: Experiment,
    parameters: RunParameters,
    iteration: int,
    purpose: RunPurpose,
    sample: int | None,
    seed: int,
) -> UUID:
    """Queue a run under its structured id, or find it queued already (a resumed experiment)."""
    run_id = structured_run_id(
        experiment.id, structured_id(experiment.id, iteration, purpose, sample)
    )
    try:
        ledger.get_run(run_id)
        return run_id
    except NotFound:
        pass
    spec = experiment.spec
    return ledger.queue_run(
        experiment.twin_id,
        pattern=spec.pattern,
        duration_years=spec.duration_years,
        budget_cents=parameters.budget_cents,
        tech_level=parameters.tech_level,
        priority=parameters.priority,
        pattern_params=dict(parameters.pattern_params),
        seed=seed,
        initiated_by=f"experiment:{experiment.id}",
        link=RunLink(experiment.id, iteration, sample, str(purpose)),
        run_id=run_id,
        persistence=str(spec.persistence),
    )


def _execute(ledger: TwinLedger, run_ids: list[UUID], pool: Executor | None) -> None:
    """Execute (or resume) the runs not ended yet; completed ones are reused as they are."""
    pending = [run_id for run_id in run_ids if not ledger.get_run(run_id).ended]
    if pool is not None:
        pool.run_all([str(run_id) for run_id in pending])
    else:
        for run_id in pending:
            execute_or_report(ledger, run_id)  # under the run's claim, as every executor


def _outcomes(
    ledger: TwinLedger, spec: ExperimentSpec, runs: list[tuple[UUID, int]]
) -> tuple[list[SampleOutcome], list[list[YearResult]]]:
    outcomes, years = [], []
    for run_id, seed in runs:
        run = ledger.get_run(run_id)
        if run.status != RunStatus.COMPLETED or run.summary is None or run.result_digest is None:
            raise InvalidTransition(
                f"run_id: sample run {run_id} ended {run.status}: {run.error_message}"
            )
        # The years only when the search needs them (cost to an event, early stopping); a
        # summary-level run's are re-derived by re-simulating it.
        needs_years = spec.target_event is not None or spec.early_stop_at_year is not None
        results = list(ledger.years_of(run)) if needs_years else []
        outcomes.append(outcome(run.id, seed, run.result_digest, run.summary, results, spec))
        years.append(results)
    return outcomes, years


def _evaluate_live(
    ledger: TwinLedger, experiment: Experiment, candidate: list[int], pool: Executor | None
) -> Evaluation:
    """Evaluate a candidate on its K sample runs in the ledger (or cut it short) and judge it."""
    spec = experiment.spec
    history = experiment.iterations
    iteration = len(history)
    purpose = RunPurpose.INITIAL if iteration == 0 else RunPurpose.EVALUATION
    params = parameters_of(spec, candidate)
    parameters = run_parameters(params)
    seeds = [(k, sample_seed(spec.master_seed, k)) for k in range(spec.samples)]
    runs = [
        (_queue(ledger, experiment, parameters, iteration, purpose, k, seed), seed)
        for k, seed in seeds
    ]
    cut = _early_cut(experiment, candidate, iteration, [run_id for run_id, _ in runs])
    if cut is not None:
        for run_id, _ in runs:
            if not ledger.get_run(run_id).ended:
                ledger.cancel_run(
                    run_id, reason=f"early stop at year {spec.early_stop_at_year}", by="experiment"
                )
        return cut
    _execute(ledger, [run_id for run_id, _ in runs], pool)
    samples, years = _outcomes(ledger, spec, runs)
    return judge(spec, iteration, candidate, samples, history, early_value=_early(spec, years))


def _final_live(
    ledger: TwinLedger, experiment: Experiment, best: IterationEvaluated
) -> SampleOutcome:
    spec = experiment.spec
    seed = final_seed(spec.master_seed)
    parameters = run_parameters(parameters_of(spec, best.indexes))
    run_id = _queue(ledger, experiment, parameters, best.iteration, RunPurpose.FINAL, None, seed)
    _execute(ledger, [run_id], None)
    return _outcomes(ledger, spec, [(run_id, seed)])[0][0]


def _early(spec: ExperimentSpec, years: list[list[YearResult]]) -> float | int | None:
    """A candidate's measure at the early-stop year (None: no early stop)."""
    at = spec.early_stop_at_year
    if at is None:
        return None
    return early_value(spec, [early_measure(spec, results[:at]) for results in years])


def _early_cut(
    experiment: Experiment, candidate: list[int], iteration: int, run_ids: list[UUID]
) -> Evaluation | None:
    """Simulate the candidate's samples to the early-stop year; the cut evaluation if it is
    clearly worse than the best then, else None (it is evaluated in full)."""
    spec = experiment.spec
    if spec.early_stop_at_year is None or best_of(experiment.iterations) is None:
        return None
    samples, measures = _partial_samples(experiment, candidate, run_ids)
    value = early_value(spec, measures)
    if not clearly_worse(spec, value, experiment.iterations):
        return None
    return cut_evaluation(spec, iteration, candidate, samples, value)


def _partial_samples(
    experiment: Experiment, candidate: list[int], run_ids: list[UUID]
) -> tuple[list[SampleOutcome], list[float | int]]:
    """The candidate's samples simulated to the early-stop year only, in memory.

    Each outcome's digest is that of years 1..K (no summary), its spend the spend through K."""
    spec = experiment.spec
    at = spec.early_stop_at_year
    assert at is not None
    samples, measures = [], []
    for k, run_id in enumerate(run_ids):
        seed = sample_seed(spec.master_seed, k)
        digest, results = _simulate_to(experiment, parameters_of(spec, candidate), seed, at)
        samples.append(
            SampleOutcome(
                run_id=run_id,
                seed=seed,
                result_digest=digest,
                habitability_score=min(1.0, max(0.0, results[-1].environment.habitability)),
                total_spend_cents=sum(r.economic.spend_cents for r in results),
                cost_to_event_cents=None
                if spec.target_event is None
                else cost_to_event(results, spec.target_event),
            )
        )
        measures.append(early_measure(spec, results))
    return samples, measures


# --- reading -----------------------------------------------------------------------------------


def get_experiment(ledger: TwinLedger, experiment_id: UUID | str) -> Experiment:
    return ledger.get_aggregate(Experiment, "experiment_id", experiment_id)


def runs_of(experiment: Experiment) -> dict[str, UUID]:
    """Every run of an experiment by its structured id."""
    runs: dict[str, UUID] = {}
    for it in experiment.iterations:
        for index, sample in enumerate(it.samples):
            runs[structured_id(experiment.id, it.iteration, it.purpose, index)] = sample.run_id
    best = experiment.best
    if experiment.final_run is not None and best is not None:
        runs[structured_id(experiment.id, best.iteration, RunPurpose.FINAL, None)] = (
            experiment.final_run.run_id
        )
    return runs


def front_of(experiment: Experiment) -> list[dict[str, Any]]:
    """The Pareto front (objective pareto) as data: each member's iteration, parameters, mean
    habitability and mean cost in cents, by cost. Empty for other objectives."""
    members = [experiment.iterations[n] for n in experiment.pareto_front or []]
    return [
        {
            "iteration": it.iteration,
            "parameters": dict(it.parameters),
            "habitability": it.objective_value,
            "cost_cents": it.cost_cents,
        }
        for it in sorted(members, key=lambda it: (it.cost_cents, it.iteration))
    ]


def resolve_run(ledger: TwinLedger, ref: str) -> UUID:
    """Resolve ``{experiment_id}-iter{N}-{purpose}[-sample{K}]`` to its run id (the ledger's
    one resolver, TwinLedger.resolve_run_id)."""
    return ledger.resolve_run_id(ref)


# --- replay ------------------------------------------------------------------------------------


@dataclass
class ExperimentReplay:
    iterations: int
    runs_checked: int
    differences: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.differences


def _simulate(
    experiment: Experiment, params: dict[str, Any], seed: int
) -> tuple[str, Any, list[YearResult]]:
    spec = experiment.spec
    simulation = Simulation(_inputs(experiment, params, seed))
    digest = ResultDigest()
    results = []
    while simulation.year < spec.duration_years:
        result = simulation.step()
        digest.add_year(result)
        results.append(result)
    summary = simulation.summary()
    digest.add_summary(summary)
    return digest.hexdigest(), summary, results


def _simulate_to(
    experiment: Experiment, params: dict[str, Any], seed: int, years: int
) -> tuple[str, list[YearResult]]:
    """A sample simulated to ``years`` only: the digest of those years (no summary), and them."""
    simulation = Simulation(_inputs(experiment, params, seed))
    digest = ResultDigest()
    results = []
    while simulation.year < years:
        result = simulation.step()
        digest.add_year(result)
        results.append(result)
    return digest.hexdigest(), results


def _inputs(experiment: Experiment, params: dict[str, Any], seed: int) -> RunInputs:
    spec = experiment.spec
    return RunInputs(
        state=experiment.twin_state,
        pattern=spec.pattern,
        duration_years=spec.duration_years,
        parameters=run_parameters(params),
        seed=seed,
    )


def _check_versions(experiment: Experiment, *, allow_other_version: bool, verb: str) -> None:
    """Refuse an experiment recorded by another engine, or (tpe) another Optuna version."""
    if allow_other_version:
        return
    if experiment.engine_version != ENGINE_VERSION:
        raise InvalidTransition(
            f"engine_version: experiment {experiment.id} was recorded by engine "
            f"{experiment.engine_version}, this is {ENGINE_VERSION}; "
            f"pass --allow-other-version to {verb} anyway"
        )
    if experiment.spec.strategy == Strategy.TPE:
        from infrastructure.tpe import optuna_version

        if experiment.optuna_version != optuna_version():
            raise InvalidTransition(
                f"optuna_version: experiment {experiment.id} was recorded with Optuna "
                f"{experiment.optuna_version}, this is {optuna_version()}; "
                f"pass --allow-other-version to {verb} anyway"
            )


COMPARED = (
    "parameters",
    "objective_value",
    "cost_cents",
    "feasible",
    "accepted",
    "cut",
    "cut_at_year",
    "early_value",
    "pareto_front",
)


def replay_experiment(
    ledger: TwinLedger,
    experiment_id: UUID | str,
    *,
    only: str | None = None,
    allow_other_engine: bool = False,
    allow_other_version: bool = False,
) -> ExperimentReplay:
    """Re-run the search from ExperimentStarted alone and compare everything with the record.

    ``only`` ("iter5:evaluation" or "iter5:evaluation:sample2") re-simulates just those runs.
    """
    experiment = get_experiment(ledger, experiment_id)
    _check_versions(
        experiment, allow_other_version=allow_other_version or allow_other_engine, verb="replay"
    )
    spec = experiment.spec
    report = ExperimentReplay(iterations=len(experiment.iterations), runs_checked=0)
    if only is not None:
        _replay_only(ledger, experiment, only, report)
        return report
    proposer = proposer_for(spec)
    history: list[Evaluation] = []
    for recorded in experiment.iterations:
        n = recorded.iteration
        try:
            candidate = proposer.propose(spec, history)
        except InvalidTransition as error:
            report.differences.append(f"iteration {n}: {error}")
            return report
        if candidate != recorded.indexes:
            report.differences.append(
                f"iteration {n}: candidate recorded {recorded.indexes}, replay {candidate}"
            )
            return report
        evaluation = _replay_iteration(ledger, experiment, report, recorded, candidate, history)
        for name in COMPARED:
            ours, theirs = getattr(evaluation, name), getattr(recorded, name)
            if ours != theirs:
                report.differences.append(
                    f"iteration {n}: {name} recorded {theirs!r}, replay {ours!r}"
                )
        history.append(evaluation)
    if experiment.status == "completed":
        more = proposer.propose(spec, history) if len(history) < spec.max_iterations else None
        expected_reason = (
            proposer.done_reason
            if more is None and len(history) < spec.max_iterations
            else "max_iterations"
        )
        if experiment.reason != expected_reason:
            report.differences.append(
                f"completion: reason recorded {experiment.reason!r}, replay {expected_reason!r}"
            )
        best = best_of(history)
        if best is not None and experiment.final_run is not None:
            digest, _, _ = _simulate(
                experiment, parameters_of(spec, best.indexes), final_seed(spec.master_seed)
            )
            report.runs_checked += 1
            _check_run(ledger, report, "final run", experiment.final_run, digest)
        elif (best is None) != (experiment.final_run is None):
            report.differences.append(
                f"final run: recorded {experiment.final_run is not None}, replay {best is not None}"
            )
    return report


def _replay_iteration(
    ledger: TwinLedger,
    experiment: Experiment,
    report: ExperimentReplay,
    recorded: IterationEvaluated,
    candidate: list[int],
    history: list[Evaluation],
) -> Evaluation:
    """Re-evaluate one recorded iteration in memory, checking each run against the record."""
    spec = experiment.spec
    n = recorded.iteration
    run_ids = [sample.run_id for sample in recorded.samples]
    if spec.early_stop_at_year is not None and best_of(history) is not None:
        partial, measures = _partial_samples(experiment, candidate, run_ids)
        value = early_value(spec, measures)
        if clearly_worse(spec, value, history):
            for k, (ours, theirs) in enumerate(zip(partial, recorded.samples, strict=False)):
                report.runs_checked += 1
                _check_cut_run(ledger, report, f"iteration {n} sample {k}", theirs, ours)
            return cut_evaluation(spec, n, candidate, partial, value)
    samples, years = [], []
    for k, sample in enumerate(recorded.samples):
        seed = sample_seed(spec.master_seed, k)
        digest, summary, results = _simulate(experiment, parameters_of(spec, candidate), seed)
        report.runs_checked += 1
        _check_run(ledger, report, f"iteration {n} sample {k}", sample, digest)
        samples.append(outcome(sample.run_id, seed, digest, summary, results, spec))
        years.append(results)
    return judge(spec, n, candidate, samples, history, early_value=_early(spec, years))


def _check_run(
    ledger: TwinLedger, report: ExperimentReplay, label: str, sample: SampleOutcome, digest: str
) -> None:
    if sample.result_digest != digest:
        report.differences.append(
            f"{label}: digest recorded {sample.result_digest}, replay {digest}"
        )
    stored = ledger.get_run(sample.run_id)
    if stored.result_digest != digest:
        report.differences.append(
            f"{label}: run {sample.run_id} stored digest {stored.result_digest}, replay {digest}"
        )


def _check_cut_run(
    ledger: TwinLedger,
    report: ExperimentReplay,
    label: str,
    recorded: SampleOutcome,
    replayed: SampleOutcome,
) -> None:
    """A cut sample: its digest of years 1..K as recorded, and its stored run cancelled."""
    if recorded.result_digest != replayed.result_digest:
        report.differences.append(
            f"{label}: digest to the cut recorded {recorded.result_digest}, "
            f"replay {replayed.result_digest}"
        )
    stored = ledger.get_run(recorded.run_id)
    if stored.status != RunStatus.CANCELLED:
        report.differences.append(
            f"{label}: run {recorded.run_id} was cut, but is stored {stored.status}"
        )


def _replay_only(
    ledger: TwinLedger, experiment: Experiment, only: str, report: ExperimentReplay
) -> None:
    match = re.fullmatch(r"iter([0-9]{1,6}):([a-z]{1,20})(?::sample([0-9]{1,6}))?", only)
    purposes = {str(purpose) for purpose in RunPurpose}
    if match is None or match.group(2) not in purposes:
        raise ValidationError(
            "run", f"{only[:60]!r} is not like iter5:evaluation or iter5:evaluation:sample2"
        )
    n = int(match.group(1))
    purpose = RunPurpose(match.group(2))
    sample_filter = None if match.group(3) is None else int(match.group(3))
    spec = experiment.spec
    if purpose == RunPurpose.FINAL:
        best = experiment.best
        if best is None or best.iteration != n or experiment.final_run is None:
            raise NotFound("run", only)
        digest, _, _ = _simulate(
            experiment, parameters_of(spec, best.indexes), final_seed(spec.master_seed)
        )
        report.runs_checked += 1
        _check_run(ledger, report, "final run", experiment.final_run, digest)
        return
    if n >= len(experiment.iterations) or experiment.iterations[n].purpose != purpose:
        raise NotFound("run", only)
    recorded: IterationEvaluated = experiment.iterations[n]
    params = parameters_of(spec, recorded.indexes)
    for k, sample in enumerate(recorded.samples):
        if sample_filter is not None and k != sample_filter:
            continue
        seed = sample_seed(spec.master_seed, k)
        report.runs_checked += 1
        label = f"iteration {n} sample {k}"
        if recorded.cut and recorded.cut_at_year is not None:
            digest_to, _ = _simulate_to(experiment, params, seed, recorded.cut_at_year)
            replayed = msgspec.structs.replace(sample, result_digest=digest_to)
            _check_cut_run(ledger, report, label, sample, replayed)
            continue
        digest, _, _ = _simulate(experiment, params, seed)
        _check_run(ledger, report, label, sample, digest)
    if report.runs_checked == 0:
        raise NotFound("run", only)
