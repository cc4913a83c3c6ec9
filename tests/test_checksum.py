"""Table checksums: streamed in bounded memory, the same on SQLite and PostgreSQL.

A scratch table with every column kind and a key with a text column (ordered byte-wise on
both back ends whatever the column's collation) is filled with the same rows on each back end,
in different orders; the checksums agree with each other and with the definition (SHA-256 of
the canonical rows in key order).
"""

from __future__ import annotations

import hashlib
import random
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import msgspec
import pytest

from infrastructure.application import TwinLedger
from projections.checksum import canonical_line, table_checksum
from projections.store import Store
from projections.tables import Column, Table, create_table_sql

SCRATCH = Table(
    name="checksum_scratch",
    columns=(
        Column("id", "uuid"),
        Column("year", "int"),
        Column("kind", "text"),
        Column("data", "json", nullable=True),
        Column("at", "timestamp"),
        Column("amount", "bigint"),
        Column("score", "float", nullable=True),
    ),
    primary_key=("id", "year", "kind"),
)
KINDS = ("a", "B", "é", "Z", "b", "a b", "ä")  # byte order differs from most collations'
START = datetime(2030, 1, 1, tzinfo=UTC)


def rows(count: int, salt: str = "") -> Iterator[tuple[Any, ...]]:
    for i in range(count):
        ident = uuid5(NAMESPACE_URL, f"{salt}{i // len(KINDS)}")
        kind = KINDS[i % len(KINDS)]
        data = msgspec.json.encode({"v": i / 3, "k": [i, kind], "big": 4.6e18}).decode()
        yield (ident, i % 11 + 1, kind, data, START + timedelta(seconds=i), 10**15 + i, i / 7)


def create(store: Store) -> None:
    with store.transaction() as cursor:
        store.drop_table(cursor, SCRATCH.name)
        statement = create_table_sql(
            SCRATCH, SCRATCH.name, postgres=store.postgres, schema=store.schema
        )
        cursor.execute(store.raw(statement))
        if store.postgres:  # a collation whose order is not byte order ('a' < 'B')
            cursor.execute(
                store.sql(
                    'ALTER TABLE {t} ALTER COLUMN kind TYPE text COLLATE "und-x-icu"',
                    t=SCRATCH.name,
                )
            )


def fill(store: Store, values: list[tuple[Any, ...]]) -> None:
    kinds = [c.kind for c in SCRATCH.columns]
    with store.transaction() as cursor:
        for start in range(0, len(values), 20_000):
            chunk = [
                tuple(store.to_db(kind, v) for kind, v in zip(kinds, row, strict=True))
                for row in values[start : start + 20_000]
            ]
            store.bulk_insert(cursor, SCRATCH.name, SCRATCH.column_names, chunk)


def checksum(store: Store) -> tuple[int, str]:
    with store.reading() as cursor:
        return table_checksum(store, cursor, SCRATCH)


def expected(values: list[tuple[Any, ...]]) -> tuple[int, str]:
    """The definition: canonical lines in key order (uuid text, int, text as UTF-8 bytes)."""
    ordered = sorted(values, key=lambda row: (str(row[0]), row[1], row[2].encode()))
    digest = hashlib.sha256()
    kinds = [c.kind for c in SCRATCH.columns]
    for row in ordered:
        digest.update(canonical_line(kinds, row))
        digest.update(b"\n")
    return len(ordered), digest.hexdigest()


@pytest.fixture
def store(ledger: TwinLedger) -> Iterator[Store]:
    assert ledger.database is not None
    opened = Store(ledger.database)  # the ledger created the schema
    try:
        create(opened)
        yield opened
    finally:
        opened.close()


def test_the_same_rows_give_the_same_checksum_on_both_back_ends(
    store: Store, other_database_url: str
) -> None:
    values = list(rows(500))
    shuffled = values[:]
    random.Random(7).shuffle(shuffled)
    fill(store, values)
    other_ledger = TwinLedger.open(other_database_url)
    assert other_ledger.database is not None
    other = Store(other_ledger.database)
    try:
        create(other)
        fill(other, shuffled)
        assert checksum(store) == checksum(other) == expected(values)
        with other.transaction() as cursor:  # one value changed: a different checksum
            cursor.execute(
                other.sql("UPDATE {t} SET amount = amount + 1 WHERE year = 3", t=SCRATCH.name)
            )
        assert checksum(other) != checksum(store)
    finally:
        other.close()
        other_ledger.close()


def test_a_checksum_streams_in_bounded_memory(store: Store) -> None:
    """The peak of Python memory during a checksum does not grow with the number of rows."""

    def peak() -> tuple[int, int]:
        tracemalloc.start()
        try:
            count, _ = checksum(store)
            return count, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    fill(store, list(rows(2_000)))
    _, small = peak()
    fill(store, list(rows(14_000, salt="more")))
    count, large = peak()
    assert count == 16_000
    assert large < 2 * small + 1_000_000, (small, large)
    assert large < 16 * 2**20
