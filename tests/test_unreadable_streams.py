"""A stream with a missing version (an event deleted by SQL): commands on that run say so in one
line; commands that scan many streams report it and go on with the rest (issue 10, item 4).
And event_count() counts events, whatever the ids."""

from __future__ import annotations

import pickle
import re
import sqlite3
from datetime import timedelta
from uuid import UUID

import psycopg
from psycopg import sql
from typer.testing import CliRunner

from domain.values import RunStatus, TwinStatus
from infrastructure.application import TwinLedger
from infrastructure.cli import app
from infrastructure.errors import (
    RunInterrupted,
    UndecodableStream,
    UnreadableStream,
    UnusableDatabase,
)
from infrastructure.settings import resolve_database

runner = CliRunner()
BUDGET = 10**12


def twinledger(db: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--db", db, *args])
    return result.exit_code, result.stdout, result.stderr


def delete_event(database_url: str, originator_id: UUID, version: int) -> None:
    """Remove one stored event, as a careless script with SQL access would."""
    database = resolve_database(database_url)
    if database.is_postgres:
        with psycopg.connect(database.psycopg_conninfo(), autocommit=True) as connection:
            deleted = connection.execute(
                sql.SQL(
                    "DELETE FROM {} WHERE originator_id = %s AND originator_version = %s"
                ).format(sql.Identifier(database.schema, "twinledger_events")),
                (originator_id, version),
            ).rowcount
    else:
        connection = sqlite3.connect(database.sqlite_path)
        try:
            deleted = connection.execute(
                "DELETE FROM stored_events WHERE originator_id = ? AND originator_version = ?",
                (originator_id.hex, version),
            ).rowcount
            connection.commit()
        finally:
            connection.close()
    assert deleted == 1


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and not re.search(r"\b[A-Z]\w*Error\b", err), err
    return lines[0]


def test_a_run_with_a_missing_version_is_named_with_its_gap_and_replay_all_goes_on(
    database_url: str, ledger: TwinLedger
) -> None:
    twin_id = ledger.clone_twin(name="Mars A", body="mars")
    broken, sound = (
        ledger.queue_run(
            twin_id, pattern="mars_terraform", duration_years=3, budget_cents=BUDGET, seed=seed
        )
        for seed in (1, 2)
    )
    ledger.execute_run(broken)
    ledger.execute_run(sound)
    delete_event(database_url, broken, 3)  # RunQueued 1, RunStarted 2, year 1 is version 3

    for command in (["replay", str(broken)], ["show-run", str(broken)]):
        code, out, err = twinledger(database_url, *command)
        assert code == 1, (command, out, err)
        line = one_error_line(err)
        assert line == (
            f"error: run {broken} cannot be read: its stored events skip version 3 "
            "(the next stored is 4); an event is missing from the log"
        )

    code, out, err = twinledger(database_url, "replay", "--all")
    assert code == 1, (out, err)
    lines = out.strip().splitlines()
    assert f"{broken} unreadable: its stored events skip version 3" in out
    assert any(line.startswith(f"{sound} identical: 3 years") for line in lines), out
    assert lines[-1] == ("2 completed run(s): 1 identical, 0 diverged, 0 refused, 1 unreadable")
    code, out, err = twinledger(database_url, "show-run", str(sound))
    assert code == 0, err


def test_expire_reports_an_unreadable_twin_and_expires_the_others(
    database_url: str, ledger: TwinLedger
) -> None:
    broken = ledger.clone_twin(name="Broken", body="mars", expires_in=timedelta(days=1))
    ledger.extend_twin(broken, by=timedelta(days=1))
    ledger.extend_twin(broken, by=timedelta(days=1))
    others = [
        ledger.clone_twin(name=name, body="venus", expires_in=timedelta(days=1))
        for name in ("Venus A", "Venus B")
    ]
    twinledger(database_url, "projections", "run", "--once")
    delete_event(database_url, broken, 2)

    code, out, err = twinledger(database_url, "expire", "--now", "2100-01-01T00:00:00Z")
    assert code == 1, (out, err)
    line = one_error_line(err)
    assert line == (
        f"error: twin {broken} not expired: twin {broken} cannot be read: its stored events "
        "skip version 2 (the next stored is 3); an event is missing from the log"
    )
    assert out.strip() == "expired 2 twins (0 runs cancelled) of 3 candidates, 1 unreadable"
    for twin_id in others:
        assert ledger.get_twin(twin_id).status == TwinStatus.DELETED

    code, out, err = twinledger(database_url, "expire", "--now", "2100-01-01T00:00:00Z")
    assert code == 1 and out.strip().startswith("expired 0 twins"), (out, err)


def test_event_count_counts_events_not_the_highest_id(
    database_url: str, ledger: TwinLedger
) -> None:
    twin_id = ledger.clone_twin(name="Mars A", body="mars")
    run_id = ledger.queue_run(
        twin_id, pattern="mars_terraform", duration_years=2, budget_cents=BUDGET, seed=3
    )
    ledger.execute_run(run_id)
    assert ledger.get_run(run_id).status == RunStatus.COMPLETED
    stored = ledger.event_count()
    head = ledger.recorder.max_notification_id()
    assert stored == head == 8  # TwinCloned; RunQueued; started: 2; years: 2; completed: 2
    delete_event(database_url, run_id, 3)
    assert ledger.event_count() == stored - 1
    assert ledger.recorder.max_notification_id() == head


def test_store_errors_cross_process_boundaries_intact() -> None:
    """Sample runs execute in worker processes: their errors are pickled back."""
    ident = UUID(int=7)
    for error in (
        RunInterrupted(ident, "database is locked"),
        UnreadableStream("run", ident, "its stored events skip version 3"),
        UndecodableStream("twin", ident, "cannot decode"),
        UnusableDatabase("sqlite:/x.db", "is a directory"),
    ):
        copy = pickle.loads(pickle.dumps(error))
        assert (type(copy), str(copy)) == (type(error), str(error))
