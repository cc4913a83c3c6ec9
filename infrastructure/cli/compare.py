"""``twinledger compare RUN_A RUN_B ...``: 2 to 6 runs side by side (projections/compare.py)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from infrastructure.cli.base import (
    RecordFormat,
    app,
    check_format,
    console,
    format_cents,
    guarded,
    print_json,
    service,
)
from projections.compare import Comparison, Row


@app.command()
@guarded
def compare(
    run_ids: Annotated[list[str], typer.Argument(help="2 to 6 run ids")],
    output: RecordFormat = "table",
) -> None:
    """Compare runs: parameters (* where they differ), metrics, the first differing year.

    Parameters side by side, each run's as queued (a fork's changes are on the line naming
    the fork), summary metrics, and the first year whose recorded results differ.
    `--format json` adds each run's series."""
    check_format(output)
    with service() as ledger:
        comparison = ledger.compare(run_ids)
        # What each direct fork changed: its parameters row shows the run as queued, so
        # without this line a fork's tech_level=7 would look like its parent's 5.
        changes = {
            relation.run_id: ledger.lineage(relation.run_id).lineage[-1].described
            for relation in comparison.forks or []
            if relation.direct and output != "json"
        }
    if output == "json":
        print_json(comparison)
        return
    print_comparison(comparison, changes)


def _shown(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if name.endswith("_cents") and isinstance(value, int):
        return format_cents(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _table(title: str, rows: list[Row], runs: int) -> Table:
    table = Table(title=title)
    table.add_column("", no_wrap=True)
    for index in range(runs):
        table.add_column(f"run {index + 1}", overflow="fold")
    for row in rows:
        mark = "* " if row.differs else "  "
        table.add_row(mark + row.name, *(_shown(row.name, value) for value in row.values))
    return table


def fork_lines(comparison: Comparison, changes: dict[str, str] | None = None) -> list[str]:
    """``run 2 is a fork of run 1 after year 15, changing tech_level=7`` (``changes``: a
    direct fork's, described); a fork of a fork names its parent too."""
    number = {run_id: index + 1 for index, run_id in enumerate(comparison.run_ids)}
    lines = []
    for relation in comparison.forks or []:
        run, ancestor = number[relation.run_id], number[relation.ancestor_run_id]
        if relation.direct:
            changed = (changes or {}).get(relation.run_id)
            lines.append(
                f"run {run} is a fork of run {ancestor} after year {relation.at_year}"
                + (f", changing {changed}" if changed else "")
            )
        else:
            lines.append(
                f"run {run} descends from run {ancestor} (forked from {relation.parent_run_id}),"
                f" sharing its years 1..{relation.at_year}"
            )
    return lines


def print_comparison(comparison: Comparison, changes: dict[str, str] | None = None) -> None:
    for index, run_id in enumerate(comparison.run_ids):
        console.print(f"run {index + 1}: {run_id}", highlight=False, soft_wrap=True)
    for line in fork_lines(comparison, changes):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    runs = len(comparison.run_ids)
    console.print(_table("parameters (* differs)", comparison.parameters, runs))
    console.print(_table("summary", comparison.metrics, runs))
    divergence = comparison.first_divergence
    if divergence is None:
        console.print(
            f"no diverging year: the results are the same over the {comparison.common_years} "
            "years every run recorded",
            highlight=False,
            soft_wrap=True,
        )
        return
    values = " | ".join(_shown(divergence.field, value) for value in divergence.values)
    console.print(
        f"first diverging year: {divergence.year} ({divergence.field}: {values})",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
