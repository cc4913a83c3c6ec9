"""Commands about experiments: run a spec, show one, replay one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from domain.experiment import Evaluation, Experiment, RunPurpose, structured_id
from infrastructure.cli.base import app, console, fail, format_cents, guarded, integer, ledger
from infrastructure.experiments import (
    get_experiment,
    read_experiment_file,
    replay_experiment,
    run_experiment,
)

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


def _objective(value: float | None) -> str:
    """A habitability score to 6 digits; a cost objective (integer cents) exactly."""
    if value is None:
        return "-"
    return f"{value} cents" if isinstance(value, int) else f"{value:.6g}"


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
) -> None:
    """Run an experiment from its spec, printing each iteration as it is decided."""
    file = read_experiment_file(spec)
    with ledger() as application:

        def show(evaluation: Evaluation) -> None:
            verdict = "accepted" if evaluation.accepted else "rejected"
            if not evaluation.feasible:
                verdict += " (infeasible)"
            cost = format_cents(evaluation.cost_cents)
            console.print(
                f"iter {evaluation.iteration:>3} {verdict:<21} "
                f"objective {_objective(evaluation.objective_value):>10}  cost {cost}"
                f"  [{_searched(file.spec().space.dimensions(), evaluation.parameters)}]",
                highlight=False,
            )

        experiment = run_experiment(
            application, file, workers=workers, scheduler=scheduler, on_iteration=show
        )
        print_experiment(experiment)


@experiment_app.command("show")
@guarded
def show(experiment_id: str) -> None:
    """Show an experiment: every iteration, accepted or rejected, and the best candidate."""
    with ledger() as application:
        print_experiment(get_experiment(application, experiment_id))


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
) -> None:
    """Re-execute the experiment from its first event and check every run and decision."""
    with ledger() as application:
        report = replay_experiment(
            application, experiment_id, only=run, allow_other_engine=allow_other_engine
        )
    if report.identical:
        console.print(
            f"identical: {report.iterations} iterations, {report.runs_checked} runs re-simulated"
        )
        return
    for difference in report.differences:
        console.print(f"differs: {difference}", highlight=False, markup=False)
    count = len(report.differences)
    fail(f"experiment {experiment_id} does not replay identically ({count} differences)", 1)


def print_experiment(experiment: Experiment) -> None:
    spec = experiment.spec
    console.print(
        f"experiment {experiment.id}: {spec.name}\n"
        f"  twin {experiment.twin_id}, {spec.pattern}, {spec.duration_years} years, "
        f"{spec.samples} samples, master seed {spec.master_seed}, objective {spec.objective}\n"
        f"  status {experiment.status} ({experiment.reason or 'running'}), "
        f"engine {experiment.engine_version}",
        highlight=False,
    )
    dimensions = spec.space.dimensions()
    table = Table("iter", "searched", "objective", "cost (GCC)", "decision")
    for it in experiment.iterations:
        decision = "accepted" if it.accepted else "rejected"
        table.add_row(
            f"{it.iteration} {it.purpose}",
            _searched(dimensions, it.parameters),
            _objective(it.objective_value),
            format_cents(it.cost_cents).removesuffix(" GCC"),
            decision if it.feasible else f"{decision} (infeasible)",
        )
    console.print(table)
    best = experiment.best
    if best is not None:
        console.print(
            f"best: iteration {best.iteration}, objective {_objective(best.objective_value)}"
        )
        if experiment.final_run is not None:
            ref = structured_id(experiment.id, best.iteration, RunPurpose.FINAL, None)
            console.print(f"final run: {ref} -> {experiment.final_run.run_id}", highlight=False)
