"""A COPY append whose table lock is held for one round trip of server work only (an experiment:
TWINLEDGER_PG_APPEND=staged; docs/performance.md, "8 writers: where the time goes").

The COPY recorder (pg_recorder.py) takes the events table's EXCLUSIVE lock first and keeps it
across the COPY of the events, the hashes and the commit: several round trips, each of which
needs the client and then its backend to be scheduled again while every other writer waits.
On a busy machine those wake-ups, not the work, are most of the time the lock is held
(measured: 46-61 % of one writer's time is "holding the lock, its backend waiting for the
client"). Here the batch is first copied, without the lock, into two temporary tables of the
session (``ON COMMIT DELETE ROWS``), and one statement string then takes the lock, moves the
rows into the log in their order (INSERT ... SELECT ... ORDER BY the batch position, so the
notification ids are drawn in that order, consecutive, as before), inserts the chain records,
reads the last id and commits: the lock is held while the server works, never across a wait for the
client. The previous hashes are read before the lock: a writer chains onto a version it
loaded, so that version and its hash are committed (a concurrent writer of the same version
still conflicts on the primary key, under the lock, as before).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Sequence
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.utils import retry
from psycopg.pq import TransactionStatus
from psycopg.sql import SQL, Identifier

from domain.errors import ValidationError
from infrastructure.integrity import chain_records
from infrastructure.pg_recorder import CopyApplicationRecorder, record_rows

STAGED_EVENTS = "twinledger_staged_events"
STAGED_RECORDS = "twinledger_staged_chain"


class StagedCopyRecorder(CopyApplicationRecorder):
    """COPY into session-local staging tables, then lock, move and commit in one round trip."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        id_type = SQL("uuid" if self.datastore.originator_id_type == "uuid" else "text")
        events = Identifier(self.datastore.schema, self.events_table_name)
        chain = Identifier(self.datastore.schema, self.chain_table_name)
        self.staged: weakref.WeakSet[Any] = weakref.WeakSet()  # connections holding the tables
        self._check_temporary()
        self.create_staging = SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} (position int4, originator_id {},"
            " originator_version int8, topic text, state bytea) ON COMMIT DELETE ROWS;"
            " CREATE TEMP TABLE IF NOT EXISTS {} (originator_id uuid, first_version int8,"
            " hashes bytea) ON COMMIT DELETE ROWS"
        ).format(Identifier(STAGED_EVENTS), id_type, Identifier(STAGED_RECORDS))
        self.copy_staged = SQL(
            "COPY {} (position, originator_id, originator_version, topic, state)"
            " FROM STDIN (FORMAT BINARY)"
        ).format(Identifier(STAGED_EVENTS))
        self.copy_staged_records = SQL(
            "COPY {} (originator_id, first_version, hashes) FROM STDIN (FORMAT BINARY)"
        ).format(Identifier(STAGED_RECORDS))
        moves = SQL(
            "INSERT INTO {} (originator_id, originator_version, topic, state)"
            " SELECT originator_id, originator_version, topic, state FROM {} ORDER BY position;"
            " INSERT INTO {} (originator_id, first_version, hashes)"
            " SELECT originator_id, first_version, hashes FROM {}; "
        ).format(events, Identifier(STAGED_EVENTS), chain, Identifier(STAGED_RECORDS))
        self.finish = {
            durable: SQL("; ").join(
                [
                    *self.lock_table_statements,  # SET LOCAL lock_timeout, the table lock
                    SQL("NOTIFY {}").format(Identifier(self.channel_name)),
                    *([] if durable else [SQL("SET LOCAL synchronous_commit = off")]),
                    moves + self.last_id_statement,
                    SQL("COMMIT"),
                ]
            )
            for durable in (True, False)
        }

    def _check_temporary(self) -> None:
        """Refuse at once, before anything is written, a role that may not create temporary
        tables (the staging tables are): naming the privilege, the role and the database."""
        with self.datastore.get_connection() as connection, connection.cursor() as curs:
            curs.execute(
                "SELECT has_database_privilege(current_database(), 'TEMPORARY') AS allowed,"
                " current_user AS role, current_database() AS database"
            )
            row = curs.fetchone()
        assert row is not None
        if not row["allowed"]:
            raise ValidationError(
                "TWINLEDGER_PG_APPEND",
                f"staged needs the TEMPORARY privilege on database {row['database']} for role "
                f"{row['role']} (its staging tables are temporary); `twinledger db roles` grants "
                "it to the writer, or use copy (the default), which needs none",
            )

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)  # the library's
    def _copy_events(self, stored_events: Sequence[StoredEvent], durable: bool = True) -> list[int]:
        id_type = "uuid" if self.datastore.originator_id_type == "uuid" else "text"
        with self.datastore.get_connection() as connection:
            try:
                with connection.cursor() as curs:
                    if connection not in self.staged:
                        curs.execute(self.create_staging)
                        self.staged.add(connection)
                    curs.execute("BEGIN")
                    with curs.copy(self.copy_staged) as copy:
                        copy.set_types(["int4", id_type, "int8", "text", "bytea"])
                        for position, event in enumerate(stored_events):
                            copy.write_row(
                                (
                                    position,
                                    event.originator_id,
                                    event.originator_version,
                                    event.topic,
                                    event.state,
                                )
                            )
                    hashes = self._chain(curs, stored_events)
                    with curs.copy(self.copy_staged_records) as copy:
                        copy.write(record_rows(chain_records(hashes)))
                    curs.execute(self.finish[durable])
                    last = None
                    while last is None:
                        if curs.description and curs.description[0].name == "currval":
                            row = curs.fetchone()
                            assert row is not None
                            last = int(row["currval"])
                        elif not curs.nextset():
                            raise AssertionError("no last id in the append's results")
            except BaseException:
                if connection.info.transaction_status != TransactionStatus.IDLE:
                    with contextlib.suppress(psycopg.Error):  # broken: the pool discards it
                        connection.rollback()
                raise
        return list(range(last - len(stored_events) + 1, last + 1))
