"""Read tables described once, in Python, and turned into DDL for SQLite and for PostgreSQL.

A column has a *kind*; each back end maps kinds to its own types:

| kind      | PostgreSQL         | SQLite                                                  |
|-----------|--------------------|---------------------------------------------------------|
| uuid      | uuid               | TEXT, the canonical lower-case form with hyphens        |
| text      | text               | TEXT                                                    |
| int       | integer            | INTEGER                                                 |
| bigint    | bigint             | BIGINT (64-bit INTEGER affinity): money in GCC cents    |
| float     | double precision   | REAL                                                    |
| json      | json (canonical)   | TEXT holding JSON (query it with json_extract)          |
| timestamp | timestamptz        | TEXT, ISO 8601 UTC with microseconds (sorts as time)    |

JSON is stored as canonical text on both back ends (projections/canonical.py): PostgreSQL's
``json`` keeps it verbatim, where ``jsonb`` would reorder keys and reprint numbers.

The same description gives the canonical form of every row (projections/checksum.py), which is
how SQLite and PostgreSQL tables are compared value for value.

Names: a table is created under a *physical* name, its own (live) or a staging name during a
rebuild. Constraint and index names start with the physical table name, so a rebuild can
rename them with the table (projections/rebuild.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

KINDS = ("uuid", "text", "int", "bigint", "float", "json", "timestamp")

POSTGRES_TYPES = {
    "uuid": "uuid",
    "text": "text",
    "int": "integer",
    "bigint": "bigint",
    "float": "double precision",
    "json": "json",
    "timestamp": "timestamptz",
}
SQLITE_TYPES = {
    "uuid": "TEXT",
    "text": "TEXT",
    "int": "INTEGER",
    "bigint": "BIGINT",
    "float": "REAL",
    "json": "TEXT",
    "timestamp": "TEXT",
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    nullable: bool = False
    doc: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"column {self.name}: unknown kind {self.kind!r}")


@dataclass(frozen=True)
class ForeignKey:
    column: str
    table: str  # the live name of the referenced table
    ref_column: str = "id"


@dataclass(frozen=True)
class Index:
    suffix: str  # index name: <physical table name>_<suffix>
    columns: str  # the column list, as SQL
    postgres: str | None = None  # a PostgreSQL-only form, e.g. "USING gin (...)"
    where: str | None = None
    postgres_only: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    foreign_keys: tuple[ForeignKey, ...] = ()
    indexes: tuple[Index, ...] = ()
    checks: tuple[str, ...] = ()
    doc: str = ""
    column_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "column_names", tuple(c.name for c in self.columns))

    def kinds(self) -> dict[str, str]:
        return {column.name: column.kind for column in self.columns}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def create_table_sql(
    table: Table,
    physical: str,
    *,
    postgres: bool,
    schema: str = "",
    references: dict[str, str] | None = None,
    foreign_keys: bool = True,
) -> str:
    """CREATE TABLE for ``table`` named ``physical``.

    ``references`` maps a referenced table's live name to the physical name to point at (a
    staging table rebuilt in the same rebuild), so staging tables reference each other.
    Without ``foreign_keys`` the table has none: a PostgreSQL rebuild adds them after loading
    (add_foreign_key_sql), the same constraints under the same names.
    """
    types = POSTGRES_TYPES if postgres else SQLITE_TYPES

    lines = [
        f"{_quote(c.name)} {types[c.kind]}{'' if c.nullable else ' NOT NULL'}"
        for c in table.columns
    ]
    keys = ", ".join(_quote(c) for c in table.primary_key)
    lines.append(f"CONSTRAINT {_quote(physical + '_pkey')} PRIMARY KEY ({keys})")
    if foreign_keys:
        for fk in table.foreign_keys:
            lines.append(_foreign_key(fk, physical, postgres, schema, references))
    for number, check in enumerate(table.checks, start=1):
        lines.append(f"CONSTRAINT {_quote(f'{physical}_check{number}')} CHECK ({check})")
    body = ",\n  ".join(lines)
    return f"CREATE TABLE {_qualified(physical, postgres, schema)} (\n  {body}\n)"


def _qualified(name: str, postgres: bool, schema: str) -> str:
    return f"{_quote(schema)}.{_quote(name)}" if postgres else _quote(name)


def _foreign_key(
    fk: ForeignKey,
    physical: str,
    postgres: bool,
    schema: str,
    references: dict[str, str] | None,
) -> str:
    target = (references or {}).get(fk.table, fk.table)
    return (
        f"CONSTRAINT {_quote(f'{physical}_{fk.column}_fkey')} FOREIGN KEY ({_quote(fk.column)})"
        f" REFERENCES {_qualified(target, postgres, schema)} ({_quote(fk.ref_column)})"
    )


def add_foreign_key_sql(
    fk: ForeignKey, physical: str, *, schema: str, references: dict[str, str] | None = None
) -> str:
    """ALTER TABLE ... ADD the foreign key ``create_table_sql`` would have declared (PostgreSQL):
    checked once over the loaded rows instead of row by row while loading."""
    return f"ALTER TABLE {_qualified(physical, True, schema)} ADD " + _foreign_key(
        fk, physical, True, schema, references
    )


def create_index_sql(
    table: Table, index: Index, physical: str, *, postgres: bool, schema: str = ""
) -> str | None:
    if index.postgres_only and not postgres:
        return None
    name = _quote(f"{physical}_{index.suffix}")
    target = f"{_quote(schema)}.{_quote(physical)}" if postgres else _quote(physical)
    columns = index.postgres if (postgres and index.postgres) else f"({index.columns})"
    where = f" WHERE {index.where}" if index.where else ""
    return f"CREATE INDEX {name} ON {target} {columns}{where}"


def index_names(table: Table, physical: str, *, postgres: bool) -> list[str]:
    return [
        f"{physical}_{index.suffix}"
        for index in table.indexes
        if postgres or not index.postgres_only
    ]


def schema_version(tables: tuple[Table, ...], handler_version: int) -> str:
    """A short fingerprint of the tables' DDL on both back ends and of the handlers' version.

    Stored with a projection's position: when it changes, the tables are rebuilt.
    """
    digest = hashlib.sha256(str(handler_version).encode())
    for table in tables:
        for postgres in (False, True):
            digest.update(create_table_sql(table, table.name, postgres=postgres).encode())
            for index in table.indexes:
                statement = create_index_sql(table, index, table.name, postgres=postgres)
                digest.update((statement or "").encode())
    return digest.hexdigest()[:16]
