"""PostgreSQL helpers: connections, and setting up the ledger's schema and tables once.

eventsourcing runs its start-up DDL (CREATE TABLE IF NOT EXISTS, CREATE TYPE, CREATE OR REPLACE
FUNCTION) each time an application is constructed. Run concurrently on one schema, that DDL
collides in the catalog (``tuple concurrently updated``). So the ledger runs it only when the
store does not exist yet, and then under an advisory lock on the schema: the first process
creates the tables, the others wait and find them made (docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from eventsourcing.persistence import ProgrammingError
from psycopg import sql

from infrastructure.integrity import chain_table_name, hashes_table_name
from infrastructure.settings import Database

EVENTS_TABLE = "twinledger_events"
CHAIN_TABLE = chain_table_name(EVENTS_TABLE)  # the hash chain's records (docs/integrity.md)
HASHES_TABLE = hashes_table_name(EVENTS_TABLE)  # its per-event rows in stores of earlier releases
EVENT_TYPE = "stored_event_uuid"  # the composite type eventsourcing's INSERT path uses
SETUP_LOCK = "twinledger-setup:{schema}"


def connect(database: Database) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(database.psycopg_conninfo(), autocommit=True)


def store_exists(connection: psycopg.Connection[Any], schema: str) -> bool:
    """True if the schema holds the ledger's event and chain tables and the library's composite
    type. A store made before the chain records is not: it gets them (converted from its
    per-event hashes table, or computed from its events) under the set-up lock, once."""
    row = connection.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables"
        "  WHERE schemaname = %(schema)s AND tablename = %(table)s)"
        " AND EXISTS (SELECT 1 FROM pg_catalog.pg_tables"
        "  WHERE schemaname = %(schema)s AND tablename = %(hashes)s)"
        " AND EXISTS (SELECT 1 FROM pg_catalog.pg_type t"
        "  JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace"
        "  WHERE n.nspname = %(schema)s AND t.typname = %(type)s)",
        {"schema": schema, "table": EVENTS_TABLE, "hashes": CHAIN_TABLE, "type": EVENT_TYPE},
    ).fetchone()
    return bool(row and row[0])


def conversion_refused(connection: psycopg.Connection[Any], schema: str) -> str | None:
    """Why this connection's role cannot open the store, if its chain is still in the per-event
    hashes table of an earlier release and the role does not own that table (the conversion
    drops it): the message to show; else None."""
    row = connection.execute(
        "SELECT t.tableowner FROM pg_catalog.pg_tables t WHERE t.schemaname = %(schema)s"
        " AND t.tablename = %(hashes)s AND NOT pg_has_role(current_user, t.tableowner, 'USAGE')"
        " AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_tables"
        "  WHERE schemaname = %(schema)s AND tablename = %(chain)s)",
        {"schema": schema, "hashes": HASHES_TABLE, "chain": CHAIN_TABLE},
    ).fetchone()
    if row is None:
        return None
    return (
        f"this store's hash chain is in {HASHES_TABLE}, the per-event table of an earlier "
        f"release: open it once as {row[0]}, the owner of its tables (any command, e.g. "
        "`twinledger verify`, with the owner's URL), to convert it to chain records "
        "(docs/integrity.md); nothing was changed"
    )


@contextmanager
def setting_up(database: Database) -> Iterator[bool]:
    """Yield True if the store exists (no DDL needed). Otherwise create the schema and yield
    False while holding the schema's set-up lock, so the caller's DDL runs in one process at a
    time; the lock is released on exit."""
    with connect(database) as connection:
        if store_exists(connection, database.schema):
            yield True
            return
        refused = conversion_refused(connection, database.schema)
        if refused:
            raise ProgrammingError(refused)
        key = SETUP_LOCK.format(schema=database.schema)
        connection.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
        try:
            # only when missing: PostgreSQL checks CREATE on the database even for IF NOT
            # EXISTS, which a schema's owner converting its store need not have
            found = connection.execute(
                "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (database.schema,)
            ).fetchone()
            if found is None:
                connection.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                        sql.Identifier(database.schema)
                    )
                )
            yield store_exists(connection, database.schema)
        finally:
            if not connection.closed:
                connection.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
