"""Commands that move event streams between stores: archive and import."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from infrastructure.cli.base import (
    RecordFormat,
    app,
    check_format,
    console,
    guarded,
    print_json,
    service,
)


@app.command()
@guarded
def archive(
    run_id: Annotated[str | None, typer.Argument(help="The run to archive")] = None,
    twin: Annotated[
        str | None, typer.Option("--twin", help="Archive a twin and all its runs")
    ] = None,
    file: Annotated[Path, typer.Option("-o", "--output", help="The archive file to write")] = Path(
        "archive.jsonl"
    ),
    output: RecordFormat = "table",
) -> None:
    """Export the complete event streams of a run (with its twin), or of a twin and its runs."""
    check_format(output)
    with service() as ledger:
        partial = file.with_name(file.name + ".partial")
        with partial.open("wb") as out:
            count = ledger.archive(out, run_id=run_id, twin_id=twin)
        partial.replace(file)
    if output == "json":
        print_json({"events": count, "file": str(file)})
        return
    console.print(f"archived {count} events to {file}", highlight=False, soft_wrap=True)


@app.command("import")
@guarded
def import_(
    file: Annotated[Path, typer.Argument(help="An archive written by `twinledger archive`")],
    digest: Annotated[
        str | None,
        typer.Option("--digest", help="Import only if the archive was made at this digest"),
    ] = None,
    output: RecordFormat = "table",
) -> None:
    """Load an archive into this store: all or nothing; importing twice writes nothing more.

    Every event is checked against the archive's hash chain and digest first."""
    check_format(output)
    with service() as ledger:
        report = ledger.import_archive(file, expected_digest=digest)
    if output == "json":
        print_json(report)
    else:
        console.print(
            f"imported {report.events_written} of {report.events_in_file} events "
            f"({report.streams} streams, {report.streams_already_present} already present)"
        )
