"""Commands about twins: the catalog, cloning, showing and deleting (via the service layer)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import typer
from rich.table import Table

from domain.catalog import CATALOG
from infrastructure.cli.base import (
    Quiet,
    RecordFormat,
    app,
    check_format,
    console,
    guarded,
    print_json,
    service,
)

if TYPE_CHECKING:  # imported by the commands that use them: `bodies` starts without them
    from infrastructure.views import Twin

# --- twins ---------------------------------------------------------------------------------------


@app.command()
@guarded
def bodies(
    output: RecordFormat = "table",
    quiet: Annotated[
        bool, typer.Option("-q", "--quiet", help="Print only the keys (one per line)")
    ] = False,
) -> None:
    """List the built-in reference bodies a twin can be cloned from."""
    check_format(output)
    if quiet:
        for key in CATALOG:
            print(key)
        return
    if output == "json":
        print_json([msgspec.to_builtins(body) for body in CATALOG.values()])
        return
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
    body: Annotated[
        str | None, typer.Argument(help="Catalog body key (see `twinledger bodies`)")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Name of the new twin", show_default="the body's name")
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(help="JSON file describing a body (docs/examples/body.json)"),
    ] = None,
    expires_in: Annotated[str, typer.Option(help="Lifetime: 30d, 12h, 90m")] = "30d",
    description: Annotated[
        str | None, typer.Option(help="A description kept with the twin")
    ] = None,
    created_by: Annotated[str, typer.Option(help="Who made it (recorded)")] = "cli",
    simulation_type: Annotated[
        str | None,
        typer.Option(
            "--type",
            help="terraforming, industrial, fuel, ocean or custom (the patterns it takes)",
            show_default="the body's",
        ),
    ] = None,
    output: RecordFormat = "table",
    quiet: Quiet = False,
) -> None:
    """Clone a body into a new digital twin and print it (-q: its id only)."""
    from infrastructure.inputs import parse_duration

    check_format(output)
    lifetime = parse_duration(expires_in)
    with service() as ledger:
        twin = ledger.clone_twin(
            name=name,
            body=body,
            body_file=None if from_file is None else str(from_file),
            expires_in=lifetime,
            description=description,
            created_by=created_by,
            simulation_type=simulation_type,
        )
    show_twin(twin, output, quiet)


@app.command()
@guarded
def delete(
    twin_id: Annotated[str, typer.Argument(help="The twin to delete")],
    reason: Annotated[str, typer.Option(help="Why (recorded in TwinDeleted)")] = "",
    by: Annotated[str, typer.Option(help="Who deletes it (recorded)")] = "cli",
    output: RecordFormat = "table",
    quiet: Quiet = False,
) -> None:
    """Soft-delete a twin: it keeps its history and accepts no new runs."""
    check_format(output)
    with service() as ledger:
        twin = ledger.delete_twin(twin_id, by=by, reason=reason)
    show_twin(twin, output, quiet)


@app.command()
@guarded
def twin(
    twin_id: Annotated[str, typer.Argument(help="The twin's id")],
    output: RecordFormat = "table",
    quiet: Quiet = False,
) -> None:
    """Show one twin (its digital_twins row)."""
    check_format(output)
    with service() as ledger:
        found = ledger.twin(twin_id)
    show_twin(found, output, quiet)


def show_twin(twin: Twin, output: str, quiet: bool) -> None:
    if quiet:
        print(twin.id)
    elif output == "json":
        print_json(twin)
    else:
        print_twin(twin)


def print_twin(twin: Twin) -> None:
    table = Table(show_header=False, title=f"twin {twin.id}")
    atmosphere: dict[str, Any] = (twin.state or {}).get("atmosphere", {})
    rows = [
        ("name", twin.name),
        ("status", twin.status),
        ("source body", f"{twin.source_body} ({twin.solar_system})"),
        ("simulation type", twin.simulation_type),
        ("created by", twin.created_by),
        ("expires at", twin.expires_at),
        ("temperature", f"{atmosphere.get('mean_temperature_k', 0):g} K"),
        ("pressure", f"{atmosphere.get('surface_pressure_kpa', 0):g} kPa"),
    ]
    if twin.ended_reason:
        rows.append(("ended", f"{twin.ended_reason} at {twin.deleted_at}"))
    for key, value in rows:
        table.add_row(key, str(value))
    console.print(table)
