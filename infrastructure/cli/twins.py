"""Commands about twins: the catalog, cloning, showing and deleting."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from domain.catalog import CATALOG
from domain.twin import DigitalTwin
from infrastructure.cli.base import (
    app,
    console,
    guarded,
    ledger,
)
from infrastructure.inputs import parse_duration

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
    body: Annotated[
        str | None, typer.Argument(help="Catalog body key (see `twinledger bodies`)")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Name of the new twin [default: the body's name]")
    ] = None,
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
            name=name,
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
