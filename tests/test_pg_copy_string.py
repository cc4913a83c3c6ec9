"""One statement string with a COPY FROM STDIN inside (infrastructure/pg_copy_string.py): the
statements after the COPY run in the same exchange, a failing statement is raised as psycopg
raises it and leaves the transaction for the caller to roll back, and a failure mid-exchange
closes the connection instead of leaving it half-way through a COPY."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import postgres_base_url, postgres_problem
from psycopg import errors
from psycopg.pq import TransactionStatus
from round_trips import round_trips

from infrastructure.pg_copy_string import PIECE, run_with_copy

pytestmark = pytest.mark.postgres

COPY = b"COPY pg_temp.t (n) FROM STDIN"


@pytest.fixture
def connection() -> Iterator[psycopg.Connection[Any]]:
    if postgres_problem() is not None:
        pytest.skip("PostgreSQL not reachable")
    with psycopg.connect(postgres_base_url(), autocommit=True) as connection:
        connection.execute("CREATE TEMP TABLE t (n int PRIMARY KEY)")
        yield connection


def rows(connection: psycopg.Connection[Any]) -> list[int]:
    return [n for (n,) in connection.execute("SELECT n FROM pg_temp.t ORDER BY n")]


def test_the_statements_after_the_copy_run_in_the_same_string(
    connection: psycopg.Connection[Any],
) -> None:
    answers, results = round_trips(
        lambda: run_with_copy(
            connection,
            b"BEGIN; SELECT 1; " + COPY + b"; SELECT count(*), sum(n) FROM pg_temp.t; COMMIT",
            b"1\n2\n3\n",
        )
    )
    assert [r.command_status for r in results] == [b"COPY 3", b"SELECT 1", b"COMMIT"]
    assert (results[1].get_value(0, 0), results[1].get_value(0, 1)) == (b"3", b"6")
    assert answers == 2  # to the COPY's start; the rows and the rest
    assert connection.info.transaction_status == TransactionStatus.IDLE
    assert rows(connection) == [1, 2, 3]


def test_data_larger_than_a_piece_is_sent_whole(connection: psycopg.Connection[Any]) -> None:
    data = "".join(f"{n}\n" for n in range(60_000)).encode()
    assert len(data) > 2 * PIECE
    run_with_copy(connection, b"BEGIN; " + COPY + b"; COMMIT", data)
    assert connection.execute("SELECT count(*), max(n) FROM pg_temp.t").fetchone() == (
        60_000,
        59_999,
    )


@pytest.mark.parametrize(
    ("statements", "data", "error"),
    [
        (b"BEGIN; SELECT 1/0; " + COPY + b"; COMMIT", b"1\n", errors.DivisionByZero),
        (b"BEGIN; " + COPY + b"; COMMIT", b"1\n1\n", errors.UniqueViolation),
        (b"BEGIN; " + COPY + b"; SELECT 1/0; COMMIT", b"1\n", errors.DivisionByZero),
    ],
    ids=["before the copy", "in the copy", "after the copy"],
)
def test_a_failing_statement_is_raised_and_its_transaction_rolled_back_by_the_caller(
    connection: psycopg.Connection[Any], statements: bytes, data: bytes, error: type
) -> None:
    with pytest.raises(error):
        run_with_copy(connection, statements, data)
    # the string stopped at the error: its COMMIT never ran, the transaction is in error
    assert connection.info.transaction_status == TransactionStatus.INERROR
    connection.rollback()
    assert rows(connection) == []
    run_with_copy(connection, b"BEGIN; " + COPY + b"; COMMIT", b"7\n")  # usable as before
    assert rows(connection) == [7]


def test_a_string_without_a_copy_is_refused(connection: psycopg.Connection[Any]) -> None:
    with pytest.raises(errors.ProgrammingError, match="no COPY"):
        run_with_copy(connection, b"SELECT 1", b"1\n")
    assert rows(connection) == []


def test_a_failure_mid_copy_closes_the_connection(connection: psycopg.Connection[Any]) -> None:
    with pytest.raises(TypeError):
        run_with_copy(connection, b"BEGIN; " + COPY + b"; COMMIT", "1\n")  # type: ignore[arg-type]
    assert connection.closed  # not left in the middle of a COPY (a pool discards it)


def test_psycopg_sees_the_transaction_the_string_committed_as_ended(
    connection: psycopg.Connection[Any],
) -> None:
    """psycopg takes the transaction state from libpq, which follows the server: after a
    string's own COMMIT, ``transaction()`` opens a real transaction (not a savepoint inside
    one the string left open), whose rollback and commit do what they say."""
    run_with_copy(connection, b"BEGIN; " + COPY + b"; COMMIT", b"1\n")
    with pytest.raises(RuntimeError), connection.transaction():
        connection.execute("INSERT INTO pg_temp.t VALUES (2)")
        raise RuntimeError("rolled back")
    with connection.transaction():
        connection.execute("INSERT INTO pg_temp.t VALUES (3)")
    assert connection.info.transaction_status == TransactionStatus.IDLE
    assert rows(connection) == [1, 3]
    connection.autocommit = False  # psycopg's own BEGIN works after the string too
    connection.execute("INSERT INTO pg_temp.t VALUES (4)")
    connection.rollback()
    connection.autocommit = True
    assert rows(connection) == [1, 3]


def test_a_notify_in_the_string_reaches_listeners_at_its_commit_only(
    connection: psycopg.Connection[Any],
) -> None:
    """The append's NOTIFY rides in the string: a listener (here the connection itself, whose
    notifications psycopg dispatches while driving the exchange, and another session) gets it
    once for a committed string and never for one that failed."""
    own: list[str] = []
    connection.add_notify_handler(lambda n: own.append(n.payload))
    connection.execute("LISTEN review_channel")
    with psycopg.connect(postgres_base_url(), autocommit=True) as other:
        other.execute("LISTEN review_channel")
        with pytest.raises(errors.UniqueViolation):
            run_with_copy(
                connection,
                b"BEGIN; NOTIFY review_channel, 'lost'; " + COPY + b"; COMMIT",
                b"1\n1\n",
            )
        connection.rollback()
        run_with_copy(
            connection, b"BEGIN; NOTIFY review_channel, 'kept'; " + COPY + b"; COMMIT", b"5\n"
        )
        received = [n.payload for n in other.notifies(timeout=2, stop_after=1)]
        received += [n.payload for n in other.notifies(timeout=0.2)]
    connection.execute("SELECT 1")  # anything left for the connection itself is read by now
    assert received == ["kept"]
    assert own == ["kept"]
    assert rows(connection) == [5]


def test_notices_of_the_string_reach_the_connections_notice_handlers(
    connection: psycopg.Connection[Any],
) -> None:
    """The exchange is driven on psycopg's libpq object, whose notice processor is psycopg's:
    a server notice before or after the COPY (a warning the library would log) is delivered
    as for any statement, not lost or left in the buffer."""
    notices: list[str] = []
    connection.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    run_with_copy(
        connection,
        b"BEGIN; DO $$ BEGIN RAISE NOTICE 'before'; END $$; "
        + COPY
        + b"; DO $$ BEGIN RAISE NOTICE 'after'; END $$; COMMIT",
        b"1\n",
    )
    assert notices == ["before", "after"]
    assert rows(connection) == [1]
