"""Where the ledger lives: a database URL turned into eventsourcing's persistence settings.

- no URL: $TWINLEDGER_DATABASE_URL, else the SQLite file ./twinledger.db (the embedded default)
- a path, or sqlite:///relative/path or sqlite:////absolute/path: a SQLite file
- sqlite://:memory: : a private in-memory SQLite database (shared cache: pooled connections agree)
- postgresql://user:password@host:port/dbname?schema=NAME : PostgreSQL (schema created if missing)

A URL that cannot be used raises UnusableDatabase naming it (password masked). Every setting
the library reads is given here (``eventsourcing_env``); the library never reads the process
environment (infrastructure/application.py, docs/operations.md).
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlparse

from psycopg.conninfo import make_conninfo

from domain.errors import ValidationError
from infrastructure.errors import UnusableDatabase

DEFAULT_DATABASE_URL = "sqlite:///twinledger.db"
DATABASE_URL_VARIABLE = "TWINLEDGER_DATABASE_URL"
SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*):.*@")

PINNED = {
    # Storage semantics the ledger relies on, whatever the environment says: events are plain
    # msgspec JSON (projections and archives read the stored bytes), no snapshots, no cache,
    # inserts take the table lock (ids commit in order), ids are uuids, tables per app name.
    "IS_SNAPSHOTTING_ENABLED": "no",
    "COMPRESSOR_TOPIC": "",
    "CIPHER_TOPIC": "",
    "AGGREGATE_CACHE_MAXSIZE": "",
    "ORIGINATOR_ID_TYPE": "uuid",
    "SINGLE_ROW_TRACKING": "yes",
    "CREATE_TABLE": "yes",
}
POSTGRES_PINNED = {
    "POSTGRES_ENABLE_DB_FUNCTIONS": "no",
    "POSTGRES_LOCK_TIMEOUT": "0",
    "POSTGRES_PRE_PING": "no",
    "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "5",
}


def mask_password(url: str) -> str:
    """The URL with any password replaced by ***, for messages."""
    return _PASSWORD.sub(r"\1:***@", url)


@dataclass(frozen=True)
class Database:
    """A parsed database location."""

    url: str
    backend: str  # "sqlite" or "postgres"
    sqlite_path: str = ""
    host: str = ""
    port: int = 5432
    user: str = ""
    password: str = ""
    dbname: str = ""
    schema: str = "public"

    @property
    def is_postgres(self) -> bool:
        return self.backend == "postgres"

    def eventsourcing_env(self) -> dict[str, str]:
        if self.is_postgres:
            return (
                {
                    "PERSISTENCE_MODULE": "eventsourcing.postgres",
                    "POSTGRES_DBNAME": self.dbname,
                    "POSTGRES_HOST": self.host,
                    "POSTGRES_PORT": str(self.port),
                    "POSTGRES_USER": self.user,
                    "POSTGRES_PASSWORD": self.password,
                    "POSTGRES_SCHEMA": self.schema,
                    "POSTGRES_CONNECT_TIMEOUT": "5",
                    "POSTGRES_POOL_SIZE": "2",
                    "POSTGRES_MAX_OVERFLOW": "4",
                }
                | PINNED
                | POSTGRES_PINNED
                | _append_path()
            )
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": self.sqlite_path,
            "SQLITE_LOCK_TIMEOUT": "10",
            "APPLICATION_RECORDER_TOPIC": "infrastructure.sqlite_recorder:HashingSQLiteRecorder",
        } | PINNED

    def psycopg_conninfo(self) -> str:
        """A libpq connection string for direct connections (projections, schema setup).

        Built by psycopg, which quotes and escapes every value: a password holding quotes,
        spaces or ``host=`` stays one password."""
        parts = {
            "host": self.host,
            "port": str(self.port),
            "user": self.user,
            "dbname": self.dbname,
            "connect_timeout": "5",
        }
        if self.password:
            parts["password"] = self.password
        return make_conninfo("", **parts)

    def describe(self) -> str:
        if self.is_postgres:
            return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}?schema={self.schema}"
        return f"sqlite:{self.sqlite_path}"


RECORDERS = "infrastructure.pg_recorder"


def _append_path() -> dict[str, str]:
    """TWINLEDGER_PG_APPEND: ``copy`` (default, infrastructure/pg_recorder.py) or ``insert``
    (eventsourcing's own INSERT path: a fallback, and the baseline the benchmark compares with),
    or ``staged`` (COPY into session tables, the lock for one round trip: infrastructure/
    pg_staged.py). All write the hash chain (docs/integrity.md)."""
    choice = os.environ.get("TWINLEDGER_PG_APPEND", "copy")
    if choice == "insert":
        return {"APPLICATION_RECORDER_TOPIC": f"{RECORDERS}:InsertApplicationRecorder"}
    if choice == "staged":
        return {"APPLICATION_RECORDER_TOPIC": "infrastructure.pg_staged:StagedCopyRecorder"}
    if choice != "copy":
        raise ValidationError(
            "TWINLEDGER_PG_APPEND",
            f"{choice[:40]!r} is not one of copy (the default), insert, staged",
        )
    return {"APPLICATION_RECORDER_TOPIC": f"{RECORDERS}:CopyApplicationRecorder"}


def resolve_database(url: str | None = None) -> Database:
    """Parse ``url`` (or the environment's, or the default) into a Database.

    Raises UnusableDatabase (naming the URL, password masked) for a URL that cannot be used:
    malformed, of an unknown scheme, or a SQLite path that cannot hold a database."""
    url = url or os.environ.get(DATABASE_URL_VARIABLE) or DEFAULT_DATABASE_URL
    if url.startswith(("postgresql://", "postgres://")):
        return _postgres(url)
    if url in ("sqlite://:memory:", ":memory:"):
        name = f"file:twinledger-{uuid.uuid4().hex}?mode=memory&cache=shared"
        return Database(url=url, backend="sqlite", sqlite_path=name)
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
    elif url.startswith("sqlite:"):
        raise UnusableDatabase(mask_password(url), "use sqlite:///path/to/file.db")
    elif "://" in url:
        raise UnusableDatabase(
            mask_password(url), "unknown kind of database; use a SQLite path or postgresql://"
        )
    else:
        path = url
    if not path or "\x00" in path:
        raise UnusableDatabase(repr(url), "not a file path")
    path = os.path.abspath(path)
    _check_sqlite_path(path)
    return Database(url=url, backend="sqlite", sqlite_path=path)


def _postgres(url: str) -> Database:
    where = mask_password(url)
    try:
        parsed = urlparse(url)
        port = parsed.port or 5432
        query = parse_qs(parsed.query, keep_blank_values=True, strict_parsing=bool(parsed.query))
    except ValueError as error:
        raise UnusableDatabase(where, f"malformed URL ({error})") from None
    unknown = sorted(set(query) - {"schema"})
    if unknown:
        raise UnusableDatabase(where, f"unknown parameter {unknown[0]!r} (only schema= is read)")
    schemas = query.get("schema", ["public"])
    schema = schemas[-1]
    if len(schemas) > 1 or not SCHEMA_NAME.fullmatch(schema):
        raise UnusableDatabase(
            where, f"schema name {schema!r} must be ASCII letters, digits and _ (at most 63)"
        )
    database = Database(
        url=url,
        backend="postgres",
        host=parsed.hostname or "127.0.0.1",
        port=port,
        user=unquote(parsed.username or os.environ.get("USER", "postgres")),
        password=unquote(parsed.password or ""),
        dbname=unquote((parsed.path or "/").lstrip("/")) or "postgres",
        schema=schema,
    )
    for field in ("host", "user", "password", "dbname"):
        if "\x00" in getattr(database, field):
            raise UnusableDatabase(where, f"the {field} holds a NUL character")
    return database


def _check_sqlite_path(path: str) -> None:
    """A SQLite file must be a writable file in an existing, writable directory."""
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise UnusableDatabase(path, "is a directory, not a database file")
    if not os.path.isdir(folder):
        raise UnusableDatabase(path, f"directory {folder} does not exist")
    if os.path.exists(path):
        if not os.access(path, os.R_OK | os.W_OK):
            raise UnusableDatabase(path, "is read-only (the ledger writes to its file)")
    elif not os.access(folder, os.W_OK):
        raise UnusableDatabase(path, f"cannot create it: directory {folder} is read-only")
