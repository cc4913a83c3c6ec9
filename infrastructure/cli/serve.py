"""``twinledger serve``: the HTTP API and the dashboard on the --db database (docs/http.md)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from domain.errors import ValidationError
from infrastructure.cli.base import app, errors, guarded, state


@app.command()
@guarded
def serve(
    host: Annotated[str, typer.Option(help="Address to bind (only this machine by default)")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port")] = 8000,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Refuse every write (403)")
    ] = False,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Local workers executing queued runs")
    ] = 1,
    scheduler: Annotated[
        str | None,
        typer.Option(
            envvar="TWINLEDGER_SCHEDULER",
            help="Execute runs on this Dask scheduler (tcp://HOST:8786, or local)",
        ),
    ] = None,
    resume_queued: Annotated[
        bool,
        typer.Option(
            "--resume-queued/--no-resume-queued",
            help="On start, execute queued runs; resume orphaned runs and experiments",
        ),
    ] = True,
    resume_every: Annotated[
        int,
        typer.Option(
            min=1,
            max=3600,
            help="While serving, resume orphaned runs and experiments this often",
        ),
    ] = 10,
    cors_origin: Annotated[
        list[str],
        typer.Option("--cors-origin", help="Allow browser calls from this origin (off by default)"),
    ] = [],  # noqa: B006  (typer reads the default)
) -> None:
    """Serve the JSON API under /api/v1 and the dashboard at /; Ctrl-C stops.

    Writes need `Authorization: Bearer $TWINLEDGER_API_TOKEN` when that variable is set.
    """
    import signal

    import uvicorn

    from infrastructure.executors import check_scheduler
    from infrastructure.http.app import TOKEN_VARIABLE, Settings, create_app

    check_scheduler(scheduler)  # before the server starts: one line naming it, not a traceback

    local = host in ("127.0.0.1", "localhost", "::1")
    if not local and not read_only and not os.environ.get(TOKEN_VARIABLE):
        raise ValidationError(
            "host",
            f"binding {host} exposes writes to the network: set {TOKEN_VARIABLE} "
            "or pass --read-only",
        )
    settings = Settings(
        url=state.db,
        read_only=read_only,
        workers=workers,
        scheduler=scheduler,
        resume_queued=resume_queued,
        resume_every=resume_every,
        cors_origins=cors_origin,
    )
    application = create_app(settings)
    # Open the store here first: a database that cannot be used (a bad URL, a refused login,
    # a bad TWINLEDGER_PG_APPEND) is then one line and exit 2, as for every command, not
    # uvicorn's traceback of a failed start. The server's start catches up again (cheap).
    from infrastructure.service import Ledger

    with Ledger.open(state.db, warn=lambda text: errors.print(text, markup=False)) as ledger:
        ledger.catch_up()
    # The command line lets SIGPIPE end a process (`twinledger runs | head`); a server must
    # not die of a client that hung up while it wrote (the run page closes its progress
    # stream at the run's end): the write fails for that connection alone (EPIPE).
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    where = "read-only, " if read_only else ""
    errors.print(
        f"twinledger: {where}http://{host}:{port}/ (API under /api/v1, docs /api/v1/docs)",
        markup=False,
        highlight=False,
    )
    uvicorn.run(application, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
