"""`twinledger daemon`: scheduled expiry, retention, replay and chain verification
(docs/scale-out.md). ``--once`` exits 1 when an operation failed (a divergence, a broken chain)."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Annotated

import typer

from domain.errors import ValidationError
from infrastructure.cli.base import app, console, errors, fail, guarded, ledger, number
from infrastructure.inputs import parse_duration


def parse_every(pairs: list[str]) -> dict[str, timedelta]:
    """``expire=5m`` ... over the defaults; ``verify=off`` turns one operation off."""
    from infrastructure.schedule import DEFAULT_EVERY

    every = dict(DEFAULT_EVERY)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in DEFAULT_EVERY:
            raise ValidationError(
                "every", f"{pair!r} is not NAME=DURATION with NAME in {', '.join(DEFAULT_EVERY)}"
            )
        if value == "off":
            every.pop(name)
        else:
            every[name] = parse_duration(value, f"every.{name}")
    return every


@app.command()
@guarded
def daemon(
    every: Annotated[
        list[str],
        typer.Option(
            "--every",
            help="NAME=DURATION (expire=5m, retention=1d, verify=1h, verify-chain=1d) or NAME=off",
        ),
    ] = [],  # noqa: B006  (typer reads the default)
    poll: Annotated[
        float, typer.Option(parser=number("poll", 0.1, 86_400), help="Seconds between ticks")
    ] = 10.0,
    once: Annotated[bool, typer.Option(help="One tick, then exit")] = False,
) -> None:
    """Run expiry, retention, replay and chain verification on a schedule, once per fleet.

    Each operation runs once per interval across all the daemons of the store: start as many
    as you like, on any hosts."""
    from infrastructure.schedule import Scheduler

    with ledger() as application:
        scheduler = Scheduler(application, parse_every(every))
        if once:
            failed = []
            for done in scheduler.tick():
                console.print(f"{done.name}: {done.outcome}", highlight=False, soft_wrap=True)
                if not done.ok:
                    failed.append(done.name)
            if failed:
                fail(f"failed: {', '.join(failed)} (see scheduled_operation_runs)", 1)
            return
        where = application.database.describe() if application.database else "?"
        errors.print(f"daemon: a tick every {poll:g} s on {where}; Ctrl-C stops")
        stop = threading.Event()
        while not stop.is_set():
            for done in scheduler.tick():
                mark = "" if done.ok else "FAILED "
                errors.print(f"{mark}{done.name}: {done.outcome}", markup=False, highlight=False)
            stop.wait(poll)
