"""``twinledger projections status|run|rebuild|checksum|parked|retry|skip``: the projections."""

from __future__ import annotations

import getpass
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.table import Column, Table

from domain.errors import ValidationError
from infrastructure.cli.base import (
    RecordFormat,
    app,
    check_format,
    console,
    errors,
    guarded,
    number,
    print_json,
    service,
)
from projections.follower import follow
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


def _known(opened: Projector, name: str | None, field: str = "name") -> None:
    try:
        opened.resolve(_names(name))
    except KeyError as error:
        raise ValidationError(field, str(error.args[0])) from None


def _parked_column(parked: int, skipped: int) -> str:
    if not skipped:
        return str(parked)
    return f"{parked} (+{skipped} skipped)"


@projections_app.command("status")
@guarded
def status(output: RecordFormat = "table") -> None:
    """Each projection's position, the head of the log and the lag (events behind)."""
    check_format(output)
    if output == "json":
        with service() as ledger:
            print_json(ledger.projections())
        return
    with projector() as opened:
        table = Table(
            "projection",
            "tables",
            "position",
            "head",
            "lag",
            Column("parked", no_wrap=True),
            "state",
        )
        for row in opened.status():
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
                _parked_column(row.parked, row.skipped),
                state,
            )
        console.print(table)
        if any(row.parked for row in opened.status()):
            console.print(
                "events are parked: `twinledger projections parked` lists them "
                "(docs/projections.md, 'Parked events')",
                highlight=False,
            )


@projections_app.command("run")
@guarded
def run(
    poll: Annotated[
        float,
        typer.Option(
            parser=number("poll", 0.01, 3600),
            help="Seconds between polls (SQLite; PostgreSQL's fallback)",
        ),
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
        database = opened.database
    # One active follower per store; others stand by (projections/follower.py).
    follow(database, poll_seconds=poll, report=lambda text: errors.print(text, markup=False))


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


ProjectionOption = Annotated[
    str | None,
    typer.Option(
        "--projection", help="Only this projection's parked events (twins, runs, results, ...)"
    ),
]


@projections_app.command("parked")
@guarded
def parked(name: NameArgument = None) -> None:
    """Events a projection could not apply, in log order: position, event, error, skip."""
    with projector() as opened:
        _known(opened, name)
        rows = opened.parked(_names(name))
        if not rows:
            console.print("no parked events")
            return
        for row in rows:  # one block per event: errors are long, tables would wrap them
            lines = [
                f"{row.projection} {row.position}: {row.topic} {row.originator_id} "
                f"version {row.originator_version}",
                f"  parked {row.parked_at:%Y-%m-%d %H:%M:%S}: {row.error_class}: "
                f"{row.error_message}",
            ]
            if row.skipped_at is not None:
                lines.append(
                    f"  skipped {row.skipped_at:%Y-%m-%d %H:%M:%S} by {row.skipped_by}: "
                    f"{row.skip_reason}"
                )
            console.print("\n".join(lines), highlight=False, markup=False, soft_wrap=True)


@projections_app.command("retry")
@guarded
def retry(
    position: Annotated[
        int | None, typer.Argument(help="The parked event's position in the log")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every parked event not skipped")] = False,
    projection: ProjectionOption = None,
) -> None:
    """Apply parked events again after a fix; each one that applies leaves the parked list.

    Exits 1 if any of them still fails (it stays parked, with the new error)."""
    if (position is None) == (not all_):
        raise ValidationError("position", "give a POSITION or --all, not both")
    with projector() as opened:
        _known(opened, projection, "projection")
        try:
            outcomes = opened.retry(position, _names(projection), actor=_actor(None))
        except LookupError as error:
            raise ValidationError("position", str(error.args[0])) from None
        for outcome in outcomes:
            row = outcome.row
            verdict = "applied" if outcome.applied else f"still parked: {outcome.error}"
            console.print(f"{row.projection} {row.position}: {verdict}", highlight=False)
        failed = sum(not outcome.applied for outcome in outcomes)
        console.print(f"{len(outcomes) - failed} applied, {failed} still parked", highlight=False)
        if failed:
            raise typer.Exit(1)


@projections_app.command("skip")
@guarded
def skip(
    position: Annotated[int, typer.Argument(help="The parked event's position in the log")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit table)")],
    projection: ProjectionOption = None,
    by: Annotated[
        str | None, typer.Option("--by", help="Who decides (default: the OS user)")
    ] = None,
) -> None:
    """Leave a parked event out of the tables deliberately; who, when and why are audited."""
    if not reason.strip():
        raise ValidationError("reason", "say why the event is skipped")
    for field, text in (("reason", reason), ("by", by or "")):
        if any(not character.isprintable() for character in text):
            raise ValidationError(field, "must not hold control characters")
    with projector() as opened:
        _known(opened, projection, "projection")
        try:
            rows = opened.skip(position, reason, actor=_actor(by), names=_names(projection))
        except LookupError as error:
            raise ValidationError("position", str(error.args[0])) from None
        for row in rows:
            console.print(
                f"{row.projection} {row.position}: skipped by {row.skipped_by}", highlight=False
            )


def _actor(by: str | None) -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in this environment
        return "unknown"
