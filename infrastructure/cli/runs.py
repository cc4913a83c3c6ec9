"""Commands about runs: queue, execute (with progress), cancel, show, and the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from domain.errors import RunBusy, ValidationError
from domain.run import SimulationRun
from domain.values import RunSummary
from infrastructure.application import TwinLedger
from infrastructure.cli.base import (
    app,
    console,
    errors,
    format_cents,
    guarded,
    integer,
    ledger,
    parse_cents,
    parse_params,
)
from infrastructure.cli.twins import print_twin  # noqa: F401

# --- runs ----------------------------------------------------------------------------------------


def _queue(
    application: TwinLedger,
    twin_id: str,
    pattern: str,
    years: int,
    budget: str,
    seed: int | None,
    tech_level: int,
    priority: str,
    param: list[str],
    spec: Path | None,
) -> str:
    custom_spec: dict[str, Any] | None = None
    if spec is not None:
        from infrastructure.inputs import read_spec_file

        custom_spec = read_spec_file(spec)
    run_id = application.queue_run(
        twin_id,
        pattern=pattern,
        duration_years=years,
        budget_cents=parse_cents(budget),
        seed=seed,
        tech_level=tech_level,
        priority=priority,
        pattern_params=parse_params(param),
        custom_spec=custom_spec,
    )
    return str(run_id)


PatternOption = Annotated[
    str, typer.Option(help="mars_terraform, venus_industrial, titan_fuel, europa_ocean, custom")
]
YearsOption = Annotated[
    int,
    typer.Option("--years", parser=integer("duration_years"), help="Duration in years, 1 to 1000"),
]
BudgetOption = Annotated[str, typer.Option(help="Budget in integer GCC cents")]
SeedOption = Annotated[
    int | None,
    typer.Option(parser=integer("seed"), help="PRNG seed (random and recorded if omitted)"),
]
TechOption = Annotated[
    int, typer.Option(parser=integer("tech_level"), help="Technology level, 1 to 10")
]
PriorityOption = Annotated[str, typer.Option(help="low, normal or high")]
ParamOption = Annotated[list[str], typer.Option("--param", help="Pattern parameter KEY=NUMBER")]
SpecOption = Annotated[Path | None, typer.Option(help="Custom pattern spec (JSON or TOML)")]
SchedulerOption = Annotated[
    str | None,
    typer.Option(
        envvar="TWINLEDGER_SCHEDULER",
        help="Dask scheduler tcp://HOST:8786 (or 'local' for a LocalCluster); default: here",
    ),
]
DEFAULT_BUDGET = "1000000000000"


@app.command()
@guarded
def queue(
    twin_id: str,
    pattern: PatternOption = "mars_terraform",
    years: YearsOption = 100,
    budget: BudgetOption = DEFAULT_BUDGET,
    seed: SeedOption = None,
    tech_level: TechOption = 5,
    priority: PriorityOption = "normal",
    param: ParamOption = [],  # noqa: B006  (typer reads the default)
    spec: SpecOption = None,
) -> None:
    """Queue a run without executing it; prints the run id."""
    with ledger() as application:
        console.print(
            _queue(
                application,
                twin_id,
                pattern,
                years,
                budget,
                seed,
                tech_level,
                priority,
                param,
                spec,
            )
        )


@app.command()
@guarded
def run(
    twin_id: str,
    pattern: PatternOption = "mars_terraform",
    years: YearsOption = 100,
    budget: BudgetOption = DEFAULT_BUDGET,
    seed: SeedOption = None,
    tech_level: TechOption = 5,
    priority: PriorityOption = "normal",
    param: ParamOption = [],  # noqa: B006
    spec: SpecOption = None,
    chunk: Annotated[
        int | None,
        typer.Option(
            parser=integer("chunk", 1),
            help="Years saved per transaction [default: max(50, years/4)]",
        ),
    ] = None,
    scheduler: SchedulerOption = None,
) -> None:
    """Queue a run on a twin and execute it with a progress bar."""
    with ledger() as application:
        run_id = _queue(
            application, twin_id, pattern, years, budget, seed, tech_level, priority, param, spec
        )
        if scheduler:
            from infrastructure.cli.cluster import execute_elsewhere

            print_run(execute_elsewhere(application, run_id, scheduler=scheduler))
            return
        finished = execute_with_progress(application, run_id, chunk)
        print_run(finished)


@app.command()
@guarded
def execute(
    run_id: Annotated[str | None, typer.Argument(help="The run (or use --queued)")] = None,
    chunk: Annotated[
        int | None,
        typer.Option(
            parser=integer("chunk", 1),
            help="Years saved per transaction [default: max(50, years/4)]",
        ),
    ] = None,
    queued: Annotated[
        bool, typer.Option("--queued", help="Drain the queue (and resume orphaned runs)")
    ] = False,
    limit: Annotated[
        int | None,
        typer.Option(parser=integer("limit", 1, 1_000_000), help="With --queued: at most N runs"),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            parser=integer("workers", 1, 64),
            help="With --queued and no scheduler: local processes",
        ),
    ] = 1,
    scheduler: SchedulerOption = None,
) -> None:
    """Execute a queued run, or resume one interrupted by a crash; --queued drains the queue."""
    from infrastructure.cli import cluster

    with ledger() as application:
        if queued:
            if run_id is not None:
                raise ValidationError("run_id", "give a run id or --queued, not both")
            cluster.drain(application, limit=limit, scheduler=scheduler, workers=workers)
        elif run_id is None:
            raise ValidationError("run_id", "missing: give a run id, or --queued")
        elif scheduler:
            print_run(cluster.execute_elsewhere(application, run_id, scheduler=scheduler))
        else:
            print_run(execute_with_progress(application, run_id, chunk))


@app.command()
@guarded
def cancel(
    run_id: str,
    reason: Annotated[str, typer.Option()] = "",
    by: Annotated[str, typer.Option()] = "cli",
) -> None:
    """Cancel a queued or running run (a running one stops at its next chunk)."""
    with ledger() as application:
        application.cancel_run(run_id, reason=reason, by=by)
        print_run(application.get_run(run_id))


@app.command("show-run")
@guarded
def show_run(
    run_id: Annotated[str, typer.Argument(help="Run id, or EXPERIMENT_ID-iterN-PURPOSE[-sampleK]")],
) -> None:
    """Show one run, read from its events."""
    with ledger() as application:
        if len(run_id.strip()) > 36:
            from infrastructure.experiments import resolve_run

            print_run(application.get_run(resolve_run(application, run_id.strip())))
        else:
            print_run(application.get_run(run_id))


@app.command()
@guarded
def demo(
    years: Annotated[int, typer.Option("--years", parser=integer("duration_years"))] = 100,
    seed: Annotated[int, typer.Option(parser=integer("seed"))] = 42,
) -> None:
    """Clone Mars, run mars_terraform for 100 years with a progress bar, print the summary."""
    with ledger() as application:
        console.print(f"ledger: {application.database.describe() if application.database else '?'}")
        twin_id = application.clone_twin(name="Mars (demo)", body="mars", created_by="demo")
        console.print(f"cloned Mars into twin {twin_id}")
        run_id = application.queue_run(
            twin_id,
            pattern="mars_terraform",
            duration_years=years,
            budget_cents=int(DEFAULT_BUDGET),
            seed=seed,
            initiated_by="demo",
        )
        print_run(execute_with_progress(application, str(run_id), None))


# --- output --------------------------------------------------------------------------------------


def execute_with_progress(application: TwinLedger, run_id: str, chunk: int | None) -> SimulationRun:
    from infrastructure.executors import run_claim

    stored = application.get_run(run_id)
    assert application.database is not None
    claim = run_claim(application.database, stored.id)
    if not claim.try_acquire():
        raise RunBusy(f"run_id: run {stored.id} is being executed by another process right now")
    try:
        return _execute_claimed_with_progress(application, stored, chunk)
    finally:
        claim.release()


def _execute_claimed_with_progress(
    application: TwinLedger, stored: SimulationRun, chunk: int | None
) -> SimulationRun:
    with Progress(
        TextColumn(f"run {stored.id} [{stored.pattern}]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("years"),
        TimeElapsedColumn(),
        console=errors,
        transient=False,
    ) as progress:
        task = progress.add_task(
            "run", total=stored.duration_years, completed=stored.years_recorded
        )

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done)

        return application.execute_run(stored.id, chunk_years=chunk, on_progress=advance)


def print_run(run: SimulationRun) -> None:
    table = Table(show_header=False, title=f"run {run.id}")
    rows = [
        ("twin", str(run.twin_id)),
        ("pattern", str(run.pattern)),
        ("status", str(run.status)),
        ("progress", f"{run.years_recorded}/{run.duration_years} years"),
        ("seed", str(run.seed)),
        ("engine", run.engine_version),
        ("budget", format_cents(run.parameters.budget_cents)),
    ]
    if run.error_message:
        rows.append(("reason", run.error_message))
    if run.summary is not None:
        rows.extend(summary_rows(run.summary))
        rows.append(("digest", run.result_digest or ""))
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def summary_rows(summary: RunSummary) -> list[tuple[str, str]]:
    metrics = summary.success_metrics
    start, end = summary.start_state, summary.end_state
    rows = [
        ("habitability", f"{metrics.habitability_score:.3f}"),
        ("timeline efficiency", f"{metrics.timeline_efficiency:.3f}"),
        ("resource efficiency", f"{metrics.resource_efficiency:.3f}"),
        ("cost efficiency", f"{metrics.cost_efficiency:.3f}"),
        ("temperature", f"{start.temperature_k:.1f} K -> {end.temperature_k:.1f} K"),
        ("pressure", f"{start.pressure_kpa:.3f} kPa -> {end.pressure_kpa:.3f} kPa"),
        ("spent", format_cents(summary.total_spend_cents)),
        ("revenue", format_cents(summary.total_revenue_cents)),
        ("final balance", format_cents(summary.final_balance_cents)),
    ]
    for event in summary.key_events:
        rows.append((f"year {event.year}", f"{event.name}: {event.description}"))
    return rows
