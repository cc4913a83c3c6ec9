"""``twinledger twins|runs|results|experiments``: reads from the relational read tables only.

The commands call the service layer (infrastructure/service.py), which catches the tables up
first (cheap when current), so what is listed includes every event written so far.
``--format json`` prints every column of every row; ``--format csv`` too, with JSON columns as
JSON text; ``table`` (the default) prints the columns people look at; ``-q`` prints the ids
alone, one per line. ``runs`` takes a filter and an order (projections/search.py).

json and csv print canonical JSON (projections/canonical.py: keys sorted, floats as the event
codec prints them), so the same events print the same bytes from SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import msgspec
import typer
from pydantic import BaseModel
from rich.table import Table

from infrastructure.cli.base import (
    Quiet,
    app,
    check_format,
    console,
    errors,
    format_cents,
    guarded,
    integer,
    service,
)
from infrastructure.pages import MAX_LIMIT
from infrastructure.views import Page
from projections.canonical import canonical

FORMATS = ("table", "json", "csv")
FormatOption = Annotated[str, typer.Option("--format", help="table, json or csv")]


def _check_format(output: str) -> None:
    check_format(output, FORMATS)


def every(fetch: Callable[[str | None], Page[Any]]) -> Iterator[dict[str, Any]]:
    """Every row of a paginated list, page after page, as plain dicts."""
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        yield from (item.model_dump(mode="json") for item in page.items)
        cursor = page.next_cursor
        if cursor is None:
            return


def rows_of(items: list[BaseModel]) -> list[dict[str, Any]]:
    return [item.model_dump(mode="json") for item in items]


def emit(
    rows: list[dict[str, Any]],
    output: str,
    columns: list[tuple[str, Callable[[dict[str, Any]], str]]],
    title: str,
    quiet: bool = False,
) -> None:
    if quiet:
        for row in rows:
            print(row["id"])
        return
    if output == "json":
        print(msgspec.json.format(canonical(rows), indent=2).decode())
        return
    if output == "csv":
        buffer = io.StringIO()
        if rows:
            writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({key: _cell(value) for key, value in row.items()})
        print(buffer.getvalue(), end="")
        return
    table = Table(title=f"{title} ({len(rows)})")
    for name, _ in columns:
        if name == "id":  # ids are for copying: never cut (other columns fold, never cut)
            table.add_column(name, no_wrap=True, min_width=36)
        else:
            table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(render(row) for _, render in columns))
    console.print(table)


def _cell(value: Any) -> Any:
    """A CSV cell: JSON values and floats as canonical JSON text, the rest as csv writes it."""
    if isinstance(value, dict | list | float):
        return canonical(value).decode()
    return value


def _cents(key: str) -> Callable[[dict[str, Any]], str]:
    return lambda row: "-" if row[key] is None else format_cents(int(row[key]))


def _text(key: str) -> Callable[[dict[str, Any]], str]:
    return lambda row: "-" if row[key] is None else str(row[key])


def _score(row: dict[str, Any]) -> str:
    value = row["habitability_score"]
    return "-" if value is None else f"{value:.3f}"


def _objective(row: dict[str, Any]) -> str:
    value = row["best_objective_value"]
    return "-" if value is None else f"{value:.6g}"


def _ended(row: dict[str, Any]) -> str:
    """An experiment's status, with why it ended (converged, max_iterations, the error)."""
    return row["status"] if row["reason"] is None else f"{row['status']} ({row['reason']})"


def _compact(data: Any) -> str:
    if isinstance(data, dict) and list(data) == ["key_events"]:
        return "; ".join(f"{e.get('name')}: {e.get('description', '')}" for e in data["key_events"])
    if isinstance(data, dict):
        return ", ".join(f"{key}={_cell(value)}" for key, value in data.items())
    return canonical(data).decode()


twins_app = typer.Typer(
    help="List twins (from the digital_twins table), or `twins extend` one.",
    invoke_without_command=True,
)
app.add_typer(twins_app, name="twins")


@twins_app.callback()
@guarded
def twins(
    context: typer.Context,
    status: Annotated[str | None, typer.Option(help="Only twins with this status")] = None,
    output: FormatOption = "table",
    quiet: Quiet = False,
) -> None:
    """List twins, from the digital_twins table."""
    if context.invoked_subcommand is not None:
        return
    _check_format(output)
    with service() as ledger:
        rows = list(
            every(lambda cursor: ledger.twins(status=status, limit=MAX_LIMIT, cursor=cursor))
        )
    emit(
        rows,
        output,
        [
            ("id", _text("id")),
            ("name", _text("name")),
            ("body", _text("source_body")),
            ("status", _text("status")),
            ("runs", lambda row: f"{row['run_count']} ({row['active_run_count']} active)"),
            ("expires at", _text("expires_at")),
        ],
        "twins",
        quiet,
    )


@app.command("runs")
@guarded
def runs(
    twin: Annotated[str | None, typer.Option(help="Only runs of this twin id")] = None,
    status: Annotated[str | None, typer.Option(help="Only runs with this status")] = None,
    pattern: Annotated[str | None, typer.Option(help="Only runs of this pattern")] = None,
    where: Annotated[
        str | None,
        typer.Option(
            "--where",
            help="Filter, e.g. \"status = 'completed' and summary.habitability > 0.3\" "
            "(docs/queries.md, Search)",
        ),
    ] = None,
    order_by: Annotated[
        str | None,
        typer.Option(
            "--order-by",
            help="Order, e.g. 'summary.habitability desc, created_at'; default: created_at",
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            parser=integer("limit", 1, MAX_LIMIT), help=f"At most this many runs, 1 to {MAX_LIMIT}"
        ),
    ] = MAX_LIMIT,
    cursor: Annotated[
        str | None, typer.Option("--cursor", help="The next page: the cursor a listing printed")
    ] = None,
    output: FormatOption = "table",
    quiet: Quiet = False,
) -> None:
    """List runs from the simulation_runs table: filtered, ordered, a page at a time."""
    _check_format(output)
    with service() as ledger:
        page = ledger.runs(
            where=where,
            order_by=order_by,
            twin=twin,
            status=status,
            pattern=pattern,
            limit=limit,
            cursor=cursor,
            fields=("where", "order_by", "cursor"),
        )
    rows = rows_of(list(page.items))
    if page.next_cursor is not None:
        errors.print(
            f"more runs: add --cursor {page.next_cursor}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    emit(
        rows,
        output,
        [
            ("id", _text("id")),
            ("twin", _text("digital_twin_id")),
            ("pattern", _text("pattern")),
            ("status", _text("status")),
            ("progress", lambda row: f"{row['current_year']}/{row['duration_years']} years"),
            ("habitability", _score),
            ("spent", _cents("total_spend_cents")),
        ],
        "runs",
        quiet,
    )


@app.command("experiments")
@guarded
def experiments(
    twin: Annotated[str | None, typer.Option(help="Only experiments on this twin id")] = None,
    status: Annotated[
        str | None, typer.Option(help="Only experiments with this status (running, ...)")
    ] = None,
    output: FormatOption = "table",
    quiet: Quiet = False,
) -> None:
    """List experiments, from the experiments table (`experiment show ID` for one)."""
    _check_format(output)
    with service() as ledger:
        rows = list(
            every(
                lambda cursor: ledger.experiments(
                    twin=twin, status=status, limit=MAX_LIMIT, cursor=cursor
                )
            )
        )
    emit(
        rows,
        output,
        [
            ("id", _text("id")),
            ("name", _text("name")),
            ("twin", _text("digital_twin_id")),
            ("status", _ended),
            ("iterations", lambda row: f"{row['iterations']}/{row['max_iterations']}"),
            ("best objective", _objective),
            ("best cost", _cents("best_cost_cents")),
        ],
        "experiments",
        quiet,
    )


@app.command("results")
@guarded
def results(
    run_id: Annotated[str, typer.Argument(help="The run's id")],
    result_type: Annotated[
        str | None, typer.Option("--type", help="economic, environmental or timeline")
    ] = None,
    from_year: Annotated[
        int | None, typer.Option(parser=integer("from_year"), help="First year shown")
    ] = None,
    to_year: Annotated[
        int | None, typer.Option(parser=integer("to_year"), help="Last year shown")
    ] = None,
    output: FormatOption = "table",
) -> None:
    """A run's per-year results, from the simulation_results table."""
    _check_format(output)
    with service() as ledger:
        rows = rows_of(
            list(
                ledger.results(
                    run_id, result_type=result_type, from_year=from_year, to_year=to_year
                )
            )
        )
    emit(
        rows,
        output,
        [
            ("year", _text("year")),
            ("type", _text("result_type")),
            ("data", lambda row: _compact(row["data"])),
        ],
        f"results of run {run_id.strip()}",
    )
