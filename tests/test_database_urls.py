"""Every bad --db is one line naming the URL or path (password masked), exit 2; a password
holding quotes, spaces, = or host= reaches PostgreSQL intact (the conninfo is psycopg's)."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from conftest import fresh_postgres_url, postgres_base_url
from hypothesis import given
from hypothesis import strategies as st
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from typer.testing import CliRunner

from infrastructure.application import TwinLedger
from infrastructure.cli import app
from infrastructure.errors import UnusableDatabase
from infrastructure.settings import Database, mask_password, resolve_database

runner = CliRunner()
CLASS_NAME = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception)\b")
SECRET = "s3cr3t-pw"


def twinledger(db: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--db", db, *args])
    return result.exit_code, result.stdout, result.stderr


def assert_refused(db: str, names: str, *, because: str) -> None:
    for command in (["twins"], ["clone", "mars", "--name", "Mars A"]):
        code, out, err = twinledger(db, *command)
        assert code == 2, (db, command, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("error: db: "), err
        assert names in lines[0], err
        assert because in lines[0], err
        assert SECRET not in err and "Traceback" not in err, err
        assert not CLASS_NAME.search(err), err


@pytest.mark.parametrize(
    ("db", "names", "because"),
    [
        (f"postgresql://u:{SECRET}@127.0.0.1:notaport/test", "u:***@", "malformed URL"),
        (f"postgresql://u:{SECRET}@[::1/test", "u:***@", "malformed URL"),
        (f"mysql://u:{SECRET}@127.0.0.1/test", "mysql://u:***@", "unknown kind of database"),
        ("sqlite:ledger.db", "sqlite:ledger.db", "use sqlite:///"),
        ("postgresql://postgres@127.0.0.1/test?schema=a%22b", "schema", "schema name"),
        ("postgresql://postgres@127.0.0.1/test?schema=x';drop", "schema", "schema name"),
        ("postgresql://postgres@127.0.0.1/test?schema=café", "schema", "schema name"),
        ("postgresql://postgres@127.0.0.1/test?sslmod=require", "sslmod", "unknown parameter"),
    ],
)
def test_a_malformed_database_url_is_one_line_naming_it(db: str, names: str, because: str) -> None:
    assert_refused(db, names, because=because)


def test_a_path_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "ledger.db"
    assert_refused(str(path), str(path), because="does not exist")
    assert not path.parent.exists()


def test_a_directory_is_refused(tmp_path: Path) -> None:
    assert_refused(str(tmp_path), str(tmp_path), because="is a directory")


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"not a database, just some text " * 200)
    assert_refused(str(path), str(path), because="not a database")
    assert path.read_bytes().startswith(b"not a database")


def test_a_read_only_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ledger.db"
    TwinLedger.open(str(path)).close()
    path.chmod(0o444)
    if os.geteuid() == 0:  # root may write any file: let os.access answer as for a user
        real = os.access
        monkeypatch.setattr(
            os, "access", lambda p, mode: real(p, mode) and not (str(p) == str(path) and mode & 2)
        )
    assert_refused(str(path), str(path), because="read-only")


@pytest.mark.postgres
def test_an_unreachable_server_is_refused_with_the_password_masked() -> None:
    db = f"postgresql://someone:{SECRET}@127.0.0.1:1/test"
    assert_refused(db, "postgresql://someone@127.0.0.1:1/test", because="connect")
    with pytest.raises(UnusableDatabase, match=r"^db: postgresql://someone@127\.0\.0\.1:1/test"):
        TwinLedger.open(db)


@given(st.text(min_size=1, max_size=40).filter(lambda p: "\x00" not in p))
def test_any_password_round_trips_through_the_conninfo(password: str) -> None:
    database = Database(url="", backend="postgres", host="db.example", user="u", password=password)
    parsed = conninfo_to_dict(database.psycopg_conninfo())
    assert parsed["password"] == password
    assert parsed["host"] == "db.example"
    assert parsed["user"] == "u"
    assert mask_password(f"postgresql://u:{quote(password, safe='')}@h/db") == (
        "postgresql://u:***@h/db"
    )


HOSTILE_PASSWORD = "it's a pass=word' host='evil.invalid' x='"


@pytest.fixture
def hostile_role() -> Iterator[tuple[str, str]]:
    """A real role whose password holds quotes, spaces, = and an injected host=, and a fresh
    schema name for it; the role and all it owns are dropped afterwards."""
    with fresh_postgres_url() as url:
        schema = resolve_database(url).schema
        role = f"tl_{uuid.uuid4().hex[:10]}"
        base = postgres_base_url()
        with psycopg.connect(base, autocommit=True) as connection:
            connection.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(HOSTILE_PASSWORD)
                )
            )
            connection.execute(
                sql.SQL("GRANT CREATE, CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(connection.info.dbname), sql.Identifier(role)
                )
            )
        try:
            yield role, schema
        finally:
            with psycopg.connect(base, autocommit=True) as connection:
                connection.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
                connection.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.mark.postgres
def test_a_password_with_quotes_spaces_and_host_is_used_for_everything(
    hostile_role: tuple[str, str],
) -> None:
    role, schema = hostile_role
    base = resolve_database(postgres_base_url())
    db = (
        f"postgresql://{role}:{quote(HOSTILE_PASSWORD, safe='')}@{base.host}:{base.port}"
        f"/{base.dbname}?schema={schema}"
    )
    database = resolve_database(db)
    assert database.password == HOSTILE_PASSWORD
    parsed = conninfo_to_dict(database.psycopg_conninfo())
    assert (parsed["host"], parsed["password"]) == (base.host, HOSTILE_PASSWORD)

    code, out, err = twinledger(db, "clone", "mars", "--name", "Mars A")  # schema set-up, writes
    assert code == 0, (out, err)
    assert "warning" not in err, err  # the projections caught up through their own connection
    code, out, err = twinledger(db, "twins", "--format", "json")
    assert code == 0 and '"Mars A"' in out, (out, err)
    code, out, err = twinledger(db, "projections", "status")
    assert code == 0, (out, err)
    with psycopg.connect(postgres_base_url(), autocommit=True) as connection:
        owners = connection.execute(
            "SELECT n.nspowner::regrole::text, "
            "(SELECT tableowner FROM pg_tables WHERE schemaname = %s "
            " AND tablename = 'twinledger_events'), "
            "(SELECT tableowner FROM pg_tables WHERE schemaname = %s "
            " AND tablename = 'digital_twins') "
            "FROM pg_namespace n WHERE n.nspname = %s",
            (schema, schema, schema),
        ).fetchone()
    assert owners == (role, role, role)  # set up by the role, through the conninfo
