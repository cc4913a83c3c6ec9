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

Hash chain (docs/integrity.md): in the same transaction, after the events, each event's chained
SHA-256 goes into the side table ``<events>_hashes`` (infrastructure/integrity.py). The previous
hash of each stream is read in that transaction, under the table lock; a concurrent writer to the
same stream conflicts on the primary key of the events (and of the hashes) as before.
The table lock is taken through a SECURITY DEFINER function owned by the schema's owner, so the
writer role (infrastructure/roles.py) needs INSERT on the log, never UPDATE or DELETE (which
PostgreSQL 15 demands for ``LOCK TABLE ... IN EXCLUSIVE MODE``).

Notification ids: with the table locked, this transaction is the only one drawing from the
notification_id sequence, so the n ids it draws during COPY are consecutive and end at
``currval``; they are returned like the library's RETURNING would.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
)
from eventsourcing.utils import retry
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier, Literal

from infrastructure.integrity import (
    Chainer,
    RecentLinks,
    chain_batch,
    hashes_table_name,
    previous_links,
)
from infrastructure.pg_insert import ConflictReportingInsert

COPY_FROM = 16  # smaller batches take the library's INSERT path: one round trip is cheaper
BACKFILL = 5000


class CopyApplicationRecorder(ConflictReportingInsert, PostgresApplicationRecorder):
    copy_from = COPY_FROM

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        schema, table = self.datastore.schema, self.events_table_name
        self.hashes_table_name = hashes_table_name(table)
        self.recent = RecentLinks()
        self.written = threading.local()  # this thread's batch hashes, remembered once committed
        events = Identifier(schema, table)
        hashes = Identifier(schema, self.hashes_table_name)
        lock_function = Identifier(schema, f"{table}_lock")
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (originator_id uuid NOT NULL,"
                " originator_version bigint NOT NULL, hash bytea NOT NULL,"
                " PRIMARY KEY (originator_id, originator_version))"
            ).format(hashes)
        )
        self.sql_create_statements.append(
            SQL(
                "CREATE OR REPLACE FUNCTION {}() RETURNS void LANGUAGE plpgsql SECURITY DEFINER"
                " SET search_path = pg_catalog AS $$ BEGIN LOCK TABLE {} IN EXCLUSIVE MODE;"
                " END $$"
            ).format(lock_function, events)
        )
        self.lock_table_statements = [
            self.lock_table_statements[0],  # SET LOCAL lock_timeout
            SQL("SELECT {}()").format(lock_function),
        ]
        self.previous_statement = SQL(
            "SELECT h.originator_id, h.originator_version, h.hash FROM {} h"
            " JOIN unnest(%s::uuid[], %s::bigint[]) AS p(i, v)"
            " ON h.originator_id = p.i AND h.originator_version = p.v"
        ).format(hashes)
        self.insert_hashes_statement = SQL(
            "INSERT INTO {} (originator_id, originator_version, hash)"
            " SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::bytea[])"
        ).format(hashes)
        self.copy_hashes_statement = SQL(
            "COPY {} (originator_id, originator_version, hash) FROM STDIN (FORMAT BINARY)"
        ).format(hashes)
        self.hashes_exist_statement = SQL("SELECT to_regclass({}) IS NOT NULL AS e").format(
            Literal(f'"{schema}"."{self.hashes_table_name}"')
        )
        self.backfill_statement = SQL(
            "SELECT uuid_send(originator_id), originator_version, topic, state FROM {}"
            " ORDER BY originator_id, originator_version"
        ).format(events)
        self.copy_statement = SQL(
            "COPY {}.{} (originator_id, originator_version, topic, state) "
            "FROM STDIN (FORMAT BINARY)"
        ).format(Identifier(schema), Identifier(table))
        self.last_id_statement = SQL(
            "SELECT currval(pg_get_serial_sequence({}, 'notification_id'))"
        ).format(Literal(f'"{schema}"."{table}"'))
        # Built after lock_table_statements is set above (the lock goes through the function).
        self._preambles = {durable: self._preamble(durable) for durable in (True, False)}

    def _preamble(self, durable: bool) -> Composed:
        statements = [*self.lock_table_statements]  # SET LOCAL lock_timeout, the table lock
        statements.append(SQL("NOTIFY {}").format(Identifier(self.channel_name)))
        if not durable:
            statements.append(SQL("SET LOCAL synchronous_commit = off"))
        return SQL("; ").join(statements)

    def append_preamble(self, durable: bool) -> Composed:
        """What a COPY append runs first, in one round trip: the lock timeout and table lock,
        the NOTIFY, and (``durable=False``) the commit without waiting for the log flush."""
        return self._preambles[durable]

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        durable = bool(kwargs.pop("durable", True))
        self.written.rows = []
        ids: Sequence[int] | None
        if len(stored_events) < self.copy_from or self.datastore.enable_db_functions:
            ids = super().insert_events(stored_events, **kwargs)  # small saves stay durable
        else:
            ids = self._copy_events(stored_events, durable=durable)
        self.recent.remember(self.written.rows)  # committed: safe to chain onto
        return ids

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
            hashes = self._chain(curs, stored_events)
            with curs.copy(self.copy_hashes_statement) as copy:
                copy.set_types(["uuid", "int8", "bytea"])
                for link in hashes:
                    copy.write_row(link)
            curs.execute(self.last_id_statement)
            row = curs.fetchone()
            assert row is not None
            last = int(row["currval"])
        return list(range(last - len(stored_events) + 1, last + 1))

    def _insert_stored_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        """The library's lock, NOTIFY and INSERT (whose RETURNING on ``curs`` gives the ids),
        then the hashes. The hashes are computed before the INSERT is queued: the library's
        pipeline commits after a Python error, so a refused chain is refused before any
        event is queued. The hash statements are never prepared: in a pipeline aborted by a
        concurrent write (the INSERT's IntegrityError), a statement being prepared is skipped,
        and psycopg would believe it prepared ("prepared statement does not exist" later)."""
        self._lock_table(curs)
        self._notify_channel(curs)
        with curs.connection.cursor() as other:
            rows = self._chain(other, stored_events)
            PostgresAggregateRecorder._insert_stored_events(self, curs, stored_events, **kwargs)
            other.execute(
                self.insert_hashes_statement,
                ([i for i, _, _ in rows], [v for _, v, _ in rows], [h for _, _, h in rows]),
                prepare=False,
            )

    def _chain(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent]
    ) -> list[tuple[UUID, int, bytes]]:
        """The batch's hashes, chained onto the hashes remembered or read in this transaction."""
        previous, missing = self.recent.split(previous_links(stored_events))
        if missing:
            curs.execute(
                self.previous_statement,
                ([i for i, _ in missing], [v for _, v in missing]),
                prepare=False,  # see _insert_stored_events
            )
            for r in curs.fetchall():
                previous[(r["originator_id"], r["originator_version"])] = bytes(r["hash"])
        rows = chain_batch(stored_events, previous)
        self.written.rows = rows
        return rows

    def _create_table(self, curs: Cursor[DictRow]) -> None:
        """The library's DDL, the hashes table and lock function; on a store made before the
        hashes table, the chain of every stored event, computed once here (docs/integrity.md)."""
        curs.execute(self.hashes_exist_statement)
        row = curs.fetchone()
        upgrading = row is not None and not row["e"]
        super()._create_table(curs)
        if upgrading:
            self._backfill(curs)

    def _backfill(self, curs: Cursor[DictRow]) -> None:
        self._lock_table(curs)
        chain = Chainer()
        with curs.connection.cursor("twinledger_backfill", binary=True) as reader:
            reader.execute(self.backfill_statement)
            while batch := reader.fetchmany(BACKFILL):
                rows = []
                for r in batch:
                    ident, version = bytes(r["uuid_send"]), r["originator_version"]
                    digest = chain(ident, version, r["topic"], bytes(r["state"]))
                    rows.append((UUID(bytes=ident), version, digest))
                with curs.copy(self.copy_hashes_statement) as copy:
                    copy.set_types(["uuid", "int8", "bytea"])
                    for row in rows:
                        copy.write_row(row)


class InsertApplicationRecorder(CopyApplicationRecorder):
    """The library's INSERT path for every batch (TWINLEDGER_PG_APPEND=insert), hashes and all."""

    copy_from = sys.maxsize
