"""The read side's connection to the ledger's database: the SQLite file or the PostgreSQL schema.

Read tables live next to the event log (same SQLite file, same PostgreSQL schema), so a batch of
rows, the projection's position and the events it read are in one database and one transaction.
The projections use their own connection (not the application's pool): one per Store.

SQL is written once with ``%s`` placeholders and ``{name}`` table slots: on PostgreSQL the slots
become schema-qualified identifiers (psycopg.sql), on SQLite quoted names and ``?``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, NamedTuple, cast
from uuid import UUID

import msgspec
import psycopg
from psycopg import sql
from psycopg.adapt import Dumper, PyFormat
from psycopg.pq import Format, TransactionStatus

from infrastructure.settings import Database
from projections.canonical import canonical, canonical_text

Query = str | sql.Composable
POSTGRES_EVENTS_TABLE = "twinledger_events"  # eventsourcing: <application name>_events
SQLITE_EVENTS_TABLE = "stored_events"  # eventsourcing's fixed SQLite name
APPLICATION_NAME = "TwinLedger"


COPY_TYPES = {
    "uuid": "uuid",
    "text": "text",
    "int": "int4",
    "bigint": "int8",
    "float": "float8",
    "json": "json",
    "timestamp": "timestamptz",
    "uuid_bytes": "bytea",
    "json_bytes": "bytea",
}
"""Binary COPY types by kind. Two kinds only for COPY: ``uuid_bytes``, a uuid as its 16 bytes
(``UUID.bytes``), and ``json_bytes``, JSON text as bytes or ``msgspec.Raw``. Binary COPY data
carries no types: the server reads each field as its column's type (uuid_recv takes the 16
bytes, json_recv the text), so these are sent exactly as ``uuid`` and ``json`` values would be,
but by psycopg's bytes dumper, in C, instead of a Python dumper called per value (psycopg has
no C dumper for UUID, and ours for JSON is Python): a rebuild's COPY formatting costs half."""


class RawJson(str):
    """Marks JSON text for json; registering its dumper makes binary COPY send JSON as is."""


class RawJsonBinaryDumper(Dumper):
    """json in binary: the JSON text (str or bytes) unchanged.

    psycopg's own json dumper would encode a str as a JSON *string*; ours sends the text we
    already have (canonical JSON, projections/canonical.py), without parsing it again.
    """

    format = Format.BINARY

    def dump(self, obj: Any) -> bytes:
        if isinstance(obj, str):
            return obj.encode()
        return bytes(obj)  # bytes, or msgspec.Raw


_INDEX_ORDER_ONLY = sql.SQL(
    "SELECT set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'off', true)"
)
_PLANNER_SETTINGS = sql.SQL(
    "SELECT current_setting('enable_bitmapscan'), current_setting('enable_seqscan')"
)
_PLANNER_RESTORE = sql.SQL(
    "SELECT set_config('enable_bitmapscan', %s, true), set_config('enable_seqscan', %s, true)"
)
"""The notifications query walks the notification_id index in order and stops at its LIMIT.

Without statistics on the events table (a log written since its last ANALYZE, or a server with
autovacuum off) the planner underestimates the rows in the id window and picks a bitmap scan of
the whole window (WINDOW x the batch) followed by a sort that spills to disk: about 30 ms per
batch of 2000 instead of 1 ms. Turning the other scans off for this one statement (transaction
local, set back to the connection's values right after it) leaves the index scan, which is the
right plan at any size."""


class Note(NamedTuple):
    """A notification as the projections read it: position, whose event, topic, raw state."""

    position: int
    originator_id: UUID | str  # UUID from PostgreSQL, text from SQLite
    originator_version: int
    topic: str
    state: bytes


_note = cast(Callable[[Any], Note], partial(tuple.__new__, Note))
"""A fetched row (a tuple of Note's five values) as a Note, in C: ``Note._make`` is a Python
classmethod, called once per event read."""


IDLE = TransactionStatus.IDLE


def iso(moment: datetime) -> str:
    """A timestamp as SQLite stores it: UTC, microseconds, fixed width (text order = time order)."""
    if moment.tzinfo is not UTC:  # (astimezone returns a UTC moment as it is)
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")


COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
"""A binary COPY stream's header (no flags, no header extension); ``COPY_TRAILER`` ends it."""
COPY_TRAILER = b"\xff\xff"
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def pg_microseconds(moment: datetime) -> int:
    """A timestamptz as binary COPY sends it: microseconds since 2000-01-01 UTC, exactly (as
    psycopg's binary dumper computes it)."""
    return (moment - _PG_EPOCH) // _MICROSECOND


class _Script:
    """``Store.script``'s statements, kept until the block ends."""

    def __init__(self) -> None:
        self.statements: list[sql.Composable] = []

    def execute(self, statement: sql.Composable) -> None:
        self.statements.append(statement)


class Store:
    """One connection to the ledger's database, with the dialect differences in one place."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.postgres = database.is_postgres
        self.schema = database.schema
        self._sqlite: sqlite3.Connection | None = None
        self._pg: psycopg.Connection[Any] | None = None
        if self.postgres:
            self._pg = self._connect_postgres()
        else:
            path = database.sqlite_path
            self._sqlite = sqlite3.connect(
                path,
                isolation_level=None,
                timeout=30,
                uri=path.startswith("file:"),
                check_same_thread=False,
            )
            self._sqlite.execute("PRAGMA foreign_keys = ON")
            self._sqlite.execute("PRAGMA busy_timeout = 30000")
        self.events_table = POSTGRES_EVENTS_TABLE if self.postgres else SQLITE_EVENTS_TABLE
        self.restore_planner = True  # see ``notes``
        self._asynchronous = False  # see ``committing_asynchronously``
        self.pending_moves: list[tuple[str, int, int]] | None = None  # tracking.advancing_together
        self._events_select: dict[tuple[str, ...], Query] = {}

    # --- connections and transactions ----------------------------------------------------------

    def _connect_postgres(self) -> psycopg.Connection[Any]:
        connection = psycopg.connect(
            self.database.psycopg_conninfo(), autocommit=True, options="-c timezone=UTC"
        )
        info = connection.adapters.types["json"]
        assert info is not None
        dumper = type("RawJsonDumper", (RawJsonBinaryDumper,), {"oid": info.oid})
        connection.adapters.register_dumper(RawJson, dumper)  # also json's binary dumper
        # bytea's binary dumper by type (what COPY's set_types picks) is psycopg's DB-API
        # Binary wrapper's, in Python; bytes' own (C in psycopg_binary) sends a buffer as is.
        connection.adapters.register_dumper(
            bytes, psycopg.adapters.get_dumper(bytes, PyFormat.BINARY)
        )
        row = connection.execute(_PLANNER_SETTINGS).fetchone()
        assert row is not None
        self._planner = (str(row[0]), str(row[1]))  # what notes() sets back after its query
        return connection

    @property
    def pg(self) -> psycopg.Connection[Any]:
        assert self._pg is not None
        return self._pg

    @property
    def lite(self) -> sqlite3.Connection:
        assert self._sqlite is not None
        return self._sqlite

    def reconnect(self) -> None:
        """Open a new PostgreSQL connection if the server closed ours (after a restart)."""
        if self._pg is not None and self._pg.closed:
            self._pg = self._connect_postgres()

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
        if self._sqlite is not None:
            self._sqlite.close()

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Any]:
        """One write transaction; commits on success, rolls back on any exception.

        SQLite: BEGIN IMMEDIATE takes the database's write lock at once, so two projection
        processes (or a projection and an event writer) are serialised, never interleaved.
        ``durable=False``: the commit does not wait for its log to reach the disk (PostgreSQL:
        synchronous_commit off, this transaction only; SQLite in WAL mode: synchronous=NORMAL for
        this transaction, as the ledger's intermediate chunks, infrastructure/sqlite_recorder.py);
        a crash of the machine may then lose it, whole, and the next durable commit makes it
        durable (both logs are flushed in order). Only for writes that are redone from the log
        after a crash anyway (rebuild staging, a catch-up that follows a durable write).
        """
        if self.postgres:
            with self.pg.transaction(), self.pg.cursor() as cursor:
                if durable == self._asynchronous:  # not the session's way: this one's own
                    cursor.execute(
                        "SET LOCAL synchronous_commit TO DEFAULT"
                        if durable
                        else "SET LOCAL synchronous_commit = off"
                    )
                yield cursor
            return
        lite = self.lite.cursor()
        level = None
        if not durable:  # (a PRAGMA synchronous inside a transaction would be ignored)
            level = lite.execute("PRAGMA synchronous").fetchone()[0]
            lite.execute("PRAGMA synchronous = NORMAL")
        try:
            lite.execute("BEGIN IMMEDIATE")
            try:
                yield lite
            except BaseException:
                self.lite.rollback()
                raise
            else:
                lite.execute("COMMIT")
        finally:
            if level is not None:
                lite.execute(f"PRAGMA synchronous = {int(level)}")
            lite.close()

    @contextmanager
    def pipelined(self, *, durable: bool = True) -> Iterator[Any]:
        """``transaction`` in psycopg's pipeline mode (PostgreSQL; on SQLite ``transaction``).

        BEGIN and COMMIT are sent as statements (psycopg's own transaction block waits for
        each in pipeline mode). A statement whose results are not read (BEGIN, INSERT and
        UPDATE by executemany) does not wait: it rides with the next statement that is read,
        or with COMMIT. A failed statement's error then surfaces there, not at its own call
        (at the latest when the block ends, the COMMIT then not run): for a caller that runs
        the whole transaction again, carefully, whatever failed in it (a rebuild's load batch).
        """
        if not self.postgres:
            with self.transaction(durable=durable) as cursor:
                yield cursor
            return
        try:
            with self.pg.pipeline(), self.pg.cursor() as cursor:
                cursor.execute("BEGIN")
                if durable == self._asynchronous:
                    cursor.execute(
                        "SET LOCAL synchronous_commit TO DEFAULT"
                        if durable
                        else "SET LOCAL synchronous_commit = off"
                    )
                yield cursor
                cursor.execute("COMMIT")
            # (the pipeline's end waits for every statement: COMMIT done, or an error)
        except BaseException:
            if not self.pg.closed and self.pg.info.transaction_status != IDLE:
                self.pg.execute("ROLLBACK")  # out of pipeline mode by now
            raise

    @contextmanager
    def committing_asynchronously(self) -> Iterator[None]:
        """PostgreSQL: within the block, ``transaction(durable=False)`` is this session's way
        (synchronous_commit off for the session, set back after), so such a transaction needs
        no SET LOCAL of its own: one round trip less each (a rebuild's load, which commits a
        batch per page of the log). A durable transaction in the block sets the server's
        setting back for itself. SQLite: nothing changes."""
        if not self.postgres:
            yield
            return
        self.pg.execute("SET synchronous_commit = off")
        self._asynchronous = True
        try:
            yield
        finally:
            self._asynchronous = False
            if not self.pg.closed:  # (a broken connection takes its session with it)
                self.pg.execute("RESET synchronous_commit")

    @contextmanager
    def savepoint(self, cursor: Any) -> Iterator[None]:
        """A savepoint in the current transaction: an exception rolls back to it (and goes on).

        How one event that cannot be applied is set aside without losing the batch around it
        (projections/parking.py). After the rollback the transaction is usable again, also on
        PostgreSQL, where a failed statement otherwise aborts the whole transaction.
        """
        if self.postgres:
            with self.pg.transaction():  # nested in the batch's transaction: a savepoint
                yield
            return
        cursor.execute("SAVEPOINT twinledger_event")
        try:
            yield
        except BaseException:
            cursor.execute("ROLLBACK TO twinledger_event")
            cursor.execute("RELEASE twinledger_event")
            raise
        cursor.execute("RELEASE twinledger_event")

    @contextmanager
    def reading(self) -> Iterator[Any]:
        """A read-only transaction: one consistent snapshot for several queries."""
        if self.postgres:
            with self.pg.transaction(), self.pg.cursor() as cursor:
                cursor.execute("SET TRANSACTION READ ONLY")
                yield cursor
            return
        lite = self.lite.cursor()
        lite.execute("BEGIN")
        try:
            yield lite
        finally:
            self.lite.rollback()
            lite.close()

    def read_once(self, statement: Query, args: Sequence[Any] = ()) -> list[Any]:
        """The rows of one read statement, run on its own: the statement is its own snapshot,
        so no transaction is opened around it (on PostgreSQL one round trip instead of four:
        BEGIN, SET TRANSACTION READ ONLY, the query, COMMIT)."""
        if self.postgres:
            with self.pg.cursor() as cursor:
                cursor.execute(cast(sql.Composed, statement), args)
                return cursor.fetchall()
        return self.lite.execute(cast(str, statement), args).fetchall()

    # --- SQL ------------------------------------------------------------------------------------

    def sql(self, template: str, **tables: str) -> Query:
        """``template`` with ``{slot}`` table names filled in and the back end's placeholders."""
        if self.postgres:
            return sql.SQL(template).format(
                **{slot: sql.Identifier(self.schema, name) for slot, name in tables.items()}
            )
        quoted = {slot: '"' + name.replace('"', '""') + '"' for slot, name in tables.items()}
        return template.format(**quoted).replace("%s", "?")

    def raw(self, statement: str) -> Query:
        return sql.SQL(statement) if self.postgres else statement

    @contextmanager
    def script(self, cursor: Any) -> Iterator[Any]:
        """A stand-in for ``cursor`` taking statements without parameters (DDL in a row): on
        PostgreSQL they are sent together at the end of the block, one round trip instead of
        one each (an error names its statement as before); on SQLite each runs at once."""
        if not self.postgres:
            yield cursor
            return
        script = _Script()
        yield script
        if script.statements:
            cursor.execute(sql.SQL("; ").join(script.statements))

    def table_exists(self, cursor: Any, name: str) -> bool:
        if self.postgres:
            cursor.execute(
                "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s",
                (self.schema, name),
            )
        else:
            cursor.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        return cursor.fetchone() is not None

    def drop_table(self, cursor: Any, name: str) -> None:
        cursor.execute(self.sql("DROP TABLE IF EXISTS {t}", t=name))

    # --- values ---------------------------------------------------------------------------------

    def uuid(self, value: UUID | str) -> Any:
        return value if self.postgres else str(value)

    def timestamp(self, value: datetime | None) -> Any:
        if value is None or self.postgres:
            return value
        return iso(value)

    def to_db(self, kind: str, value: Any) -> Any:
        """A Python value (UUID, datetime, JSON as Raw/str/object) as this back end stores it."""
        if value is None:
            return None
        if kind == "json":  # canonical text (projections/canonical.py), on both back ends
            if isinstance(value, str | bytes | msgspec.Raw):
                return canonical_text(value).decode()
            return canonical(value).decode()
        if kind == "uuid":
            return (
                (value if isinstance(value, UUID) else UUID(str(value)))
                if self.postgres
                else str(value)
            )
        if kind == "timestamp":
            return value if self.postgres else iso(value)
        return value

    def from_db(self, kind: str, value: Any) -> Any:
        """A stored value as Python: UUID, aware datetime, JSON decoded to plain objects."""
        if value is None:
            return None
        if kind == "uuid":
            return value if isinstance(value, UUID) else UUID(str(value))
        if kind == "timestamp":
            return value if isinstance(value, datetime) else datetime.fromisoformat(value)
        if kind == "json":
            return msgspec.json.decode(value) if isinstance(value, str | bytes) else value
        return value

    def bulk_insert(
        self,
        cursor: Any,
        table: str,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        kinds: Sequence[str] | None = None,
    ) -> None:
        """Insert many rows: COPY on PostgreSQL, one prepared executemany on SQLite.

        With ``kinds`` (projections/tables.py), PostgreSQL's COPY is binary: values must then
        be the Python types of the kinds (UUID, int, str, datetime), JSON as canonical text
        (str or bytes), sent as it is.
        """
        names = ", ".join('"' + c + '"' for c in columns)
        if self.postgres:
            binary = kinds is not None
            statement = sql.SQL("COPY {} ({}) FROM STDIN{}").format(
                sql.Identifier(self.schema, table),
                sql.SQL(", ").join(sql.Identifier(c) for c in columns),
                sql.SQL(" (FORMAT BINARY)" if binary else ""),
            )
            with cursor.copy(statement) as copy:
                if kinds is not None:
                    copy.set_types([COPY_TYPES[kind] for kind in kinds])
                for row in rows:
                    copy.write_row(row)
            return
        marks = ", ".join("?" * len(columns))
        cursor.executemany(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', rows)

    def copy_binary(self, cursor: Any, table: str, columns: Sequence[str], stream: bytes) -> None:
        """PostgreSQL: COPY a whole binary COPY stream (signature to trailer, ``binary_copy``)
        into ``table``: what ``bulk_insert`` with kinds sends, built by the caller."""
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(self.schema, table),
            sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        )
        with cursor.copy(statement) as copy:
            copy.write(stream)

    # --- the event log --------------------------------------------------------------------------

    def head(self, cursor: Any) -> int:
        """The highest notification id committed to the log (0 when empty)."""
        cursor.execute(self._head_statement())
        row = cursor.fetchone()
        return int(row[0] or 0)

    def head_once(self) -> int:
        """``head`` as a statement of its own (``read_once``: one round trip, not four)."""
        rows = self.read_once(self._head_statement())
        return int(rows[0][0] or 0)

    def _head_statement(self) -> Query:
        if self.postgres:
            return self.sql("SELECT max(notification_id) FROM {t}", t=self.events_table)
        return f"SELECT max(rowid) FROM {self.events_table}"

    def notes(
        self, cursor: Any, after: int, upto: int, skip_topics: Sequence[str], limit: int
    ) -> list[Note]:
        """Notifications in (after, upto], in order, leaving out ``skip_topics``, at most ``limit``.

        Skipped topics are filtered in SQL: their state is never read, let alone decoded.
        PostgreSQL: the query runs with the planner settings of ``_INDEX_ORDER_ONLY``, local
        to the transaction, set back after it unless ``restore_planner`` is False (a
        rebuild's load, whose batches then only look rows up by primary key and write
        staging tables: one statement less per batch).
        """
        key = tuple(skip_topics)
        statement = self._events_select.get(key)
        if statement is None:
            statement = self._select_statement(len(key))
            self._events_select[key] = statement
        if self.postgres:  # binary results: bytea arrives as bytes, not hex text to parse
            cursor.execute(_INDEX_ORDER_ONLY)
            cursor.execute(statement, [after, upto, list(key), limit], binary=True)
            rows = cursor.fetchall()
            # Not in a finally: after an error the transaction is aborted (another statement
            # would fail and hide the error) and its rollback undoes the local settings anyway.
            if self.restore_planner:
                cursor.execute(_PLANNER_RESTORE, self._planner)
        else:
            cursor.execute(statement, [after, upto, *key, limit])
            rows = cursor.fetchall()
        return list(map(_note, rows))  # ints, the id as the back end gives it, bytes

    def _select_statement(self, skipped: int) -> Query:
        if self.postgres:
            return self.sql(
                "SELECT notification_id, originator_id, originator_version, topic, state"
                " FROM {t} WHERE notification_id > %s AND notification_id <= %s"
                " AND NOT (topic = ANY(%s)) ORDER BY notification_id LIMIT %s",
                t=self.events_table,
            )
        where = f" AND topic NOT IN ({', '.join('?' * skipped)})" if skipped else ""
        return (
            "SELECT rowid, originator_id, originator_version, topic, state"
            f" FROM {self.events_table} WHERE rowid > ? AND rowid <= ?{where}"
            " ORDER BY rowid LIMIT ?"
        )
