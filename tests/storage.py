"""Test helper: rewrite a stored event's state directly in the database, as an attacker or a
buggy script would, to check that replay notices."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any
from uuid import UUID

import msgspec
import psycopg
from psycopg import sql

from infrastructure.codec import named_state
from infrastructure.settings import resolve_database


def rewrite_stored_event(
    database_url: str, originator_id: UUID, version: int, change: Callable[[dict[str, Any]], None]
) -> None:
    """Decode the stored state of (originator_id, version), apply ``change``, write it back.

    The state is handed to ``change`` named (a compact state too, infrastructure/codec.py) and
    written back as named JSON, which the codec reads whatever the class's storage.
    SQLite stores ids as 32 hex digits (eventsourcing's choice), PostgreSQL as uuid.
    """
    database = resolve_database(database_url)
    if database.is_postgres:
        table = sql.Identifier(database.schema, "twinledger_events")
        with psycopg.connect(database.psycopg_conninfo(), autocommit=True) as connection:
            row = connection.execute(
                sql.SQL(
                    "SELECT state, topic FROM {} WHERE originator_id = %s"
                    " AND originator_version = %s"
                ).format(table),
                (originator_id, version),
            ).fetchone()
            assert row is not None, "no such stored event"
            state = named_state(row[1], bytes(row[0]), originator_id, version)
            change(state)
            connection.execute(
                sql.SQL(
                    "UPDATE {} SET state = %s WHERE originator_id = %s AND originator_version = %s"
                ).format(table),
                (msgspec.json.encode(state), originator_id, version),
            )
        return
    connection = sqlite3.connect(database.sqlite_path)
    try:
        row = connection.execute(
            "SELECT state, topic FROM stored_events WHERE originator_id = ?"
            " AND originator_version = ?",
            (originator_id.hex, version),
        ).fetchone()
        assert row is not None, "no such stored event"
        state = named_state(row[1], bytes(row[0]), originator_id, version)
        change(state)
        connection.execute(
            "UPDATE stored_events SET state = ? WHERE originator_id = ? AND originator_version = ?",
            (msgspec.json.encode(state), originator_id.hex, version),
        )
        connection.commit()
    finally:
        connection.close()
