"""``twinledger digest | verify | prove`` and ``twinledger db roles`` (docs/integrity.md).

Exit codes: 0 intact (or the proof was made), 1 the log is broken or does not match the digest
given (the first broken stream and version is named), 2 a user error.
"""

from __future__ import annotations

from typing import Annotated

import typer

from domain.errors import ValidationError
from infrastructure.cli.base import app, check_format, fail, guarded, ledger, print_json, state
from infrastructure.integrity import ALGORITHM, ProofRefused, prove, scan_log
from infrastructure.roles import Roles, apply, passwords_from_env
from infrastructure.settings import resolve_database

db_app = typer.Typer(help="Database administration: roles.", no_args_is_help=True)
app.add_typer(db_app, name="db")

PositionOption = Annotated[
    int | None,
    typer.Option("--position", min=0, help="The log position (default: the last one)"),
]


@app.command()
@guarded
def digest(
    position: PositionOption = None,
    output: Annotated[str, typer.Option("--format", help="text or json")] = "text",
) -> None:
    """Check every chain and print the ledger digest (Merkle root over stream heads)."""
    check_format(output, ("text", "json"))
    with ledger() as application:
        scan = scan_log(application.recorder, position)
    if scan.broken is not None:
        fail(f"broken: {scan.broken}", 1)
    if output == "json":
        print_json(
            {
                "digest": scan.digest,
                "position": scan.position,
                "streams": scan.streams,
                "events": scan.events,
                "algorithm": ALGORITHM,
            }
        )
    else:
        typer.echo(f"{scan.digest} at position {scan.position} ({scan.streams} streams)")


@app.command()
@guarded
def verify(
    expected: Annotated[
        str | None, typer.Option("--digest", help="A digest kept elsewhere to check against")
    ] = None,
    position: PositionOption = None,
) -> None:
    """Check every stream's hash chain in one pass (no simulation).

    With --digest, check the log at --position against a digest kept elsewhere."""
    if position is not None and expected is None:
        raise ValidationError("position", "--position needs --digest")
    with ledger() as application:
        scan = scan_log(application.recorder, position)
    if scan.broken is not None:
        fail(f"broken: {scan.broken}", 1)
    if expected is not None and scan.digest != expected.strip().lower():
        fail(
            f"digest: the log at position {scan.position} has digest {scan.digest}, not {expected}",
            1,
        )
    typer.echo(
        f"intact: {scan.events} events in {scan.streams} streams; digest {scan.digest} "
        f"at position {scan.position}"
    )


@app.command("prove")
@guarded
def prove_command(
    run_id: Annotated[str, typer.Argument(help="The run (or any stream) to prove")],
    expected: Annotated[str, typer.Option("--digest", help="The digest to prove against")],
    position: PositionOption = None,
) -> None:
    """Print a proof (JSON) that the run's events are in the ledger with this digest.

    docs/examples/check_proof.py checks it with hashlib and json alone."""
    with ledger() as application:
        run = application.get_run(run_id)
        try:
            proof = prove(application.recorder, run.id, expected, position)
        except ProofRefused as refusal:
            fail(f"digest: {refusal}", 1)
    print_json(proof)


@db_app.command("roles")
@guarded
def roles(
    owner: Annotated[str, typer.Option("--owner", help="Owns the schema: schema changes")],
    writer: Annotated[str, typer.Option("--writer", help="The application, API and workers")],
    reader: Annotated[str, typer.Option("--reader", help="Dashboards and analysts")],
    password_from_env: Annotated[
        bool,
        typer.Option(
            "--password-from-env",
            help="Set passwords from TWINLEDGER_OWNER/WRITER/READER_PASSWORD",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the statements, change nothing")
    ] = False,
) -> None:
    """Create least-privilege roles for this PostgreSQL schema (run as a superuser)."""
    chosen = Roles(owner=owner, writer=writer, reader=reader)
    passwords = passwords_from_env(chosen) if password_from_env else None
    database = resolve_database(state.db)
    apply(database, chosen, passwords, dry_run=dry_run, say=lambda line: typer.echo(f"{line};"))
    if not dry_run:
        typer.echo(
            f"roles set on schema {database.schema}: owner {owner}, writer {writer}, "
            f"reader {reader}"
        )
