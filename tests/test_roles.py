"""Least-privilege PostgreSQL roles (`twinledger db roles`, docs/integrity.md): the writer runs
the ledger but cannot UPDATE or DELETE a stored event or its hash; the reader sees read tables
only; the owner makes schema changes. Each test connects as each role."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from conftest import fresh_postgres_url, postgres_base_url
from eventsourcing.persistence import PersistenceError
from psycopg import errors
from typer.testing import CliRunner

from infrastructure.application import TwinLedger
from infrastructure.cli import app
from infrastructure.errors import UnusableDatabase
from infrastructure.settings import resolve_database
from projections.runner import Projector

pytestmark = pytest.mark.postgres
runner = CliRunner()


@dataclass(frozen=True)
class Store:
    url: str
    schema: str
    owner: str
    writer: str
    reader: str

    def as_role(self, role: str) -> str:
        d = resolve_database(self.url)
        return f"postgresql://{role}@{d.host}:{d.port}/{d.dbname}?schema={d.schema}"

    def connect(self, role: str) -> psycopg.Connection[tuple[object, ...]]:
        d = resolve_database(self.url)
        return psycopg.connect(
            host=d.host, port=d.port, dbname=d.dbname, user=role, autocommit=True
        )


@pytest.fixture
def store() -> Iterator[Store]:
    suffix = uuid.uuid4().hex[:8]
    names = [f"tl_{suffix}_{kind}" for kind in ("owner", "writer", "reader")]
    with fresh_postgres_url() as url:
        ledger = TwinLedger.open(url)  # made by the administrator, as at installation
        ledger.close()
        with Projector(resolve_database(url)) as projector:
            projector.catch_up()
        try:
            yield Store(url, resolve_database(url).schema, *names)
        finally:
            with psycopg.connect(postgres_base_url(), autocommit=True) as admin:
                for name in names:
                    exists = admin.execute(
                        "SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)
                    ).fetchone()
                    if exists:
                        admin.execute(f'DROP OWNED BY "{name}" CASCADE')
                        admin.execute(f'DROP ROLE "{name}"')


def make_roles(store: Store, *extra: str) -> tuple[int, str, str]:
    result = runner.invoke(
        app,
        [
            "--db",
            store.url,
            "db",
            "roles",
            "--owner",
            store.owner,
            "--writer",
            store.writer,
            "--reader",
            store.reader,
            *extra,
        ],
    )
    return result.exit_code, result.stdout, result.stderr


def test_the_writer_runs_the_ledger_but_cannot_change_or_delete_an_event(store: Store) -> None:
    code, _, err = make_roles(store)
    assert code == 0, err
    ledger = TwinLedger.open(store.as_role(store.writer))
    try:
        twin = ledger.clone_twin(name="Mars W", body="mars")
        run = ledger.queue_run(
            twin, pattern="mars_terraform", duration_years=30, budget_cents=10**12, seed=2
        )
        ledger.execute_run(run)  # a 30-year chunk: the COPY path
        ledger.cancel_run(
            ledger.queue_run(
                twin, pattern="mars_terraform", duration_years=5, budget_cents=10**12, seed=3
            )
        )
    finally:
        ledger.close()
    with Projector(resolve_database(store.as_role(store.writer))) as projector:
        projector.catch_up()
    verified = runner.invoke(app, ["--db", store.as_role(store.writer), "verify"])
    assert verified.exit_code == 0, verified.stderr

    s = store.schema
    with store.connect(store.writer) as writer:
        for statement in (
            f'UPDATE "{s}".twinledger_events SET state = state',
            f'DELETE FROM "{s}".twinledger_events',
            f'TRUNCATE "{s}".twinledger_events',
            f'UPDATE "{s}".twinledger_event_chain SET hashes = hashes',
            f'DELETE FROM "{s}".twinledger_event_chain',
            f'ALTER TABLE "{s}".twinledger_events DISABLE TRIGGER ALL',
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                writer.execute(statement)
        # the read tables are the writer's to keep current
        writer.execute(f'UPDATE "{s}".digital_twins SET name = name')
    assert runner.invoke(app, ["--db", store.url, "verify"]).exit_code == 0  # nothing changed


def test_a_per_event_store_is_converted_by_its_owner_and_keeps_its_grants(store: Store) -> None:
    """A store of an earlier release (one hash row per event), its roles made: the writer
    cannot convert it (it could not drop the old table) and is told to open it as the owner,
    which converts it; the chain records get the old table's grants, so the writer appends and
    still cannot UPDATE or DELETE a hash."""
    from test_integrity import to_per_event_format

    ledger = TwinLedger.open(store.url)
    try:
        ledger.clone_twin(name="Mars O", body="mars")
    finally:
        ledger.close()
    to_per_event_format(store.url)
    code, _, err = make_roles(store)  # the old table is the owner's, the writer's to INSERT
    assert code == 0, err
    with pytest.raises(UnusableDatabase, match=f"open it once as {store.owner}, the owner"):
        TwinLedger.open(store.as_role(store.writer))
    result = runner.invoke(app, ["--db", store.as_role(store.owner), "verify"])
    assert result.exit_code == 0, result.stderr
    ledger = TwinLedger.open(store.as_role(store.writer))
    try:
        twin = ledger.clone_twin(name="Mars P", body="mars")
        run = ledger.queue_run(
            twin, pattern="mars_terraform", duration_years=30, budget_cents=10**12, seed=2
        )
        ledger.execute_run(run)
    finally:
        ledger.close()
    s = store.schema
    with store.connect(store.writer) as writer:
        for statement in (
            f'UPDATE "{s}".twinledger_event_chain SET hashes = hashes',
            f'DELETE FROM "{s}".twinledger_event_chain',
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                writer.execute(statement)
    with store.connect(store.reader) as reader, pytest.raises(errors.InsufficientPrivilege):
        reader.execute(f'SELECT * FROM "{s}".twinledger_event_chain')
    assert runner.invoke(app, ["--db", store.as_role(store.writer), "verify"]).exit_code == 0


def test_the_reader_sees_read_tables_only(store: Store) -> None:
    assert make_roles(store)[0] == 0
    s = store.schema
    with store.connect(store.reader) as reader:
        assert reader.execute(f'SELECT count(*) FROM "{s}".digital_twins').fetchone() == (0,)
        for statement in (
            f'SELECT * FROM "{s}".twinledger_events',
            f'SELECT * FROM "{s}".twinledger_event_chain',
            f'INSERT INTO "{s}".twinledger_events (originator_id, originator_version)'
            " VALUES (gen_random_uuid(), 1)",
            f'DELETE FROM "{s}".digital_twins',
            f'SELECT "{s}".twinledger_events_lock()',
            f'CREATE TABLE "{s}".mine (x int)',
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                reader.execute(statement)
    ledger = TwinLedger.open(store.as_role(store.reader))
    try:
        with pytest.raises(PersistenceError, match="permission denied"):
            ledger.clone_twin(name="Mars R", body="mars")
    finally:
        ledger.close()


def test_the_owner_changes_the_schema(store: Store) -> None:
    assert make_roles(store)[0] == 0
    s = store.schema
    with store.connect(store.owner) as owner:
        owner.execute(f'CREATE INDEX ON "{s}".twinledger_events (topic)')
        owner.execute(f'ALTER TABLE "{s}".digital_twins ADD COLUMN note text')
    with store.connect(store.writer) as writer, pytest.raises(errors.InsufficientPrivilege):
        writer.execute(f'ALTER TABLE "{s}".digital_twins DROP COLUMN note')


def test_passwords_come_from_the_environment_and_are_never_printed(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for kind in ("OWNER", "WRITER", "READER"):
        monkeypatch.setenv(f"TWINLEDGER_{kind}_PASSWORD", f"secret-{kind}-x")
    code, out, err = make_roles(store, "--password-from-env", "--dry-run")
    assert code == 0, err
    assert "PASSWORD '***'" in out and "secret-" not in out + err
    with psycopg.connect(postgres_base_url(), autocommit=True) as admin:  # dry run: no role
        assert admin.execute(
            "SELECT count(*) FROM pg_roles WHERE rolname = %s", (store.writer,)
        ).fetchone() == (0,)
    code, out, err = make_roles(store, "--password-from-env")
    assert code == 0, err
    assert "secret-" not in out + err
    with psycopg.connect(postgres_base_url(), autocommit=True) as admin:
        assert admin.execute(
            "SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = %s", (store.writer,)
        ).fetchone() == (True,)
    monkeypatch.delenv("TWINLEDGER_READER_PASSWORD")
    code, _, err = make_roles(store, "--password-from-env")
    assert code == 2 and "reader" in err


def test_the_log_refused_to_the_reader_is_one_clear_line(store: Store) -> None:
    """A command the database refuses this role (outside ``execute``): one line naming the
    command, the database and the privilege the database names; exit 2 (the user fixes the
    role or the URL), no driver class name."""
    assert make_roles(store)[0] == 0
    result = runner.invoke(app, ["--db", store.as_role(store.reader), "digest"])
    assert result.exit_code == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: db: {resolve_database(store.as_role(store.reader)).describe()}: "
        "`twinledger digest` was refused: permission denied for table twinledger_events"
    ]


# --- the staged append (TWINLEDGER_PG_APPEND=staged) under the writer ------------------------


@pytest.fixture
def hardened() -> Iterator[Store]:
    """A database of its own whose PUBLIC may not create temporary tables (a hardened server:
    REVOKE TEMPORARY ... FROM PUBLIC), holding a ledger made by the administrator."""
    suffix = uuid.uuid4().hex[:8]
    dbname = f"tl_{suffix}_db"
    names = [f"tl_{suffix}_{kind}" for kind in ("owner", "writer", "reader")]
    base = resolve_database(postgres_base_url())
    url = f"postgresql://{base.user}@{base.host}:{base.port}/{dbname}?schema=ledger"
    with psycopg.connect(postgres_base_url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
        admin.execute(f'REVOKE TEMPORARY ON DATABASE "{dbname}" FROM PUBLIC')
    try:
        TwinLedger.open(url).close()
        with Projector(resolve_database(url)) as projector:
            projector.catch_up()
        yield Store(url, "ledger", *names)
    finally:
        with psycopg.connect(postgres_base_url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            for name in names:
                admin.execute(f'DROP ROLE IF EXISTS "{name}"')


def _execute_a_run(url: str) -> str:
    ledger = TwinLedger.open(url)
    try:
        twin = ledger.clone_twin(name="Mars S", body="mars")
        run = ledger.queue_run(
            twin, pattern="mars_terraform", duration_years=30, budget_cents=10**12, seed=2
        )
        return str(ledger.execute_run(run).status)  # a 30-year chunk: the staged COPY
    finally:
        ledger.close()


def test_the_writer_appends_staged_where_public_may_not_make_temporary_tables(
    hardened: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = make_roles(hardened)
    assert code == 0, err
    assert f'GRANT TEMPORARY ON DATABASE "{resolve_database(hardened.url).dbname}"' in out
    monkeypatch.setenv("TWINLEDGER_PG_APPEND", "staged")
    assert _execute_a_run(hardened.as_role(hardened.writer)) == "completed"
    verified = runner.invoke(app, ["--db", hardened.as_role(hardened.writer), "verify"])
    assert verified.exit_code == 0, verified.stderr


def test_a_writer_without_temporary_is_refused_staged_naming_the_privilege(
    hardened: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Roles made before `db roles` granted TEMPORARY, or a DBA who revoked it: staged is
    refused at open, naming the variable, the privilege, the role and the database, exit 2,
    nothing written; copy (the default) needs no such privilege."""
    assert make_roles(hardened)[0] == 0
    dbname = resolve_database(hardened.url).dbname
    with psycopg.connect(postgres_base_url(), autocommit=True) as admin:
        admin.execute(f'REVOKE TEMPORARY ON DATABASE "{dbname}" FROM "{hardened.writer}"')
    writer = hardened.as_role(hardened.writer)
    monkeypatch.setenv("TWINLEDGER_PG_APPEND", "staged")
    refused = runner.invoke(app, ["--db", writer, "clone", "mars", "-q"])
    assert refused.exit_code == 2, refused.stderr
    assert refused.stderr.splitlines() == [
        f"error: TWINLEDGER_PG_APPEND: staged needs the TEMPORARY privilege on database "
        f"{dbname} for role {hardened.writer} (its staging tables are temporary); "
        "`twinledger db roles` grants it to the writer, or use copy (the default), which "
        "needs none"
    ]
    monkeypatch.delenv("TWINLEDGER_PG_APPEND")
    ledger = TwinLedger.open(hardened.url)
    try:
        assert ledger.event_count() == 0
    finally:
        ledger.close()
    assert _execute_a_run(writer) == "completed"
