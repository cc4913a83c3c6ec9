"""`twinledger bench`: measure the write, projection and query paths beside baselines."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from infrastructure.bench.runner import run_bench
from infrastructure.cli.base import (
    RecordFormat,
    app,
    check_format,
    console,
    errors,
    guarded,
    integer,
    state,
)


@app.command()
@guarded
def bench(
    runs: Annotated[int, typer.Option(parser=integer("runs", 1), help="Runs to record")] = 100,
    years: Annotated[
        int, typer.Option(parser=integer("years", 1, 1000), help="Years per run")
    ] = 1000,
    writers: Annotated[str, typer.Option(help="Writer process counts (PostgreSQL)")] = "1,2,4,8",
    repeats: Annotated[
        int, typer.Option(parser=integer("repeats", 5), help="Repeats of each query")
    ] = 200,
    query_rows: Annotated[
        int,
        typer.Option(
            parser=integer("query_rows", 0),
            help="Time the queries over this many result rows (copies of the runs)",
        ),
    ] = 1_000_000,
    chunk: Annotated[
        int | None,
        typer.Option(
            parser=integer("chunk", 1),
            help="Years per save",
            show_default="a quarter of the run, at least 50",
        ),
    ] = None,
    output: RecordFormat = "table",
    as_json: Annotated[bool, typer.Option("--json", hidden=True, help="= --format json")] = False,
    scale_out: Annotated[
        str | None,
        typer.Option(
            help="Only the scale-out benchmark: Dask worker counts, e.g. 1,2,4 (PostgreSQL)"
        ),
    ] = None,
    writers_profile: Annotated[
        bool,
        typer.Option(
            "--writers-profile",
            help="Only where concurrent writers' time goes (lock, WAL, CPU, run queue), for "
            "each --writers count, each writer recording --runs / 8 runs (PostgreSQL, Linux)",
        ),
    ] = False,
) -> None:
    """Benchmark on scratch storage beside --db (never the ledger itself); prints the numbers."""
    check_format(output)
    as_json = as_json or output == "json"
    if scale_out is not None:
        _scale_out(runs, years, scale_out)
        return
    counts = tuple(int(part) for part in writers.split(",") if part.strip())
    if writers_profile:
        _writers_profile(runs, years, counts, as_json)
        return
    report = run_bench(
        state.db,
        runs=runs,
        years=years,
        writers=counts,
        repeats=repeats,
        query_rows=query_rows,
        chunk=chunk,
        progress=lambda message: errors.print(f"bench: {message}", highlight=False),
    )
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    table = Table(
        "measurement",
        "value",
        "target",
        "baseline / note",
        title=f"twinledger bench: {report.backend}, {report.runs} runs x {report.years} years "
        f"({report.events:,} events)",
    )
    for m in report.measurements:
        value = (
            "-"
            if m.value is None
            else f"{m.value:,.2f} {m.unit}"
            if m.value < 100
            else f"{m.value:,.0f} {m.unit}"
        )
        table.add_row(
            m.name, value, m.target, "; ".join(part for part in (m.baseline, m.note) if part)
        )
    console.print(table)


def _scale_out(runs: int, years: int, counts: str) -> None:
    from infrastructure.bench.cluster import scale_out
    from infrastructure.settings import resolve_database

    measured = scale_out(
        resolve_database(state.db),
        runs=runs,
        years=years,
        worker_counts=tuple(int(part) for part in counts.split(",") if part.strip()),
        progress=lambda message: errors.print(f"bench: {message}", highlight=False),
    )
    table = Table(
        "workers",
        "runs/s",
        "years/s",
        "x one worker",
        "cluster start",
        title=f"twinledger bench --scale-out: {runs} runs x {years} years",
    )
    for m in measured:
        table.add_row(
            str(m.workers),
            f"{m.runs_per_second:.2f}",
            f"{m.years_per_second:,.0f}",
            f"{m.runs_per_second / measured[0].runs_per_second:.2f}",
            f"{m.startup_seconds:.1f} s",
        )
    console.print(table)


def _writers_profile(runs: int, years: int, counts: tuple[int, ...], as_json: bool) -> None:
    from dataclasses import asdict

    from infrastructure.bench.writers_profile import profile_all, profile_rows

    profiles = profile_all(
        state.db,
        counts,
        runs_each=max(1, runs // 8),
        years=years,
        progress=lambda message: errors.print(f"bench: {message}", highlight=False),
    )
    if as_json:
        print(json.dumps([asdict(p) for p in profiles], indent=2))
        return
    table = Table(
        "writers",
        *(str(p.writers) for p in profiles),
        title=f"twinledger bench --writers-profile: {max(1, runs // 8)} runs x {years} years "
        "per writer; shares of the writers' summed wall time unless said",
    )
    for name, values in profile_rows(profiles):
        table.add_row(name, *values)
    console.print(table)
