"""A PostgreSQL application recorder that appends large batches with COPY.

eventsourcing's recorder inserts a batch with a pipelined executemany of INSERT ... RETURNING.
For the hundreds of YearResultRecorded events a run saves per chunk, COPY FROM STDIN (binary)
is several times faster. Everything else is the library's: the same table, the same
``LOCK TABLE ... IN EXCLUSIVE MODE`` first (so notification ids are issued and committed in
order, and readers never pass a gap that is filled later), the same NOTIFY for live
subscribers, and the same primary key on (originator_id, originator_version), so a concurrent
write to an aggregate still fails as an IntegrityError and nothing of the batch is written.

Retries: like the library's ``insert_events``, a COPY that fails on a connection error
(InterfaceError, OperationalError: a dropped or terminated connection, a restarted server) is
retried on a fresh pooled connection, with the same attempts and wait. The failed attempt's
transaction was rolled back with its connection, so a retry cannot write the batch twice; if
the commit itself landed before the connection dropped, the retry meets the primary key
(IntegrityError) and nothing is written twice either.

Durability: a save may pass ``durable=False`` (execute_run does for every chunk of years but
the last). That transaction then commits with ``synchronous_commit = off``: the commit returns
before its WAL record is flushed. Nothing can be lost that is not re-made: PostgreSQL writes
and flushes its WAL in order, so the next durable commit (the run's last chunk, RunCompleted,
any projection's catch-up, any other writer) flushes this one first, and the WAL writer does
within 3 x wal_writer_delay anyway. Only a server crash in that window can lose such chunks,
whole (never half a batch), and only the run's latest ones (never one before a durable
commit); a resumed run records the missing years, simulating them again (deterministic: same
events, same digest). Readers see the events at the commit, as usual. Every other write
(twins, queue, start, cancel, the last chunk, RunCompleted, RunFailed) is durable.

Round trips: the lock timeout, the table lock, the NOTIFY and the commit setting go in one
statement string (``append_preamble``); then COPY, the last id, COMMIT.

Notification ids: with the table locked, this transaction is the only one drawing from the
notification_id sequence, so the n ids it draws during COPY are consecutive and end at
``currval``; they are returned like the library's RETURNING would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.utils import retry
from psycopg.sql import SQL, Composed, Identifier, Literal

COPY_FROM = 16  # smaller batches take the library's INSERT path: one round trip is cheaper


class CopyApplicationRecorder(PostgresApplicationRecorder):
    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        schema, table = self.datastore.schema, self.events_table_name
        self.copy_statement = SQL(
            "COPY {}.{} (originator_id, originator_version, topic, state) "
            "FROM STDIN (FORMAT BINARY)"
        ).format(Identifier(schema), Identifier(table))
        self.last_id_statement = SQL(
            "SELECT currval(pg_get_serial_sequence({}, 'notification_id'))"
        ).format(Literal(f'"{schema}"."{table}"'))
        self._preambles = {durable: self._preamble(durable) for durable in (True, False)}

    def _preamble(self, durable: bool) -> Composed:
        statements = [*self.lock_table_statements]  # SET LOCAL lock_timeout, LOCK TABLE
        statements.append(SQL("NOTIFY {}").format(Identifier(self.channel_name)))
        if not durable:
            statements.append(SQL("SET LOCAL synchronous_commit = off"))
        return SQL("; ").join(statements)

    def append_preamble(self, durable: bool) -> Composed:
        """What a COPY append runs first, in one round trip: the library's lock timeout and
        table lock, its NOTIFY, and (``durable=False``) the commit without waiting for the
        log flush."""
        return self._preambles[durable]

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        durable = bool(kwargs.pop("durable", True))
        if len(stored_events) < COPY_FROM or self.datastore.enable_db_functions:
            ids: Sequence[int] | None = super().insert_events(stored_events, **kwargs)
            return ids  # small saves (a twin, a run's start or end) stay durable
        copied: list[int] = self._copy_events(stored_events, durable=durable)
        return copied

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)  # the library's
    def _copy_events(self, stored_events: Sequence[StoredEvent], durable: bool = True) -> list[int]:
        id_type = "uuid" if self.datastore.originator_id_type == "uuid" else "text"
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self.append_preamble(durable))
            with curs.copy(self.copy_statement) as copy:
                copy.set_types([id_type, "int8", "text", "bytea"])
                for event in stored_events:
                    copy.write_row(
                        (event.originator_id, event.originator_version, event.topic, event.state)
                    )
            curs.execute(self.last_id_statement)
            row = curs.fetchone()
            assert row is not None
            last = int(row["currval"])
        return list(range(last - len(stored_events) + 1, last + 1))
