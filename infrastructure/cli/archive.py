"""Commands that move event streams between stores: archive and import."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from infrastructure.archive import export, import_archive
from infrastructure.cli.base import app, console, guarded, ledger


@app.command()
@guarded
def archive(
    run_id: Annotated[str | None, typer.Argument(help="The run to archive")] = None,
    twin: Annotated[
        str | None, typer.Option("--twin", help="Archive a twin and all its runs")
    ] = None,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="The archive file to write")
    ] = Path("archive.jsonl"),
) -> None:
    """Export the complete event streams of a run (with its twin), or of a twin and its runs."""
    with ledger() as application:
        partial = output.with_name(output.name + ".partial")
        with partial.open("wb") as out:
            count = export(application, out, run_id=run_id, twin_id=twin)
        partial.replace(output)
        console.print(f"archived {count} events to {output}")


@app.command("import")
@guarded
def import_(
    file: Annotated[Path, typer.Argument(help="An archive written by `twinledger archive`")],
    digest: Annotated[
        str | None,
        typer.Option("--digest", help="Import only if the archive was made at this digest"),
    ] = None,
) -> None:
    """Load an archive into this store (all or nothing; importing twice writes nothing more).
    Every event is checked against the archive's hash chain and digest first."""
    with ledger() as application:
        report = import_archive(application, file, expected_digest=digest)
        console.print(
            f"imported {report.events_written} of {report.events_in_file} events "
            f"({report.streams} streams, {report.streams_already_present} already present)"
        )
