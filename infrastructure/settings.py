"""Where the ledger lives: a database URL turned into eventsourcing's persistence settings.

- no URL: $TWINLEDGER_DATABASE_URL, else the SQLite file ./twinledger.db (the embedded default)
- a path, or sqlite:///relative/path or sqlite:////absolute/path: a SQLite file
- sqlite://:memory: : a private in-memory SQLite database (shared cache: pooled connections agree)
- postgresql://user:password@host:port/dbname?schema=NAME : PostgreSQL (schema created if missing)
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlparse

DEFAULT_DATABASE_URL = "sqlite:///twinledger.db"
DATABASE_URL_VARIABLE = "TWINLEDGER_DATABASE_URL"


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
            return {
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
            } | _append_path()
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": self.sqlite_path,
            "SQLITE_LOCK_TIMEOUT": "10",
        }

    def psycopg_conninfo(self) -> str:
        """A libpq connection string for direct connections (projections, schema setup)."""
        parts = {
            "host": self.host,
            "port": str(self.port),
            "user": self.user,
            "dbname": self.dbname,
            "connect_timeout": "5",
        }
        if self.password:
            parts["password"] = self.password
        return " ".join(f"{key}='{value}'" for key, value in parts.items())

    def describe(self) -> str:
        if self.is_postgres:
            return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}?schema={self.schema}"
        return f"sqlite:{self.sqlite_path}"


def _append_path() -> dict[str, str]:
    """TWINLEDGER_PG_APPEND: ``copy`` (default, infrastructure/pg_recorder.py) or ``insert``
    (eventsourcing's own recorder: a fallback, and the baseline the benchmark compares with)."""
    choice = os.environ.get("TWINLEDGER_PG_APPEND", "copy")
    if choice == "insert":
        return {}
    if choice != "copy":
        raise ValueError(f"TWINLEDGER_PG_APPEND: {choice!r} is not copy or insert")
    return {"APPLICATION_RECORDER_TOPIC": "infrastructure.pg_recorder:CopyApplicationRecorder"}


def resolve_database(url: str | None = None) -> Database:
    """Parse ``url`` (or the environment's, or the default) into a Database."""
    url = url or os.environ.get(DATABASE_URL_VARIABLE) or DEFAULT_DATABASE_URL
    if url.startswith(("postgresql://", "postgres://")):
        parsed = urlparse(url)
        schema = parse_qs(parsed.query).get("schema", ["public"])[0]
        if not schema.replace("_", "").isalnum():
            raise ValueError(f"database: schema name {schema!r} must be letters, digits and _")
        return Database(
            url=url,
            backend="postgres",
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or 5432,
            user=unquote(parsed.username or os.environ.get("USER", "postgres")),
            password=unquote(parsed.password or ""),
            dbname=(parsed.path or "/").lstrip("/") or "postgres",
            schema=schema,
        )
    if url in ("sqlite://:memory:", ":memory:"):
        name = f"file:twinledger-{uuid.uuid4().hex}?mode=memory&cache=shared"
        return Database(url=url, backend="sqlite", sqlite_path=name)
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
    elif url.startswith("sqlite:"):
        raise ValueError(f"database: cannot read {url!r}; use sqlite:///path/to/file.db")
    elif "://" in url:
        raise ValueError(f"database: unsupported URL {url!r}; use a SQLite path or postgresql://")
    else:
        path = url
    return Database(url=url, backend="sqlite", sqlite_path=os.path.abspath(path))
