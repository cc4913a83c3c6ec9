"""Fixtures: every ledger test runs on SQLite and on PostgreSQL.

PostgreSQL is TWINLEDGER_TEST_DATABASE_URL if set, else the server on 127.0.0.1:5432 if it
answers. Each test gets its own fresh schema (dropped afterwards). When PostgreSQL cannot be
reached the PostgreSQL half is skipped with a loud reason, unless TWINLEDGER_REQUIRE_POSTGRES=1
(set by .ci/run), under which it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from infrastructure.application import TwinLedger

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
REQUIRE_POSTGRES = os.environ.get("TWINLEDGER_REQUIRE_POSTGRES") == "1"


def postgres_base_url() -> str:
    return os.environ.get("TWINLEDGER_TEST_DATABASE_URL", DEFAULT_POSTGRES_URL)


_reachable: dict[str, str | None] = {}


def postgres_problem() -> str | None:
    """None if PostgreSQL answers, else why not (checked once per session)."""
    url = postgres_base_url()
    if url not in _reachable:
        try:
            with psycopg.connect(url, connect_timeout=3) as connection:
                connection.execute("SELECT 1")
            _reachable[url] = None
        except psycopg.Error as error:
            _reachable[url] = f"{url}: {str(error).strip().splitlines()[0]}"
    return _reachable[url]


class Clock:
    """A settable clock for time travel in tests."""

    def __init__(self, start: datetime | None = None) -> None:
        # Starts at the real time: events are stamped by the wall clock (eventsourcing), so
        # advancing this clock makes them as old, to the commands, as the advance says.
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[str]:
    """A fresh, empty database URL on each back end."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.db"
        return
    with fresh_postgres_url() as url:
        yield url


@contextmanager
def fresh_postgres_url() -> Iterator[str]:
    """A URL naming a new, empty PostgreSQL schema, dropped afterwards."""
    problem = postgres_problem()
    if problem is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL required (TWINLEDGER_REQUIRE_POSTGRES=1) but {problem}")
        pytest.skip(f"POSTGRESQL NOT REACHABLE, PostgreSQL half skipped: {problem}")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    base = postgres_base_url()
    try:
        yield f"{base}{'&' if '?' in base else '?'}schema={schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )


@pytest.fixture
def other_database_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A fresh database on the other back end than ``database_url`` (SQLite <-> PostgreSQL)."""
    if database_url.startswith("sqlite"):
        with fresh_postgres_url() as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path}/other.db"


@pytest.fixture
def open_ledger(database_url: str, clock: Clock) -> Iterator[Callable[[], TwinLedger]]:
    """Opens ledgers on the test's database; all are closed at the end."""
    opened: list[TwinLedger] = []

    def opener() -> TwinLedger:
        application = TwinLedger.open(database_url, clock=clock)
        opened.append(application)
        return application

    yield opener
    for application in opened:
        application.close()


@pytest.fixture
def ledger(open_ledger: Callable[[], TwinLedger]) -> TwinLedger:
    return open_ledger()


def pytest_report_header(config: pytest.Config) -> list[str]:
    problem = postgres_problem()
    if problem is None:
        return [f"PostgreSQL: {postgres_base_url()} (fresh schema per test)"]
    verdict = "FAILING those tests" if REQUIRE_POSTGRES else "SKIPPING those tests"
    return [f"PostgreSQL NOT REACHABLE ({problem}): {verdict}"]
