"""Least-privilege PostgreSQL roles for one ledger schema (docs/integrity.md, "Roles").

- owner: owns the schema and every object in it; schema changes (and projection rebuilds,
  which drop and create read tables) run as the owner.
- writer: the application, the API server and the workers. SELECT and INSERT on the event log
  and its hash chain, never UPDATE, DELETE or TRUNCATE; everything on the read tables; CREATE on
  the schema (the projector's ``CREATE TABLE IF NOT EXISTS`` of its tracking table needs it);
  EXECUTE on the log's lock function (infrastructure/pg_recorder.py), which takes the table
  lock as the owner; TEMPORARY on the database (the staged append's session tables,
  TWINLEDGER_PG_APPEND=staged).
- reader: dashboards and analysts. SELECT on the read tables, nothing on the log.

Idempotent: run it again after new read tables appear (it re-grants on every table it finds).
The roles are made with LOGIN when missing; passwords come from the environment only
(TWINLEDGER_OWNER_PASSWORD, TWINLEDGER_WRITER_PASSWORD, TWINLEDGER_READER_PASSWORD) and are
never printed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from domain.errors import ValidationError
from infrastructure.postgres import CHAIN_TABLE, EVENTS_TABLE, HASHES_TABLE, connect
from infrastructure.settings import SCHEMA_NAME, Database

PASSWORD_VARIABLE = "TWINLEDGER_{}_PASSWORD"
LOG_TABLES = (EVENTS_TABLE, CHAIN_TABLE, HASHES_TABLE)  # hashes: stores not yet converted


@dataclass(frozen=True)
class Roles:
    owner: str
    writer: str
    reader: str

    def names(self) -> dict[str, str]:
        return {"owner": self.owner, "writer": self.writer, "reader": self.reader}


def check(roles: Roles) -> None:
    for kind, name in roles.names().items():
        if not SCHEMA_NAME.fullmatch(name):
            raise ValidationError(
                kind, f"{name!r} must be ASCII letters, digits and _ (at most 63)"
            )
    if len(set(roles.names().values())) != 3:
        raise ValidationError("writer", "the owner, writer and reader must be three roles")


def passwords_from_env(roles: Roles) -> dict[str, str]:
    found = {}
    for kind, name in roles.names().items():
        variable = PASSWORD_VARIABLE.format(kind.upper())
        value = os.environ.get(variable)
        if not value:
            raise ValidationError(kind, f"--password-from-env: {variable} is not set")
        found[name] = value
    return found


def apply(
    database: Database,
    roles: Roles,
    passwords: dict[str, str] | None = None,
    *,
    dry_run: bool = False,
    say: Callable[[str], None] = lambda _: None,
) -> None:
    """Create the roles if missing and set ownership and grants on ``database``'s schema, in one
    transaction. ``say`` receives each statement (passwords masked)."""
    check(roles)
    if not database.is_postgres:
        raise ValidationError("db", "roles are PostgreSQL's; a SQLite file has none")
    with connect(database) as connection, connection.transaction(force_rollback=dry_run):
        for statement, shown in _statements(connection, database.schema, roles, passwords or {}):
            say(shown)
            connection.execute(statement)


def _statements(
    connection: psycopg.Connection[tuple[object, ...]],
    schema: str,
    roles: Roles,
    passwords: dict[str, str],
) -> list[tuple[sql.Composed, str]]:
    ident = sql.Identifier
    out: list[tuple[sql.Composed, str]] = []

    def add(statement: sql.Composed, shown: str | None = None) -> None:
        out.append((statement, shown or statement.as_string(connection)))

    for name in roles.names().values():
        exists = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
        if exists is None:
            add(sql.SQL("CREATE ROLE {} LOGIN").format(ident(name)))
        if name in passwords:
            add(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    ident(name), sql.Literal(passwords[name])
                ),
                f"ALTER ROLE {name} PASSWORD '***'",
            )
    s, owner, writer, reader = (
        ident(schema),
        ident(roles.owner),
        ident(roles.writer),
        ident(roles.reader),
    )
    tables = [
        str(row[0])
        for row in connection.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY c.relname",
            (schema,),
        )
    ]
    if EVENTS_TABLE not in tables:
        raise ValidationError("db", f"schema {schema} holds no ledger ({EVENTS_TABLE})")
    types = [
        str(row[0])
        for row in connection.execute(
            "SELECT t.typname FROM pg_type t JOIN pg_class c ON c.oid = t.typrelid"
            " JOIN pg_namespace n ON n.oid = t.typnamespace"
            " WHERE n.nspname = %s AND c.relkind = 'c'",
            (schema,),
        )
    ]
    functions = [
        str(row[0])
        for row in connection.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s",
            (schema,),
        )
    ]
    add(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(s, owner))
    for table in tables:
        add(sql.SQL("ALTER TABLE {} OWNER TO {}").format(ident(schema, table), owner))
    for name in types:
        add(sql.SQL("ALTER TYPE {} OWNER TO {}").format(ident(schema, name), owner))
    for function in functions:
        add(sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(sql.SQL(function), owner))
        add(sql.SQL("REVOKE ALL ON FUNCTION {} FROM PUBLIC").format(sql.SQL(function)))
        add(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(sql.SQL(function), writer))
    add(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(s))
    add(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}, {}").format(s, writer, reader))
    add(sql.SQL("GRANT CREATE ON SCHEMA {} TO {}").format(s, writer))
    # TWINLEDGER_PG_APPEND=staged copies each batch into temporary tables of the session
    # (infrastructure/pg_staged.py) first; PUBLIC has TEMPORARY by default, not everywhere.
    database = ident(connection.info.dbname)
    add(sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {}").format(database, writer))
    add(
        sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM PUBLIC, {}, {}").format(
            s, writer, reader
        )
    )
    add(sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(s, writer))
    for table in tables:
        target = ident(schema, table)
        if table in LOG_TABLES:
            add(sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(target, writer))
        else:
            add(
                sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {} TO {}").format(
                    target, writer
                )
            )
            add(sql.SQL("GRANT SELECT ON {} TO {}").format(target, reader))
    return out
