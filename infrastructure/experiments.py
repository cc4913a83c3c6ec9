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
from pydantic import Field, StrictFloat, StrictInt, model_validator

from domain.catalog import find_body
from domain.digest import ResultDigest
from domain.engine import ENGINE_VERSION, RunInputs, Simulation, check_parameters
from domain.errors import InvalidTransition, NotFound, ValidationError
from domain.experiment import (
    Evaluation,
    Experiment,
    ExperimentSpec,
    IterationEvaluated,
    Objective,
    RunPurpose,
    SampleOutcome,
    SearchSpace,
    final_seed,
    judge,
    next_candidate,
    outcome,
    parameters_of,
    run_parameters,
    sample_seed,
    structured_id,
)
from domain.values import (
    MAX_SEED,
    MAX_YEARS,
    Pattern,
    Priority,
    RunParameters,
    RunStatus,
    YearResult,
)
from infrastructure.application import RunLink, TwinLedger
from infrastructure.executors import Executor, open_executor, store_url
from infrastructure.inputs import (
    MAX_ENTRIES,
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

Cents = Annotated[StrictInt, Field(ge=0, le=2**62)]
OnIteration = Callable[[Evaluation], None]


# --- the spec file -----------------------------------------------------------------------------


class ObjectiveIn(InputModel):
    kind: Objective
    max_cost_cents: Cents | None = None
    target_event: Annotated[Line, Field(min_length=1, max_length=100)] | None = None
    min_improvement: Annotated[StrictFloat, Field(ge=0, allow_inf_nan=False)] = 0.0

    @model_validator(mode="after")
    def _event_for_cost(self) -> ObjectiveIn:
        if self.kind == Objective.MINIMIZE_COST_TO_EVENT and self.target_event is None:
            raise ValueError("minimize_cost_to_event needs target_event")
        return self


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
        )


def read_experiment_file(path: str | Path) -> ExperimentFile:
    """Read and validate an experiment spec (TOML); every refusal names ``spec`` or its field."""
    data = parse_document(read_input_file(path, "spec"), path, "spec", toml=True)
    return validate(ExperimentFile, data, root="spec")


# --- running -----------------------------------------------------------------------------------


def run_experiment(
    ledger: TwinLedger,
    file: ExperimentFile,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    started_by: str = "cli",
    on_iteration: OnIteration | None = None,
) -> Experiment:
    """Run a whole experiment and return it, completed.

    Sample runs execute here, in ``workers`` local processes, or on the Dask ``scheduler``
    (infrastructure/executors.py); the search decides from their recorded results alone, so
    where they ran changes nothing.
    """
    workers = workers or file.workers
    elsewhere = workers > 1 or bool(scheduler)
    if elsewhere and (ledger.database is None or "mode=memory" in ledger.database.sqlite_path):
        raise ValidationError("workers", "parallel samples need a database file or PostgreSQL")
    experiment = start_experiment(ledger, file, started_by=started_by)
    return continue_experiment(
        ledger, experiment, workers=workers, scheduler=scheduler, on_iteration=on_iteration
    )


def start_experiment(ledger: TwinLedger, file: ExperimentFile, *, started_by: str) -> Experiment:
    """Record ExperimentStarted (cloning the spec's body first if it names one), nothing more:
    ``continue_experiment`` evaluates it, here or in a background worker."""
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
    )
    ledger.save_and_notify(experiment)
    return experiment


def continue_experiment(
    ledger: TwinLedger,
    experiment: Experiment,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    on_iteration: OnIteration | None = None,
) -> Experiment:
    """Evaluate a just-started experiment to its end (``run_experiment`` without the start)."""
    spec = experiment.spec
    elsewhere = workers > 1 or bool(scheduler)
    pool = (
        open_executor(store_url(ledger.database), scheduler, workers=workers) if elsewhere else None
    )
    try:
        tried: list[list[int]] = []
        reason = "max_iterations"
        while len(experiment.iterations) < spec.max_iterations:
            candidate = next_candidate(spec, tried, experiment.best)
            if candidate is None:
                reason = "converged"
                break
            tried.append(candidate)
            iteration = len(experiment.iterations)
            purpose = RunPurpose.INITIAL if iteration == 0 else RunPurpose.EVALUATION
            samples = _evaluate_live(ledger, experiment, spec, candidate, iteration, purpose, pool)
            evaluation = judge(spec, iteration, candidate, samples, experiment.best)
            experiment.record(evaluation)
            ledger.save_and_notify(experiment)
            if on_iteration is not None:
                on_iteration(evaluation)
        final = None
        best = experiment.best
        if best is not None:
            final = _evaluate_live(
                ledger, experiment, spec, best.indexes, best.iteration, RunPurpose.FINAL, None
            )[0]
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


def _evaluate_live(
    ledger: TwinLedger,
    experiment: Experiment,
    spec: ExperimentSpec,
    candidate: list[int],
    iteration: int,
    purpose: RunPurpose,
    pool: Executor | None,
) -> list[SampleOutcome]:
    params = parameters_of(spec, candidate)
    parameters = run_parameters(params)
    if purpose == RunPurpose.FINAL:
        seeds: list[tuple[int | None, int]] = [(None, final_seed(spec.master_seed))]
    else:
        seeds = [(k, sample_seed(spec.master_seed, k)) for k in range(spec.samples)]
    run_ids = [
        ledger.queue_run(
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
        )
        for sample, seed in seeds
    ]
    if pool is not None:
        pool.run_all([str(run_id) for run_id in run_ids])
    else:
        for run_id in run_ids:
            ledger.execute_run(run_id)
    outcomes = []
    for (_, seed), run_id in zip(seeds, run_ids, strict=True):
        run = ledger.get_run(run_id)
        if run.status != RunStatus.COMPLETED or run.summary is None or run.result_digest is None:
            raise InvalidTransition(
                f"run_id: sample run {run_id} ended {run.status}: {run.error_message}"
            )
        results = list(ledger.recorded_years(run_id))
        outcomes.append(outcome(run.id, seed, run.result_digest, run.summary, results, spec))
    return outcomes


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


def resolve_run(ledger: TwinLedger, ref: str) -> UUID:
    """Resolve ``{experiment_id}-iter{N}-{purpose}[-sample{K}]`` to its run id."""
    experiment_part = ref[:36]
    experiment = get_experiment(ledger, experiment_part)
    runs = runs_of(experiment)
    if ref in runs:
        return runs[ref]
    raise NotFound("run_ref", ref)


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
    simulation = Simulation(
        RunInputs(
            state=experiment.twin_state,
            pattern=spec.pattern,
            duration_years=spec.duration_years,
            parameters=run_parameters(params),
            seed=seed,
        )
    )
    digest = ResultDigest()
    results = []
    while simulation.year < spec.duration_years:
        result = simulation.step()
        digest.add_year(result)
        results.append(result)
    summary = simulation.summary()
    digest.add_summary(summary)
    return digest.hexdigest(), summary, results


def replay_experiment(
    ledger: TwinLedger,
    experiment_id: UUID | str,
    *,
    only: str | None = None,
    allow_other_engine: bool = False,
) -> ExperimentReplay:
    """Re-run the search from ExperimentStarted alone and compare everything with the record.

    ``only`` ("iter5:evaluation" or "iter5:evaluation:sample2") re-simulates just those runs.
    """
    experiment = get_experiment(ledger, experiment_id)
    if experiment.engine_version != ENGINE_VERSION and not allow_other_engine:
        raise InvalidTransition(
            f"engine_version: experiment {experiment.id} was recorded by engine "
            f"{experiment.engine_version}, this is {ENGINE_VERSION}; "
            "pass --allow-other-engine to replay anyway"
        )
    spec = experiment.spec
    report = ExperimentReplay(iterations=len(experiment.iterations), runs_checked=0)
    if only is not None:
        _replay_only(ledger, experiment, only, report)
        return report
    tried: list[list[int]] = []
    best: Evaluation | None = None
    for recorded in experiment.iterations:
        n = recorded.iteration
        candidate = next_candidate(spec, tried, best)
        if candidate != recorded.indexes:
            report.differences.append(
                f"iteration {n}: candidate recorded {recorded.indexes}, replay {candidate}"
            )
            return report
        tried.append(candidate)
        samples = []
        for k, sample in enumerate(recorded.samples):
            seed = sample_seed(spec.master_seed, k)
            digest, summary, results = _simulate(experiment, parameters_of(spec, candidate), seed)
            report.runs_checked += 1
            _check_run(ledger, report, f"iteration {n} sample {k}", sample, digest)
            samples.append(outcome(sample.run_id, seed, digest, summary, results, spec))
        evaluation = judge(spec, n, candidate, samples, best)
        for name in ("parameters", "objective_value", "cost_cents", "feasible", "accepted"):
            ours, theirs = getattr(evaluation, name), getattr(recorded, name)
            if ours != theirs:
                report.differences.append(
                    f"iteration {n}: {name} recorded {theirs!r}, replay {ours!r}"
                )
        if evaluation.accepted:
            best = evaluation
    expected_reason = None
    if experiment.status == "completed":
        more = next_candidate(spec, tried, best) if len(tried) < spec.max_iterations else None
        expected_reason = (
            "converged" if more is None and len(tried) < spec.max_iterations else "max_iterations"
        )
        if experiment.reason != expected_reason:
            report.differences.append(
                f"completion: reason recorded {experiment.reason!r}, replay {expected_reason!r}"
            )
        if best is not None and experiment.final_run is not None:
            digest, _, _ = _simulate(
                experiment, parameters_of(spec, best.indexes), final_seed(spec.master_seed)
            )
            report.runs_checked += 1
            _check_run(ledger, report, "final run", experiment.final_run, digest)
    return report


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
    for k, sample in enumerate(recorded.samples):
        if sample_filter is not None and k != sample_filter:
            continue
        digest, _, _ = _simulate(
            experiment, parameters_of(spec, recorded.indexes), sample_seed(spec.master_seed, k)
        )
        report.runs_checked += 1
        _check_run(ledger, report, f"iteration {n} sample {k}", sample, digest)
    if report.runs_checked == 0:
        raise NotFound("run", only)
