"""Commands that end things: expire twins, extend a twin, apply retention to the read tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from domain.errors import ValidationError
from infrastructure.cli.base import (
    Quiet,
    RecordFormat,
    app,
    check_format,
    console,
    errors,
    guarded,
    integer,
    print_json,
    service,
)
from infrastructure.cli.tables import twins_app
from infrastructure.expiry import DEFAULT_BATCH
from infrastructure.inputs import parse_duration
from infrastructure.retention import (
    DEFAULT_EXPERIMENTS,
    DEFAULT_RESULTS,
    DEFAULT_RUNS,
    DEFAULT_TWINS,
    Windows,
)

NowOption = Annotated[
    str | None, typer.Option("--now", help="Act as if it were this time (ISO 8601; default: now)")
]


def parse_now(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError(
            "now", f"{text!r} is not an ISO 8601 time like 2031-01-01T00:00:00Z"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@app.command()
@guarded
def expire(
    now: NowOption = None,
    batch: Annotated[
        int, typer.Option(parser=integer("batch", 1, 10_000), help="Twins per write")
    ] = DEFAULT_BATCH,
    output: RecordFormat = "table",
) -> None:
    """End every twin past its expires_at (TwinExpired), cancelling its runs first. Idempotent."""
    check_format(output)
    moment = parse_now(now)
    with service() as ledger:
        report = ledger.expire(now=moment, batch=batch)
    for line in report.unreadable:
        errors.print(f"error: {line}", markup=False, highlight=False, soft_wrap=True)
    if report.behind:
        errors.print(f"warning: {report.behind}", markup=False, highlight=False, soft_wrap=True)
    if output == "json":
        print_json(report)
    else:
        console.print(
            f"expired {report.expired} twins ({report.runs_cancelled} runs cancelled) "
            f"of {report.examined} candidates"
            + (f", {len(report.unreadable)} unreadable" if report.unreadable else ""),
            highlight=False,
            soft_wrap=True,
        )
    if report.unreadable or report.behind:
        raise typer.Exit(1)


@twins_app.command("extend")
@guarded
def extend(
    twin_id: Annotated[str, typer.Argument(help="The twin to extend")],
    by: Annotated[str, typer.Option("--by", help="How much later: 30d, 12h, 90m")] = "30d",
    output: RecordFormat = "table",
    quiet: Quiet = False,
) -> None:
    """Move a twin's expiry later (TwinExpiryExtended)."""
    check_format(output)
    lifetime = parse_duration(by, "by")
    with service() as ledger:
        twin = ledger.extend_twin(twin_id, by=lifetime)
    if quiet:
        print(twin.id)
        return
    if output == "json":
        print_json(twin)
        return
    console.print(
        f"twin {twin.id} now expires at {twin.expires_at}",
        highlight=False,
        soft_wrap=True,
    )


retention_app = typer.Typer(
    help="Remove old rows from the read tables (never events).", no_args_is_help=True
)
app.add_typer(retention_app, name="retention")


@retention_app.command("apply")
@guarded
def retention_apply(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would go, remove nothing")
    ] = False,
    now: NowOption = None,
    results: Annotated[
        str, typer.Option(help="Keep results rows this long")
    ] = f"{DEFAULT_RESULTS.days}d",
    runs: Annotated[
        str, typer.Option(help="Keep ended runs rows this long")
    ] = f"{DEFAULT_RUNS.days}d",
    twins: Annotated[
        str, typer.Option(help="Keep ended twins rows this long")
    ] = f"{DEFAULT_TWINS.days}d",
    experiments: Annotated[
        str, typer.Option(help="Keep ended experiments rows (and their iterations) this long")
    ] = f"{DEFAULT_EXPERIMENTS.days}d",
    output: RecordFormat = "table",
) -> None:
    """Remove read-table rows past their retention windows and report what was removed."""
    check_format(output)
    windows = Windows(
        results=parse_duration(results, "results"),
        runs=parse_duration(runs, "runs"),
        twins=parse_duration(twins, "twins"),
        experiments=parse_duration(experiments, "experiments"),
    )
    with service() as ledger:
        report = ledger.apply_retention(now=parse_now(now), windows=windows, dry_run=dry_run)
    if output == "json":
        print_json(report)
    else:
        verb = "would remove" if dry_run else "removed"
        console.print(
            f"{verb} {report.results} simulation_results rows, {report.runs} simulation_runs "
            f"rows, {report.twins} digital_twins rows, {report.experiments} experiments rows "
            "(the event log keeps everything; a rebuild restores them)",
            highlight=False,
            soft_wrap=True,
        )
    if report.behind:
        errors.print(f"warning: {report.behind}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
