"""Commands about runs: queue, execute (with progress), cancel, show, and the demo.

Each calls the service layer (infrastructure/service.py) and prints the run's simulation_runs
row: a table, ``--format json``, or ``-q`` for the id alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from domain.errors import ValidationError
from infrastructure.cli.base import (
    Quiet,
    RecordFormat,
    app,
    check_format,
    console,
    errors,
    format_cents,
    guarded,
    integer,
    parse_cents,
    parse_params,
    print_json,
    service,
)
from infrastructure.service import Ledger
from infrastructure.views import Run, RunLineage

# --- runs ----------------------------------------------------------------------------------------


def _queue(
    ledger: Ledger,
    twin_id: str,
    pattern: str,
    years: int,
    budget: str,
    seed: int | None,
    tech_level: int,
    priority: str,
    param: list[str],
    spec: Path | None,
    intervene: list[str] | None = None,
) -> Run:
    custom_spec: dict[str, Any] | None = None
    if spec is not None:
        from infrastructure.inputs import read_spec_file

        custom_spec = read_spec_file(spec)
    return ledger.queue_run(
        twin_id,
        pattern=pattern,
        years=years,
        budget_cents=parse_cents(budget),
        seed=seed,
        tech_level=tech_level,
        priority=priority,
        params=parse_params(param),
        custom_spec=custom_spec,
        initiated_by="cli",
        interventions=intervene or [],
    )


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
InterveneOption = Annotated[
    list[str],
    typer.Option(
        "--intervene",
        help="YEAR:KEY=VALUE at the start of that year: budget_cents=+N|-N|N, "
        "hazard=dust_storm|solar_flare|asteroid_impact, param.NAME=VALUE (repeatable)",
    ),
]
ChunkOption = Annotated[
    int | None,
    typer.Option(
        parser=integer("chunk", 1),
        help="Years saved per transaction",
        show_default="a quarter of the run, at least 50",
    ),
]
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
    twin_id: Annotated[str, typer.Argument(help="The twin to run on")],
    pattern: PatternOption = "mars_terraform",
    years: YearsOption = 100,
    budget: BudgetOption = DEFAULT_BUDGET,
    seed: SeedOption = None,
    tech_level: TechOption = 5,
    priority: PriorityOption = "normal",
    param: ParamOption = [],  # noqa: B006  (typer reads the default)
    spec: SpecOption = None,
    output: Annotated[str, typer.Option("--format", help="id (the default) or json")] = "id",
    quiet: Quiet = False,
    intervene: InterveneOption = [],  # noqa: B006
) -> None:
    """Queue a run without executing it; prints the run id (--format json: the run)."""
    check_format(output, ("id", "json"))
    with service() as ledger:
        queued = _queue(
            ledger,
            twin_id,
            pattern,
            years,
            budget,
            seed,
            tech_level,
            priority,
            param,
            spec,
            intervene,
        )
    show_run(queued, "json" if output == "json" else "id", quiet)


@app.command()
@guarded
def run(
    twin_id: Annotated[str, typer.Argument(help="The twin to run on")],
    pattern: PatternOption = "mars_terraform",
    years: YearsOption = 100,
    budget: BudgetOption = DEFAULT_BUDGET,
    seed: SeedOption = None,
    tech_level: TechOption = 5,
    priority: PriorityOption = "normal",
    param: ParamOption = [],  # noqa: B006
    spec: SpecOption = None,
    chunk: ChunkOption = None,
    scheduler: SchedulerOption = None,
    output: RecordFormat = "table",
    quiet: Quiet = False,
    intervene: InterveneOption = [],  # noqa: B006
) -> None:
    """Queue a run on a twin and execute it with a progress bar (on stderr)."""
    check_format(output)
    with service() as ledger:
        queued = _queue(
            ledger,
            twin_id,
            pattern,
            years,
            budget,
            seed,
            tech_level,
            priority,
            param,
            spec,
            intervene,
        )
        if scheduler:
            from infrastructure.cli.cluster import execute_elsewhere

            execute_elsewhere(ledger.application, queued.id, scheduler=scheduler)
            finished = ledger.run(queued.id)
        else:
            finished = execute_with_progress(ledger, queued, chunk)
    show_run(finished, output, quiet)


@app.command()
@guarded
def execute(
    run_id: Annotated[str | None, typer.Argument(help="The run (or use --queued)")] = None,
    chunk: ChunkOption = None,
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
    output: RecordFormat = "table",
    quiet: Quiet = False,
) -> None:
    """Execute a queued run, or resume one interrupted by a crash; --queued drains the queue."""
    from infrastructure.cli import cluster

    check_format(output)
    with service() as ledger:
        if queued:
            if run_id is not None:
                raise ValidationError("run_id", "give a run id or --queued, not both")
            cluster.drain(ledger.application, limit=limit, scheduler=scheduler, workers=workers)
            return
        if run_id is None:
            raise ValidationError("run_id", "missing: give a run id, or --queued")
        if scheduler:
            executed = cluster.execute_elsewhere(ledger.application, run_id, scheduler=scheduler)
            finished = ledger.run(str(executed.id))
        else:
            finished = execute_with_progress(ledger, ledger.run(run_id), chunk)
    show_run(finished, output, quiet)


@app.command()
@guarded
def cancel(
    run_id: Annotated[str, typer.Argument(help="The run to cancel")],
    reason: Annotated[str, typer.Option(help="Why (recorded in RunCancelled)")] = "",
    by: Annotated[str, typer.Option(help="Who cancels it (recorded)")] = "cli",
    output: RecordFormat = "table",
    quiet: Quiet = False,
) -> None:
    """Cancel a queued or running run (a running one stops at its next chunk)."""
    check_format(output)
    with service() as ledger:
        cancelled = ledger.cancel_run(run_id, reason=reason, by=by)
    show_run(cancelled, output, quiet)


@app.command()
@guarded
def fork(
    run_id: Annotated[str, typer.Argument(help="The parent run (id or structured id)")],
    at_year: Annotated[
        int,
        typer.Option(
            "--at-year",
            parser=integer("at_year"),
            help="Years 1..N are the parent's; changes from N+1",
        ),
    ],
    param: ParamOption = [],  # noqa: B006
    budget: Annotated[
        str | None, typer.Option(help="The fork's budget in integer cents (the balance moves)")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            parser=integer("seed"), help="A new PRNG stream from year N+1 (else the parent's)"
        ),
    ] = None,
    tech_level: Annotated[
        int | None,
        typer.Option(parser=integer("tech_level"), help="Technology level from N+1"),
    ] = None,
    priority: Annotated[str | None, typer.Option(help="low, normal or high from N+1")] = None,
    intervene: InterveneOption = [],  # noqa: B006
    queue_only: Annotated[
        bool, typer.Option("--queue-only", help="Queue the fork, print its id, do not execute")
    ] = False,
    chunk: ChunkOption = None,
    output: RecordFormat = "table",
    quiet: Quiet = False,
) -> None:
    """Fork a run at a year with changes (what if...), then execute the fork."""
    check_format(output)
    with service() as ledger:
        forked = ledger.fork_run(
            run_id,
            at_year=at_year,
            budget_cents=None if budget is None else parse_cents(budget),
            tech_level=tech_level,
            priority=priority,
            params=parse_params(param),
            seed=seed,
            interventions=intervene,
            initiated_by="cli",
        )
        if queue_only:
            show_run(forked, "id", quiet)
            return
        finished = execute_with_progress(ledger, forked, chunk)
        lineage = ledger.lineage(finished.id) if output == "table" and not quiet else None
    show_run(finished, output, quiet, lineage)


@app.command("show-run")
@guarded
def show_run_command(
    run_id: Annotated[str, typer.Argument(help="Run id, or EXPERIMENT_ID-iterN-PURPOSE[-sampleK]")],
    output: RecordFormat = "table",
    quiet: Quiet = False,
) -> None:
    """Show one run: its simulation_runs row, with the summary once completed.

    The table adds its interventions, fork lineage, forks and provenance (from its events);
    the JSON adds `forked_from` (parent, fork year, changes) and `lineage` (with the forks)."""
    check_format(output)
    with service() as ledger:
        ledger.run_from_events(run_id)  # an unreadable stream is named here (exit 1)
        if output == "json" and not quiet:
            print_json(ledger.run_detail(run_id))  # the row with forked_from and lineage
            return
        found = ledger.run(run_id)
        lineage = ledger.lineage(found.id) if output == "table" and not quiet else None
    show_run(found, output, quiet, lineage)


@app.command()
@guarded
def demo(
    years: Annotated[
        int, typer.Option("--years", parser=integer("duration_years"), help="Years to simulate")
    ] = 100,
    seed: Annotated[int, typer.Option(parser=integer("seed"), help="PRNG seed")] = 42,
) -> None:
    """Clone Mars, run mars_terraform for 100 years with a progress bar, print the summary."""
    with service() as ledger:
        console.print(f"ledger: {ledger.database.describe()}")
        twin = ledger.clone_twin(name="Mars (demo)", body="mars", created_by="demo")
        console.print(f"cloned Mars into twin {twin.id}")
        queued = ledger.queue_run(
            twin.id,
            pattern="mars_terraform",
            years=years,
            budget_cents=int(DEFAULT_BUDGET),
            seed=seed,
            initiated_by="demo",
        )
        print_run(execute_with_progress(ledger, queued, None))


# --- output --------------------------------------------------------------------------------------


def execute_with_progress(ledger: Ledger, stored: Run, chunk: int | None) -> Run:
    """Execute with a progress bar; the service takes the run's fleet-wide claim
    (infrastructure/executors.py): one executor at a time, whatever process or machine asks."""
    with Progress(
        TextColumn(f"run {stored.id} [{stored.pattern}]", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("years"),
        TimeElapsedColumn(),
        console=errors,
        transient=False,
    ) as progress:
        task = progress.add_task("run", total=stored.duration_years, completed=stored.current_year)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done)

        return ledger.execute_run(stored.id, chunk_years=chunk, on_progress=advance)


def show_run(run: Run, output: str, quiet: bool, lineage: RunLineage | None = None) -> None:
    if quiet or output == "id":
        print(run.id)
    elif output == "json":
        print_json(run)
    else:
        print_run(run, lineage)


def lineage_rows(lineage: RunLineage) -> list[tuple[str, str]]:
    """Interventions, the fork lineage (older fork points, then the one that made this run,
    with its changes), the forks made from the run, and the provenance."""
    rows = [("intervention", text) for text in lineage.interventions]
    for point in lineage.lineage[:-1]:
        rows.append(("lineage", f"{point.parent_run_id} after year {point.at_year}"))
    if lineage.lineage:
        point = lineage.lineage[-1]
        rows.append(("forked from", f"{point.parent_run_id} after year {point.at_year}"))
        rows.append(("changes", point.described))
    rows.extend(("fork", f"{child.run_id} after year {child.at_year}") for child in lineage.forks)
    provenance = lineage.provenance
    if provenance is not None:
        packages = ", ".join(f"{k} {v}" for k, v in sorted(provenance.packages.items()))
        rows.append(("provenance", f"engine {provenance.engine_version}, {provenance.python}"))
        rows.append(("packages", packages))
        rows.append(("git commit", provenance.git_commit or "(not a git checkout)"))
        rows.append(("host", provenance.host))
    return rows


def print_run(run: Run, lineage: RunLineage | None = None) -> None:
    table = Table(show_header=False, title=f"run {run.id}")
    parameters: dict[str, Any] = run.parameters or {}
    rows = [
        ("twin", run.digital_twin_id),
        ("pattern", run.pattern),
        ("status", run.status),
        (
            "progress",
            f"{run.current_year}/{run.duration_years} years"
            if run.persistence == "full"
            else f"summary only ({run.status}; years re-derived by replay)",
        ),
        ("seed", str(run.seed)),
        ("engine", run.engine_version),
        ("budget", format_cents(run.budget_cents)),
        ("tech level", str(parameters.get("tech_level", "-"))),
        ("priority", str(parameters.get("priority", "-"))),
    ]
    rows.extend(
        (f"param {name}", f"{value:g}")
        for name, value in sorted((parameters.get("pattern_params") or {}).items())
    )
    if run.error_message:
        rows.append(("reason", run.error_message))
    if lineage is not None:
        rows.extend(lineage_rows(lineage))
    if run.results is not None:
        rows.extend(summary_rows(run.results))
        rows.append(("digest", run.result_digest or ""))
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The RunSummary as RunCompleted holds it (simulation_runs.results)."""
    metrics = summary["success_metrics"]
    start, end = summary["start_state"], summary["end_state"]
    rows = [
        ("habitability", f"{metrics['habitability_score']:.3f}"),
        ("timeline efficiency", f"{metrics['timeline_efficiency']:.3f}"),
        ("resource efficiency", f"{metrics['resource_efficiency']:.3f}"),
        ("cost efficiency", f"{metrics['cost_efficiency']:.3f}"),
        ("temperature", f"{start['temperature_k']:.1f} K -> {end['temperature_k']:.1f} K"),
        ("pressure", f"{start['pressure_kpa']:.3f} kPa -> {end['pressure_kpa']:.3f} kPa"),
        ("spent", format_cents(summary["total_spend_cents"])),
        ("revenue", format_cents(summary["total_revenue_cents"])),
        ("final balance", format_cents(summary["final_balance_cents"])),
    ]
    for event in summary["key_events"]:
        rows.append((f"year {event['year']}", f"{event['name']}: {event['description']}"))
    return rows
