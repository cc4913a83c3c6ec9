"""One statement string with a ``COPY ... FROM STDIN`` inside it: two round trips in all.

PostgreSQL's simple query protocol runs a string of statements in order; when it reaches a
``COPY FROM STDIN`` it asks for the data, takes it, and goes on with the statements after it,
all in the same exchange. So ``BEGIN; ...; COPY ...; ...; COMMIT`` costs one round trip up to
the COPY's start and one for the data and everything after it, where one statement at a time
costs one round trip each (a COPY two). libpq supports this (results come back one per
statement, the COPY's as PGRES_COPY_IN); psycopg's ``Cursor.copy`` does not ("COPY cannot be
mixed with other operations"), so this drives the exchange with psycopg's own generators and
waiting, on the connection's libpq object, holding the connection's lock.

``psycopg.generators`` and ``Connection.wait`` are psycopg's own machinery, not its documented
API (they have kept these names and signatures since 3.0): pyproject.toml therefore caps
psycopg at the minor versions tested, and tests/test_pg_copy_string.py runs this exchange on
every CI run, so an upgrade that changes them fails there, not in a user's append.

Errors: a statement that fails ends the string there (the server skips the rest, COPY data
included, and answers ready); its error is raised as psycopg raises it, with the transaction
the string began left open in error for the caller to roll back. Anything else that goes wrong
mid-exchange (a Python error, an interrupt, a lost connection) closes the connection: the
server then rolls the transaction back, and a pool discards a closed connection.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from psycopg import Connection, errors, generators, pq
from psycopg.waiting import Wait

COPY_IN = pq.ExecStatus.COPY_IN
FATAL_ERROR = pq.ExecStatus.FATAL_ERROR
PIECE = 128 * 1024
"""COPY data is handed to libpq in pieces of at most this many bytes (as psycopg's own COPY
does, MAX_BUFFER_SIZE: libpq may loop on a single very large buffer)."""


def run_with_copy(connection: Connection[Any], statements: bytes, data: bytes) -> list[Any]:
    """Send ``statements`` (one string, exactly one ``COPY ... FROM STDIN`` in it, no
    parameters) with ``data`` as that COPY's input; return the results of the statements
    after the COPY (psycopg ``PGresult``s: the COPY's own first). Raises the first statement
    error as psycopg would (e.g. UniqueViolation)."""
    pgconn = connection.pgconn
    encoding = connection.info.encoding
    with connection.lock:
        try:
            pgconn.send_query(statements)
            before = connection.wait(generators.execute(pgconn))  # up to the COPY's start
            _raise_error(before, encoding)
            if not before or before[-1].status != COPY_IN:
                raise errors.ProgrammingError("the statement string has no COPY FROM STDIN")
            for start in range(0, len(data), PIECE):
                connection.wait(generators.copy_to(pgconn, data[start : start + PIECE]))
            after: list[Any] = connection.wait(_end_copy(pgconn))
        except errors.Error:
            if pgconn.transaction_status == pq.TransactionStatus.ACTIVE:
                connection.close()  # mid-exchange: the server rolls back
            raise
        except BaseException:
            connection.close()
            raise
    _raise_error(after, encoding)
    return after


def _end_copy(pgconn: Any) -> Generator[Wait, Any, list[Any]]:
    """Send the end of the COPY data, then read every result up to the end of the string (as
    psycopg's ``copy_end``, which expects the COPY's result alone)."""
    while pgconn.put_copy_end(None) == 0:
        while not (yield Wait.W):
            continue
    while True:
        while not (yield Wait.W):
            continue
        if pgconn.flush() == 0:
            break
    results: list[Any] = yield from generators.fetch_many(pgconn)
    return results


def _raise_error(results: list[Any], encoding: str) -> None:
    for result in results:
        if result.status == FATAL_ERROR:
            raise errors.error_from_result(result, encoding=encoding)
