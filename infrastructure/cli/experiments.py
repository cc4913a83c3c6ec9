"""Commands about experiments: run a spec, show one, replay one (via the service layer)."""

from __future__ import annotations

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
from infrastructure.views import ExperimentDetail

experiment_app = typer.Typer(help="Parameter searches over runs of a twin.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


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
    scheduler: Annotated[
        str | None,
        typer.Option(
            envvar="TWINLEDGER_SCHEDULER",
            help="Evaluate samples on a Dask scheduler tcp://HOST:8786 (or 'local')",
        ),
    ] = None,
    output: RecordFormat = "table",
    quiet: Quiet = False,
) -> None:
    """Run an experiment from its spec, printing each iteration as it is decided."""
    check_format(output)
    with service() as ledger:
        file = ledger.experiment_spec(spec)
        dimensions = file.spec().space.dimensions()

        def show(evaluation: Evaluation) -> None:
            if output == "json" or quiet:
                return
            verdict = "accepted" if evaluation.accepted else "rejected"
            if not evaluation.feasible:
                verdict += " (infeasible)"
            cost = format_cents(evaluation.cost_cents)
            console.print(
                f"iter {evaluation.iteration:>3} {verdict:<21} "
                f"objective {_objective(evaluation.objective_value):>10}  cost {cost}"
                f"  [{_searched(dimensions, evaluation.parameters)}]",
                highlight=False,
            )

        detail = ledger.run_experiment(
            file, workers=workers, scheduler=scheduler, started_by="cli", on_iteration=show
        )
    show_experiment(detail, output, quiet)


@experiment_app.command("show")
@guarded
def show(experiment_id: str, output: RecordFormat = "table", quiet: Quiet = False) -> None:
    """Show an experiment: every iteration, accepted or rejected, and the best candidate."""
    check_format(output)
    with service() as ledger:
        detail = ledger.experiment(experiment_id)
    show_experiment(detail, output, quiet)


@experiment_app.command("replay")
@guarded
def replay(
    experiment_id: str,
    run: Annotated[
        str | None, typer.Option("--run", help="Only these runs: iter5:evaluation[:sample2]")
    ] = None,
    allow_other_engine: Annotated[
        bool, typer.Option(help="Replay even if recorded by another engine")
    ] = False,
    output: RecordFormat = "table",
) -> None:
    """Re-execute the experiment from its first event and check every run and decision."""
    check_format(output)
    with service() as ledger:
        verdict = ledger.replay_experiment(
            experiment_id, only=run, allow_other_engine=allow_other_engine
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
        f"  status {experiment.status} ({experiment.reason or 'running'}), "
        f"engine {experiment.engine_version}",
        highlight=False,
        soft_wrap=True,
    )
    dimensions = msgspec.convert(spec.get("space", {}), SearchSpace).dimensions()
    cents = experiment.objective == "minimize_cost_to_event"
    table = Table("iter", "searched", "objective", "cost (GCC)", "decision")
    for it in detail.iterations:
        decision = "accepted" if it.accepted else "rejected"
        table.add_row(
            f"{it.iteration} {it.purpose}",
            _searched(dimensions, it.parameters),
            _objective(it.objective_value, cents),
            format_cents(it.cost_cents).removesuffix(" GCC"),
            decision if it.feasible else f"{decision} (infeasible)",
        )
    console.print(table)
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
