"""``twinledger projections status|run|rebuild|checksum``: the read tables' projections."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.table import Table

from infrastructure.cli.base import (
    RecordFormat,
    app,
    check_format,
    console,
    errors,
    guarded,
    print_json,
    service,
)
from projections.runner import Projector

projections_app = typer.Typer(
    help="The projections that keep the read tables current (docs/projections.md).",
    no_args_is_help=True,
)
app.add_typer(projections_app, name="projections")

NameArgument = Annotated[
    str | None,
    typer.Argument(
        help="A projection (twins, runs, results, experiments) or one of its tables; all if omitted"
    ),
]


@contextmanager
def projector() -> Iterator[Projector]:
    """The service layer's projector on the --db database (opening it creates the event log)."""
    with service() as ledger:
        yield ledger.projector


def _names(name: str | None) -> list[str] | None:
    return None if name is None else [name]


def _known(opened: Projector, name: str | None) -> None:
    try:
        opened.resolve(_names(name))
    except KeyError as error:
        from domain.errors import ValidationError

        raise ValidationError("name", str(error.args[0])) from None


@projections_app.command("status")
@guarded
def status(output: RecordFormat = "table") -> None:
    """Each projection's position, the head of the log and the lag (events behind)."""
    check_format(output)
    with service() as ledger:
        report = ledger.projections()
    if output == "json":
        print_json(report)
        return
    table = Table("projection", "tables", "position", "head", "lag", "state")
    for row in report.projections:
        if row.error:
            state = f"STOPPED at event {row.error_position}: {row.error}"
        elif row.blocked_by and row.lag:
            state = f"waiting for {', '.join(row.blocked_by)} (stopped)"
        elif not row.current_schema:
            state = "table definition changed: rebuilt on the next catch-up"
        else:
            state = "ok" if row.lag == 0 else "behind"
        table.add_row(
            row.name,
            ", ".join(row.tables),
            str(row.position),
            str(row.head),
            str(row.lag),
            state,
        )
    console.print(table)


@projections_app.command("run")
@guarded
def run(
    poll: Annotated[
        float, typer.Option(help="Seconds between polls (SQLite; PostgreSQL's fallback)")
    ] = 1.0,
    once: Annotated[bool, typer.Option(help="Catch up once and exit")] = False,
) -> None:
    """Keep the read tables current: PostgreSQL follows the log (LISTEN/NOTIFY), SQLite polls."""
    with projector() as opened:
        if once:
            positions = opened.catch_up()
            console.print(", ".join(f"{name} at {pos}" for name, pos in positions.items()))
            return
        kind = "following the log (LISTEN/NOTIFY)" if opened.store.postgres else "polling"
        errors.print(f"projections: {kind} on {opened.database.describe()}; Ctrl-C stops")
        opened.run_forever(poll_seconds=poll, report=lambda text: errors.print(text, markup=False))


@projections_app.command("rebuild")
@guarded
def rebuild(name: NameArgument = None) -> None:
    """Rebuild tables from position 0 into new tables, then swap them in in one transaction.

    Readers never see empty or half-built tables; interrupting is safe at any moment.
    Rebuilding a projection also rebuilds those whose foreign keys point at its tables.
    """
    with projector() as opened:
        _known(opened, name)
        started = time.monotonic()
        shown = {"at": 0.0}

        def progress(projection: str, position: int, head: int) -> None:
            now = time.monotonic()
            if now - shown["at"] >= 1.0:
                shown["at"] = now
                errors.print(f"  {projection}: {position}/{head}")

        applied = opened.rebuild(_names(name), progress=progress)
        seconds = time.monotonic() - started
        sums = opened.checksums(list(applied))
        table = Table("projection", "events applied", "table", "rows", "checksum")
        for projection in opened.closure(list(applied)):
            for index, spec in enumerate(projection.tables):
                rows, checksum = sums[spec.name]
                table.add_row(
                    projection.name if index == 0 else "",
                    str(applied[projection.name]) if index == 0 else "",
                    spec.name,
                    str(rows),
                    checksum,
                )
        console.print(table)
        head = max((row.head for row in opened.status()), default=0)
        rate = head / seconds if seconds > 0 else 0.0
        console.print(
            f"rebuilt from {head} events in {seconds:.2f} s: {rate:,.0f} events/s "
            f"({sum(applied.values())} applied across projections)"
        )


@projections_app.command("checksum")
@guarded
def checksum(name: NameArgument = None) -> None:
    """Per table: name, row count, SHA-256 of its canonical rows (compare across rebuilds)."""
    with projector() as opened:
        _known(opened, name)
        for spec_name, (rows, digest) in opened.checksums(_names(name)).items():
            console.print(f"{spec_name} {rows} {digest}", highlight=False, soft_wrap=True)
