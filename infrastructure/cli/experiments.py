"""Commands about experiments: run a spec, show, replay or resume one (via the service layer)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import msgspec
import typer
from rich.table import Table

from domain.experiment import Evaluation, RunPurpose, SearchSpace, structured_id
from infrastructure.cli.base import (
    Quiet,
    RecordFormat,
    app,
    check_format,
    console,
    fail,
    format_cents,
    guarded,
    integer,
    print_json,
    service,
)
from infrastructure.views import ExperimentDetail, Iteration

experiment_app = typer.Typer(help="Parameter searches over runs of a twin.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


SamplesScheduler = Annotated[
    str | None,
    typer.Option(
        envvar="TWINLEDGER_SCHEDULER",
        help="Evaluate samples on a Dask scheduler tcp://HOST:8786 (or 'local')",
    ),
]


def _searched(dimensions: list[tuple[str, list[Any]]], parameters: dict[str, Any]) -> str:
    """Only the searched parameters, short: money in GCC, pattern params without prefix."""
    shown = []
    for name, _ in dimensions:
        value = parameters[name]
        if name == "budget_cents":
            shown.append(f"budget={format_cents(int(value)).removesuffix(' GCC')}")
        else:
            shown.append(f"{name.removeprefix('pattern_params.')}={value}")
    return ", ".join(shown)


def _objective(value: float | None, cents: bool = False) -> str:
    """A habitability score to 6 digits; a cost objective (integer cents) exactly."""
    if value is None:
        return "-"
    if cents or isinstance(value, int):  # the read table holds a cost as a float: exact < 2**53
        return f"{int(value)} cents"
    return f"{value:.6g}"


@experiment_app.command("run")
@guarded
def run(
    spec: Annotated[Path, typer.Argument(help="Experiment spec (TOML), see docs/experiments.md")],
    workers: Annotated[
        int | None,
        typer.Option(parser=integer("workers", 1, 32), help="Worker processes for sample runs"),
    ] = None,
    scheduler: SamplesScheduler = None,
    output: RecordFormat = "table",
    quiet: Quiet = False,
) -> None:
    """Run an experiment from its spec, printing each iteration as it is decided."""
    check_format(output)
    with service() as ledger:
        file = ledger.experiment_spec(spec)
        dimensions = file.spec().space.dimensions()

        show = _progress(dimensions, output == "json" or quiet)

        detail = ledger.run_experiment(
            file, workers=workers, scheduler=scheduler, started_by="cli", on_iteration=show
        )
    show_experiment(detail, output, quiet)


@experiment_app.command("resume")
@guarded
def resume(
    experiment_id: Annotated[str, typer.Argument(help="The experiment to carry on")],
    workers: Annotated[
        int,
        typer.Option(parser=integer("workers", 1, 32), help="Worker processes for sample runs"),
    ] = 1,
    scheduler: SamplesScheduler = None,
    output: RecordFormat = "table",
    quiet: Quiet = False,
) -> None:
    """Carry on an experiment whose process stopped (status running): same runs, same result."""
    check_format(output)
    with service() as ledger:
        stored = ledger.experiment_from_events(experiment_id)
        detail = ledger.resume_experiment(
            str(stored.id),
            workers=workers,
            scheduler=scheduler,
            on_iteration=_progress(stored.spec.space.dimensions(), output == "json" or quiet),
        )
    show_experiment(detail, output, quiet)


def _verdict(accepted: bool, feasible: bool, cut_at: int | None, pareto: bool) -> str:
    if cut_at is not None:
        return f"rejected (cut at year {cut_at})"
    verdict = "on front" if pareto and accepted else "accepted" if accepted else "rejected"
    return verdict if feasible else f"{verdict} (infeasible)"


def _progress(
    dimensions: list[tuple[str, list[Any]]], silent: bool
) -> Callable[[Evaluation], None]:
    """Prints each iteration as it is decided."""

    def show(evaluation: Evaluation) -> None:
        if silent:
            return
        verdict = _verdict(
            evaluation.accepted,
            evaluation.feasible,
            evaluation.cut_at_year if evaluation.cut else None,
            evaluation.pareto_front is not None,
        )
        cost = format_cents(evaluation.cost_cents)
        console.print(
            f"iter {evaluation.iteration:>3} {verdict:<21} "
            f"objective {_objective(evaluation.objective_value):>10}  cost {cost}"
            f"  [{_searched(dimensions, evaluation.parameters)}]",
            highlight=False,
        )

    return show


@experiment_app.command("show")
@guarded
def show(
    experiment_id: Annotated[str, typer.Argument(help="The experiment's id")],
    output: RecordFormat = "table",
    quiet: Quiet = False,
) -> None:
    """Show an experiment: every iteration, accepted or rejected, and the best candidate."""
    check_format(output)
    with service() as ledger:
        detail = ledger.experiment(experiment_id)
    show_experiment(detail, output, quiet)


@experiment_app.command("replay")
@guarded
def replay(
    experiment_id: Annotated[str, typer.Argument(help="The experiment to replay")],
    run: Annotated[
        str | None, typer.Option("--run", help="Only these runs: iter5:evaluation[:sample2]")
    ] = None,
    allow_other_engine: Annotated[
        bool, typer.Option(help="Replay even if recorded by another engine")
    ] = False,
    allow_other_version: Annotated[
        bool,
        typer.Option(help="Replay even if recorded by another engine or Optuna version"),
    ] = False,
    output: RecordFormat = "table",
) -> None:
    """Re-execute the experiment from its first event and check every run and decision."""
    check_format(output)
    with service() as ledger:
        verdict = ledger.replay_experiment(
            experiment_id,
            only=run,
            allow_other_engine=allow_other_engine,
            allow_other_version=allow_other_version,
        )
    if output == "json":
        print_json(verdict)
    elif verdict.identical:
        console.print(
            f"identical: {verdict.iterations} iterations, {verdict.runs_checked} runs re-simulated"
        )
    else:
        for difference in verdict.differences:
            console.print(f"differs: {difference}", highlight=False, markup=False)
    if not verdict.identical:
        count = len(verdict.differences)
        fail(f"experiment {experiment_id} does not replay identically ({count} differences)", 1)


def show_experiment(detail: ExperimentDetail, output: str, quiet: bool) -> None:
    if quiet:
        print(detail.experiment.id)
    elif output == "json":
        print_json(detail)
    else:
        print_experiment(detail)


def print_experiment(detail: ExperimentDetail) -> None:
    experiment = detail.experiment
    spec: dict[str, Any] = experiment.spec
    console.print(
        f"experiment {experiment.id}: {experiment.name}\n"
        f"  twin {experiment.digital_twin_id}, {experiment.pattern}, "
        f"{experiment.duration_years} years, {experiment.samples} samples, "
        f"master seed {experiment.master_seed}, objective {experiment.objective}\n"
        f"  strategy {experiment.strategy}, persistence {spec.get('persistence', 'full')}"
        + (
            f", early stop at year {spec['early_stop_at_year']} "
            f"(margin {spec.get('early_stop_margin', 0)})"
            if spec.get("early_stop_at_year") is not None
            else ""
        )
        + f"\n  status {experiment.status} ({experiment.reason or 'running'}), "
        f"engine {experiment.engine_version}"
        + (f", optuna {experiment.optuna_version}" if experiment.optuna_version else ""),
        highlight=False,
        soft_wrap=True,
    )
    dimensions = msgspec.convert(spec.get("space", {}), SearchSpace).dimensions()
    cents = experiment.objective == "minimize_cost_to_event"
    table = Table("iter", "searched", "objective", "cost (GCC)", "decision")
    pareto = experiment.pareto_front is not None
    for it in detail.iterations:
        table.add_row(
            f"{it.iteration} {it.purpose}",
            _searched(dimensions, it.parameters),
            _objective(it.objective_value, cents),
            format_cents(it.cost_cents).removesuffix(" GCC"),
            _verdict(
                bool(it.accepted), bool(it.feasible), it.cut_at_year if it.cut else None, pareto
            ),
        )
    console.print(table)
    if experiment.pareto_front is not None:
        print_front(dimensions, detail.iterations, experiment.pareto_front)
    if experiment.best_iteration is not None:
        console.print(
            f"best: iteration {experiment.best_iteration}, "
            f"objective {_objective(experiment.best_objective_value, cents)}"
        )
        if experiment.final_run_id is not None:
            ref = structured_id(
                UUID(experiment.id), experiment.best_iteration, RunPurpose.FINAL, None
            )
            console.print(
                f"final run: {ref} -> {experiment.final_run_id}", highlight=False, soft_wrap=True
            )


def print_front(
    dimensions: list[tuple[str, list[Any]]], iterations: list[Iteration], front: list[int]
) -> None:
    """The Pareto front's members, by cost."""
    table = Table("iter", "searched", "habitability", "cost (GCC)", title="Pareto front")
    members = [it for it in iterations if it.iteration in set(front)]
    for it in sorted(members, key=lambda it: (it.cost_cents, it.iteration)):
        table.add_row(
            str(it.iteration),
            _searched(dimensions, it.parameters),
            _objective(it.objective_value),
            format_cents(it.cost_cents).removesuffix(" GCC"),
        )
    console.print(table)
