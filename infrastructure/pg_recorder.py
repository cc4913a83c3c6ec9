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

Round trips (two a batch; six before, eight before that): the whole append is one statement
string (infrastructure/pg_copy_string.py): BEGIN, the lock timeout, the table lock, the NOTIFY
and the commit setting (``append_preamble``), the COPY of the events, the INSERT of their chain
records, the last id and COMMIT. The server runs them in order in one exchange: one round trip
up to the COPY's start, one for the rows and everything after them. The COPY rows are built as
one binary buffer (``event_rows``) and the hashes before the transaction opens when every
previous hash is remembered (``RecentLinks``), so the lock covers the database's work only.
When a previous hash is not remembered (another process wrote the stream's last batch), it is
read under the lock, and the statements go one at a time (seven round trips).

Hash chain (docs/integrity.md): in the same transaction, after the events, the batch's chained
SHA-256s go into the side table ``<events>_chain``, one chain record per stream (its first
version and its events' hashes concatenated; infrastructure/integrity.py): one row per batch,
where one row per event (``<events>_hashes``, before) cost the server about as much as the
events themselves. The previous hash of each stream is read in that transaction, under the
table lock; a concurrent writer to the same stream conflicts on the primary key of the events
(and of the chain records) as before.
The table lock is taken through a SECURITY DEFINER function owned by the schema's owner, so the
writer role (infrastructure/roles.py) needs INSERT on the log, never UPDATE or DELETE (which
PostgreSQL 15 demands for ``LOCK TABLE ... IN EXCLUSIVE MODE``).

Notification ids: with the table locked, this transaction is the only one drawing from the
notification_id sequence, so the n ids it draws during COPY are consecutive and end at
``currval``; they are returned like the library's RETURNING would.
"""

from __future__ import annotations

import struct
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
)
from eventsourcing.utils import retry
from psycopg import Connection, Cursor
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier, Literal

from infrastructure.integrity import (
    Chainer,
    RecentLinks,
    chain_batch,
    chain_records,
    chain_table_name,
    hashes_table_name,
    previous_links,
    split_records,
)
from infrastructure.pg_copy_string import run_with_copy
from infrastructure.pg_insert import ConflictReportingInsert

COPY_FROM = 16  # smaller batches take the library's INSERT path: one round trip is cheaper
BACKFILL = 5000
RECORD = 1000  # hashes per chain record when converting or backfilling a store (any size works)

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # binary COPY header: no flags, no extension
TRAILER = b"\xff\xff"
_RECORD_HEAD = struct.Struct(">hi16siqi")  # 3 fields: uuid, int8, then bytea (its length next)


def event_rows(stored_events: Sequence[StoredEvent]) -> bytes:
    """The binary COPY stream (header to trailer) of (originator_id uuid, originator_version
    int8, topic text, state bytea) rows, as psycopg's ``write_row`` would send them, built
    with one struct per topic and each stream's id bytes worked out once (docs/performance.md,
    issue 13: per-field dumping cost more than the rest of the row's client work)."""
    parts = [SIGNATURE]
    append = parts.append
    heads: dict[str, tuple[struct.Struct, int, bytes]] = {}
    current: object = None
    raw = b""
    for event in stored_events:
        head = heads.get(event.topic)
        if head is None:
            topic = event.topic.encode()
            layout = struct.Struct(f">hi16siqi{len(topic)}si")
            head = heads[event.topic] = (layout, len(topic), topic)
        if event.originator_id is not current:  # a batch is runs of one stream's events
            current = event.originator_id
            raw = _uuid(event.originator_id).bytes
        state = event.state
        layout, size, topic = head
        append(layout.pack(4, 16, raw, 8, event.originator_version, size, topic, len(state)))
        append(state)
    append(TRAILER)
    return b"".join(parts)


def record_rows(records: Sequence[tuple[UUID, int, bytes]]) -> bytes:
    """The binary COPY stream of chain records (originator_id uuid, first_version int8, hashes
    bytea)."""
    pack = _RECORD_HEAD.pack
    return b"".join(
        (
            SIGNATURE,
            *(pack(3, 16, i.bytes, 8, v, len(h)) + h for i, v, h in records),
            TRAILER,
        )
    )


def record_values(records: Sequence[tuple[UUID, int, bytes]]) -> bytes:
    """Chain records as the VALUES list of an INSERT in a statement string (no parameters
    there): a uuid, an integer and hex digits only, so nothing to quote or escape."""
    return b", ".join(
        b"('%s'::uuid, %d, decode('%s', 'hex'))" % (str(i).encode(), v, h.hex().encode())
        for i, v, h in records
    )


def _uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(value)


@contextmanager
def _transaction(connection: Connection[DictRow]) -> Iterator[Cursor[DictRow]]:
    """A cursor on an autocommit connection whose own statements open (``BEGIN`` in the
    preamble) and end (``COMMIT`` with the last query) one transaction, saving the two round
    trips of ``connection.transaction()``; rolled back if anything fails in between, so the
    pool never gets the connection back inside a transaction."""
    try:
        with connection.cursor() as curs:
            yield curs
    except BaseException:
        if connection.info.transaction_status != TransactionStatus.IDLE:
            with suppress(psycopg.Error):  # a broken connection: the pool discards it
                connection.rollback()
        raise


class CopyApplicationRecorder(ConflictReportingInsert, PostgresApplicationRecorder):
    copy_from = COPY_FROM

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        schema, table = self.datastore.schema, self.events_table_name
        self.chain_table_name = chain_table_name(table)
        self.hashes_table_name = hashes_table_name(table)  # per-event rows: older stores only
        self.recent = RecentLinks()
        self.written = threading.local()  # this thread's batch hashes, remembered once committed
        events = Identifier(schema, table)
        chain = Identifier(schema, self.chain_table_name)
        hashes = Identifier(schema, self.hashes_table_name)
        lock_function = Identifier(schema, f"{table}_lock")
        # The hashes are random bytes: STORAGE EXTERNAL stores a record (8 KB for 250 events,
        # out of line) uncompressed, with no compression attempt (which cost little: pglz gives
        # up early; measured in docs/performance.md), so the previous-hash lookup and
        # octet_length read only the slice they need.
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {c} (originator_id uuid NOT NULL,"
                " first_version bigint NOT NULL, hashes bytea NOT NULL,"
                " PRIMARY KEY (originator_id, first_version));"
                " ALTER TABLE {c} ALTER COLUMN hashes SET STORAGE EXTERNAL"
            ).format(c=chain)
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
        # Each wanted (stream, version): the stream's chain record starting at or before it
        # (its hash is that record's slice, if the record reaches it).
        self.previous_statement = SQL(
            "SELECT p.i AS originator_id, p.v AS originator_version, c.first_version,"
            " substring(c.hashes FROM ((p.v - c.first_version) * 32 + 1)::int FOR 32) AS hash"
            " FROM unnest(%s::uuid[], %s::bigint[]) AS p(i, v) CROSS JOIN LATERAL"
            " (SELECT first_version, hashes FROM {} WHERE originator_id = p.i"
            " AND first_version <= p.v ORDER BY first_version DESC LIMIT 1) c"
        ).format(chain)
        self.insert_records_statement = SQL(
            "INSERT INTO {} (originator_id, first_version, hashes)"
            " SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::bytea[])"
        ).format(chain)
        self.copy_records_statement = SQL(
            "COPY {} (originator_id, first_version, hashes) FROM STDIN (FORMAT BINARY)"
        ).format(chain)
        self.tables_exist_statement = SQL(
            "SELECT to_regclass({c}) IS NOT NULL AS chain, to_regclass({h}) IS NOT NULL AS hashes,"
            " coalesce((SELECT pg_has_role(current_user, tableowner, 'USAGE')"
            " FROM pg_catalog.pg_tables WHERE schemaname = {s} AND tablename = {n}), true) AS owns"
        ).format(
            c=Literal(f'"{schema}"."{self.chain_table_name}"'),
            h=Literal(f'"{schema}"."{self.hashes_table_name}"'),
            s=Literal(schema),
            n=Literal(self.hashes_table_name),
        )
        self.old_hashes_statement = SQL(
            "SELECT uuid_send(originator_id), originator_version, hash FROM {}"
            " ORDER BY originator_id, originator_version"
        ).format(hashes)
        self.old_grants_statement = SQL(
            "SELECT grantee, privilege_type FROM information_schema.table_privileges"
            " WHERE table_schema = {} AND table_name = {} AND grantee <> ("
            "SELECT tableowner FROM pg_catalog.pg_tables WHERE schemaname = {} AND tablename = {})"
        ).format(
            Literal(schema),
            Literal(self.hashes_table_name),
            Literal(schema),
            Literal(self.hashes_table_name),
        )
        self.drop_hashes_statement = SQL("DROP TABLE {}").format(hashes)
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
        # The statements a COPY append sends, rendered once (psycopg would compose them anew
        # for every batch).
        self._preamble_text = {d: p.as_bytes(None) for d, p in self._preambles.items()}
        self._copy_text = self.copy_statement.as_bytes(None)
        self._copy_records_text = self.copy_records_statement.as_bytes(None)
        self._finish_text = (self.last_id_statement + SQL("; COMMIT")).as_bytes(None)
        self._insert_records_text = (
            SQL("INSERT INTO {} (originator_id, first_version, hashes) VALUES ").format(chain)
        ).as_bytes(None)

    def _preamble(self, durable: bool) -> Composed:
        statements: list[Any] = [SQL("BEGIN"), *self.lock_table_statements]  # lock_timeout, lock
        statements.append(SQL("NOTIFY {}").format(Identifier(self.channel_name)))
        if not durable:
            statements.append(SQL("SET LOCAL synchronous_commit = off"))
        preamble: Composed = SQL("; ").join(statements)
        return preamble

    def append_preamble(self, durable: bool) -> Composed:
        """What a COPY append runs first, in one round trip: BEGIN, the lock timeout and table
        lock, the NOTIFY, and (``durable=False``) the commit without waiting for the log
        flush."""
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
        """Two round trips when every previous hash is remembered (the usual case: the run's
        previous chunk was written here), the hashes then made before the transaction opens,
        so the table lock is held for the database's work only (``_append_at_once``).
        Otherwise one statement at a time: BEGIN and the preamble; COPY of the events (start,
        then the rows and the end); the previous hashes read under the lock; COPY of the
        chain records (two); the last id and COMMIT in one."""
        previous, missing = self.recent.split(previous_links(stored_events))
        hashes = None if missing else chain_batch(stored_events, previous)
        uuids = self.datastore.originator_id_type == "uuid"
        events = event_rows(stored_events) if uuids else b""
        with self.datastore.get_connection() as connection, _transaction(connection) as curs:
            if hashes is not None and uuids:  # the usual case: two round trips
                self.written.rows = hashes
                last = self._append_at_once(connection, durable, events, hashes)
                return list(range(last - len(stored_events) + 1, last + 1))
            curs.execute(self._preamble_text[durable])
            with curs.copy(self._copy_text) as copy:
                if uuids:
                    copy.write(events)
                else:
                    copy.set_types(["text", "int8", "text", "bytea"])
                    for e in stored_events:
                        copy.write_row((e.originator_id, e.originator_version, e.topic, e.state))
            if hashes is None:  # read the missing previous hashes under the lock
                hashes = self._chain(curs, stored_events)
            self.written.rows = hashes
            with curs.copy(self._copy_records_text) as copy:
                copy.write(record_rows(chain_records(hashes)))
            curs.execute(self._finish_text)  # the last id, then COMMIT
            row = curs.fetchone()
            assert row is not None
            last = int(row["currval"])
        return list(range(last - len(stored_events) + 1, last + 1))

    def _append_at_once(
        self,
        connection: Connection[DictRow],
        durable: bool,
        events: bytes,
        hashes: list[tuple[UUID, int, bytes]],
    ) -> int:
        """The whole append as one statement string (infrastructure/pg_copy_string.py): the
        preamble, the COPY of the events, the INSERT of their chain records (one row per
        stream, its hashes as a literal), the last id and COMMIT; returns the last id. Two
        round trips: to the COPY's start, then the rows and everything after them. The same
        statements, in the same order, in the same transaction as one at a time."""
        statements = b"; ".join(
            (
                self._preamble_text[durable],
                self._copy_text,
                self._insert_records_text + record_values(chain_records(hashes)),
                self._finish_text,
            )
        )
        results = run_with_copy(connection, statements, events)
        last = results[2]  # the COPY's, the INSERT's, then the last id's
        return int(last.get_value(0, 0))

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
            records = chain_records(self._chain(other, stored_events))
            PostgresAggregateRecorder._insert_stored_events(self, curs, stored_events, **kwargs)
            other.execute(
                self.insert_records_statement,
                (
                    [i for i, _, _ in records],
                    [v for _, v, _ in records],
                    [h for _, _, h in records],
                ),
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
                stored = r["hash"]
                if stored is not None and len(stored) == 32:  # the record reaches the version
                    previous[(r["originator_id"], r["originator_version"])] = bytes(stored)
        rows = chain_batch(stored_events, previous)
        self.written.rows = rows
        return rows

    def _create_table(self, curs: Cursor[DictRow]) -> None:
        """The library's DDL, the chain records' table and the lock function; then, once, on a
        store whose chain is in the per-event table of earlier releases, that table's hashes
        moved verbatim into chain records (``_convert``), or on a store made before any chain,
        the chain of every stored event computed (``_backfill``; docs/integrity.md)."""
        curs.execute(self.tables_exist_statement)
        row = curs.fetchone()
        assert row is not None
        if row["hashes"] and not row["chain"] and not row["owns"]:
            raise ProgrammingError(
                f"this store's hash chain is in {self.hashes_table_name}, the per-event table "
                "of an earlier release: open it once as the owner of its tables (any command, "
                "e.g. `twinledger verify`, with the owner's URL) to convert it to chain records "
                "(docs/integrity.md); nothing was changed"
            )
        super()._create_table(curs)
        if row["chain"]:
            return
        if row["hashes"]:
            self._convert(curs)
        else:
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
                self._copy_records(curs, rows)

    def _convert(self, curs: Cursor[DictRow]) -> None:
        """Move a per-event hashes table's rows into chain records, byte for byte (a hash is
        never recomputed here: a row deleted or changed before stays missing or wrong, and
        ``verify`` names it as before), give the new table the old one's grants, and drop the
        old table. One transaction, under the set-up lock and the table lock. Needs the owner
        of the old table (it is dropped: ``_create_table`` refuses anyone else first)."""
        self._lock_table(curs)
        with curs.connection.cursor("twinledger_convert", binary=True) as reader:
            reader.execute(self.old_hashes_statement)
            while batch := reader.fetchmany(BACKFILL):
                self._copy_records(
                    curs,
                    [
                        (
                            UUID(bytes=bytes(r["uuid_send"])),
                            r["originator_version"],
                            bytes(r["hash"]),
                        )
                        for r in batch
                    ],
                )
        curs.execute(self.old_grants_statement)
        for grant in curs.fetchall():
            curs.execute(
                SQL("GRANT {} ON {} TO {}").format(
                    SQL(grant["privilege_type"]),  # from the catalog: SELECT, INSERT, ...
                    Identifier(self.datastore.schema, self.chain_table_name),
                    Identifier(grant["grantee"]),
                )
            )
        curs.execute(self.drop_hashes_statement)

    def _copy_records(self, curs: Cursor[DictRow], rows: list[tuple[UUID, int, bytes]]) -> None:
        """COPY ``rows`` (stream, version, hash; in (stream, version) order) as chain records
        of at most RECORD hashes. Records of consecutive fetches are not joined: any split
        reads the same."""
        records = split_records(rows, RECORD)
        with curs.copy(self.copy_records_statement) as copy:
            copy.write(record_rows(records))


class InsertApplicationRecorder(CopyApplicationRecorder):
    """The library's INSERT path for every batch (TWINLEDGER_PG_APPEND=insert), hashes and all."""

    copy_from = sys.maxsize
