"""Errors no command expects still print one clear line: a bad TWINLEDGER_PG_APPEND names the
variable and its values (exit 2, nothing written); a database's error names the command, the
database (password masked) and what the database said, exit 2 if it refuses this user, 1 if it
failed (docs/operations.md, Exit codes). Never a Python class name, never a second line."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import ProgrammingError
from psycopg import errors as pg
from typer.testing import CliRunner

from infrastructure.application import TwinLedger
from infrastructure.cli import app
from infrastructure.service import Ledger

runner = CliRunner()
PASSWORD = "s3cret-pw"


def with_password(url: str) -> str:
    """The URL with a password (PostgreSQL: the test server trusts, so any password does)."""
    if url.startswith("postgresql://postgres@"):
        return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@", 1)
    return url


def events_in(url: str) -> int:
    ledger = TwinLedger.open(url)
    try:
        return ledger.event_count()
    finally:
        ledger.close()


def test_a_bad_pg_append_is_refused_naming_the_variable(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: one line naming the variable and the values it takes, exit 2, nothing
    written. SQLite has no such choice: the variable is not read there."""
    monkeypatch.setenv("TWINLEDGER_PG_APPEND", "stagged")
    result = runner.invoke(app, ["--db", database_url, "clone", "mars", "-q"])
    monkeypatch.delenv("TWINLEDGER_PG_APPEND")
    if database_url.startswith("sqlite"):
        assert result.exit_code == 0, result.stderr
        assert events_in(database_url) == 1
        return
    assert result.exit_code == 2, result.stderr
    assert result.stderr == (
        "error: TWINLEDGER_PG_APPEND: 'stagged' is not one of copy (the default), insert, staged\n"
    )
    assert result.stdout == ""
    assert events_in(database_url) == 0


def _driver_error(database_url: str, refused: bool) -> Exception:
    """An error as each back end's driver raises it: refusing this user, or failing."""
    if database_url.startswith("sqlite"):
        text = "attempt to write a readonly database" if refused else "disk I/O error"
        return sqlite3.OperationalError(text)
    if refused:
        error: psycopg.Error = pg.InsufficientPrivilege(
            'permission denied for table digital_twins\nLINE 1: SELECT * FROM "x"."digital_twins"'
        )
    else:
        error = pg.AdminShutdown("terminating connection due to administrator command")
    try:  # as eventsourcing wraps it
        raise ProgrammingError(str(error)) from error
    except ProgrammingError as wrapped:
        return wrapped


@pytest.mark.parametrize("refused", [True, False], ids=["refused", "failed"])
def test_a_database_error_outside_execute_is_one_clear_line(
    database_url: str, monkeypatch: pytest.MonkeyPatch, refused: bool
) -> None:
    url = with_password(database_url)
    runner.invoke(app, ["--db", url, "clone", "mars", "-q"])
    error = _driver_error(database_url, refused)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(Ledger, "twins", refuse)
    result = runner.invoke(app, ["--db", url, "twins"])
    assert result.exit_code == (2 if refused else 1), result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("error: db: "), line
    assert "`twinledger twins`" in line
    assert ("was refused: " if refused else "failed: ") in line
    said = str(error.__cause__ or error).splitlines()[0]
    assert line.endswith(said), line
    for hidden in ("Error", "Privilege", "Shutdown", PASSWORD, "LINE 1"):
        assert hidden not in line, line
    if database_url.startswith("sqlite"):
        assert "sqlite:" in line and "ledger.db" in line
    else:
        assert "postgresql://postgres@" in line and "schema=t_" in line


def test_an_unexpected_error_is_one_line_naming_it(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the database's: a bug, named by its class, on one line, exit 1."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("no column digital_twins.x\n  (a second line)")

    monkeypatch.setattr(Ledger, "twins", broken)
    result = runner.invoke(app, ["--db", f"sqlite:///{tmp_path}/ledger.db", "twins"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == ["error: unexpected ValueError: no column digital_twins.x"]


def test_serve_refuses_a_bad_setting_before_it_starts(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve` opens the store before starting uvicorn: a bad setting is the same one line,
    exit 2, not uvicorn's traceback of a failed start."""
    import uvicorn

    started: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda application, **options: started.append(options))
    monkeypatch.setenv("TWINLEDGER_PG_APPEND", "bogus")
    result = runner.invoke(app, ["--db", database_url, "serve", "--no-resume-queued"])
    if database_url.startswith("sqlite"):
        assert result.exit_code == 0 and len(started) == 1, result.stderr
        return
    assert result.exit_code == 2, result.stderr
    assert result.stderr.splitlines() == [
        "error: TWINLEDGER_PG_APPEND: 'bogus' is not one of copy (the default), insert, staged"
    ]
    assert started == []


def test_a_postgresql_only_bench_on_sqlite_names_the_field(tmp_path: Any) -> None:
    """`bench --scale-out` on SQLite: the user's --db, exit 2 (it was `unexpected ValueError`)."""
    result = runner.invoke(
        app, ["--db", f"sqlite:///{tmp_path}/ledger.db", "bench", "--scale-out", "1,2"]
    )
    assert result.exit_code == 2, result.stderr
    assert result.stderr.splitlines() == [
        "error: db: --scale-out needs PostgreSQL (--db postgresql://...)"
    ]
