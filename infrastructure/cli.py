"""The ``twinledger`` command line: a thin layer over the TwinLedger application.

Errors a user can fix (bad input, unknown ids, refused transitions) print one line naming the
field and exit with code 2; nothing is written. Other failures exit 1 with one line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from domain.catalog import CATALOG
from domain.errors import TwinLedgerError, ValidationError
from domain.run import SimulationRun
from domain.twin import DigitalTwin
from domain.values import RunSummary
from infrastructure.application import TwinLedger
from infrastructure.inputs import parse_duration

app = typer.Typer(
    help="TwinLedger: an event-sourced ledger for digital-twin simulations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)
T = TypeVar("T")

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="TWINLEDGER_DATABASE_URL",
        help="Database: a SQLite path (default ./twinledger.db) or postgresql://...",
        show_envvar=True,
    ),
]


class State:
    db: str | None = None


state = State()


@app.callback()
def _global(db: DbOption = None) -> None:
    state.db = db


@contextmanager
def ledger() -> Iterator[TwinLedger]:
    application = TwinLedger.open(state.db)
    try:
        yield application
    finally:
        application.close()


def fail(message: str, code: int) -> None:
    errors.print(f"error: {message}", markup=False, highlight=False)
    raise typer.Exit(code)


def guarded(command: Callable[..., T]) -> Callable[..., T]:
    """Turn ledger errors into one-line messages and exit codes instead of tracebacks."""
    import functools

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return command(*args, **kwargs)
        except TwinLedgerError as error:
            fail(str(error), 2)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as error:  # an unexpected failure: still one line, exit code 1
            fail(f"{type(error).__name__}: {error}", 1)
        raise AssertionError("unreachable")

    return wrapper


def parse_cents(text: str, field: str = "budget_cents") -> int:
    cleaned = text.replace("_", "").strip()
    if not cleaned.isdigit():
        raise ValidationError(
            field, f"{text!r} must be an integer number of GCC cents (no floats, no signs)"
        )
    return int(cleaned)


def parse_params(pairs: list[str]) -> dict[str, float | int]:
    params: dict[str, float | int] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValidationError("param", f"{pair!r} is not KEY=NUMBER")
        try:
            params[key] = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            raise ValidationError(f"pattern_params.{key}", f"{value!r} is not a number") from None
    return params


# --- twins ---------------------------------------------------------------------------------------


@app.command()
@guarded
def bodies() -> None:
    """List the built-in reference bodies a twin can be cloned from."""
    table = Table("key", "name", "T (K)", "P (kPa)", "g (m/s²)", "type")
    for body in CATALOG.values():
        atmosphere = body.state.atmosphere
        table.add_row(
            body.key,
            body.name,
            f"{atmosphere.mean_temperature_k:g}",
            f"{atmosphere.surface_pressure_kpa:g}",
            f"{body.state.geosphere.surface_gravity_m_s2:g}",
            body.simulation_type,
        )
    console.print(table)


@app.command()
@guarded
def clone(
    body: Annotated[str | None, typer.Argument(help="Catalog body key (see `twinledger bodies`)")] = None,
    name: Annotated[str, typer.Option(help="Name of the new twin")] = "",
    from_file: Annotated[Path | None, typer.Option(help="JSON file describing a body")] = None,
    expires_in: Annotated[str, typer.Option(help="Lifetime: 30d, 12h, 90m")] = "30d",
    description: Annotated[str | None, typer.Option()] = None,
    created_by: Annotated[str, typer.Option()] = "cli",
    simulation_type: Annotated[str | None, typer.Option("--type")] = None,
) -> None:
    """Clone a body into a new digital twin and print its id."""
    lifetime = parse_duration(expires_in)
    with ledger() as application:
        twin_id = application.clone_twin(
            name=name or (body or "").capitalize() or "twin",
            body=body,
            body_file=None if from_file is None else str(from_file),
            expires_in=lifetime,
            description=description,
            created_by=created_by,
            simulation_type=simulation_type,
        )
        print_twin(application.get_twin(twin_id))


@app.command()
@guarded
def delete(
    twin_id: str,
    reason: Annotated[str, typer.Option()] = "",
    by: Annotated[str, typer.Option()] = "cli",
) -> None:
    """Soft-delete a twin: it keeps its history and accepts no new runs."""
    with ledger() as application:
        application.delete_twin(twin_id, by=by, reason=reason)
        print_twin(application.get_twin(twin_id))


@app.command()
@guarded
def twin(twin_id: str) -> None:
    """Show one twin, read from its events."""
    with ledger() as application:
        print_twin(application.get_twin(twin_id))


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


PatternOption = Annotated[str, typer.Option(help="mars_terraform, venus_industrial, titan_fuel, europa_ocean, custom")]
YearsOption = Annotated[int, typer.Option("--years", help="Duration in years, 1 to 1000")]
BudgetOption = Annotated[str, typer.Option(help="Budget in integer GCC cents")]
SeedOption = Annotated[int | None, typer.Option(help="PRNG seed (random and recorded if omitted)")]
TechOption = Annotated[int, typer.Option(help="Technology level, 1 to 10")]
PriorityOption = Annotated[str, typer.Option(help="low, normal or high")]
ParamOption = Annotated[list[str], typer.Option("--param", help="Pattern parameter KEY=NUMBER")]
SpecOption = Annotated[Path | None, typer.Option(help="Custom pattern spec (JSON or TOML)")]
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
            _queue(application, twin_id, pattern, years, budget, seed, tech_level, priority, param, spec)
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
    chunk: Annotated[int, typer.Option(help="Years saved per transaction")] = 50,
) -> None:
    """Queue a run on a twin and execute it with a progress bar."""
    with ledger() as application:
        run_id = _queue(
            application, twin_id, pattern, years, budget, seed, tech_level, priority, param, spec
        )
        finished = execute_with_progress(application, run_id, chunk)
        print_run(finished)


@app.command()
@guarded
def execute(
    run_id: str,
    chunk: Annotated[int, typer.Option(help="Years saved per transaction")] = 50,
) -> None:
    """Execute a queued run, or resume one interrupted by a crash."""
    with ledger() as application:
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
def show_run(run_id: str) -> None:
    """Show one run, read from its events."""
    with ledger() as application:
        print_run(application.get_run(run_id))


@app.command()
@guarded
def demo(
    years: Annotated[int, typer.Option("--years")] = 100,
    seed: Annotated[int, typer.Option()] = 42,
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
        print_run(execute_with_progress(application, str(run_id), 50))


# --- output --------------------------------------------------------------------------------------


def execute_with_progress(application: TwinLedger, run_id: str, chunk: int) -> SimulationRun:
    stored = application.get_run(run_id)
    with Progress(
        TextColumn(f"run {stored.id} [{stored.pattern}]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("years"),
        TimeElapsedColumn(),
        console=errors,
        transient=False,
    ) as progress:
        task = progress.add_task("run", total=stored.duration_years, completed=stored.years_recorded)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done)

        return application.execute_run(stored.id, chunk_years=chunk, on_progress=advance)


def print_twin(twin: DigitalTwin) -> None:
    table = Table(show_header=False, title=f"twin {twin.id}")
    atmosphere = twin.state.atmosphere
    rows = [
        ("name", twin.name),
        ("status", twin.status),
        ("source body", f"{twin.source_body} ({twin.solar_system})"),
        ("simulation type", twin.simulation_type),
        ("created by", twin.created_by),
        ("expires at", twin.expires_at.isoformat() if twin.expires_at else "-"),
        ("temperature", f"{atmosphere.mean_temperature_k:g} K"),
        ("pressure", f"{atmosphere.surface_pressure_kpa:g} kPa"),
    ]
    if twin.ended_reason:
        rows.append(("ended", f"{twin.ended_reason} at {twin.ended_at}"))
    for key, value in rows:
        table.add_row(key, str(value))
    console.print(table)


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


def format_cents(cents: int) -> str:
    """Integer cents as GCC with two decimals, computed with integers only."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole:,}.{part:02d} GCC"


def to_json(value: Any) -> str:
    return json.dumps(msgspec.to_builtins(value), indent=2)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        errors.print("interrupted")
        sys.exit(130)
