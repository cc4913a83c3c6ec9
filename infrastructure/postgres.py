"""PostgreSQL helpers: schema setup for the ledger's tables."""

from __future__ import annotations

import psycopg
from psycopg import sql

from infrastructure.settings import Database


def connect(database: Database) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(database.psycopg_conninfo(), autocommit=True)


def ensure_schema(database: Database) -> None:
    """Create the database's schema if missing (eventsourcing creates tables, not schemas)."""
    with connect(database) as connection:
        connection.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(database.schema))
        )
