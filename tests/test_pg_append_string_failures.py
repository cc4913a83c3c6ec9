"""The two-round-trip append (one statement string with a COPY inside,
infrastructure/pg_copy_string.py) under the failures of a real server: a statement cancelled or
a connection terminated while the append waits for the table lock, an interrupt in the middle of
the exchange. Each time nothing of the failed attempt is written, the library's retry (on
OperationalError) writes the batch exactly once, and the pool hands out only usable
connections afterwards."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from conftest import fresh_postgres_url, postgres_base_url
from eventsourcing.persistence import StoredEvent
from psycopg import sql
from psycopg.pq import TransactionStatus

import infrastructure.pg_copy_string as pg_copy_string
import infrastructure.pg_recorder as pg_recorder
from infrastructure.application import TwinLedger
from infrastructure.integrity import chain_batch

pytestmark = pytest.mark.postgres


@pytest.fixture
def ledger() -> Iterator[TwinLedger]:
    with fresh_postgres_url() as url:
        application = TwinLedger.open(url)
        yield application
        application.close()


def batch(size: int) -> list[StoredEvent]:
    originator = uuid4()
    return [
        StoredEvent(originator, version, "tests:Probe", f'{{"v":{version}}}'.encode())
        for version in range(1, size + 1)
    ]


def chain_rows(recorder: Any) -> list[tuple[int, bytes]]:
    with recorder.datastore.get_connection() as connection:
        rows = connection.execute(
            sql.SQL("SELECT first_version, hashes FROM {} ORDER BY originator_id, 1").format(
                sql.Identifier(recorder.datastore.schema, recorder.chain_table_name)
            )
        ).fetchall()
    return [(r["first_version"], bytes(r["hashes"])) for r in rows]


def attempts(monkeypatch: pytest.MonkeyPatch) -> tuple[list[BaseException | None], threading.Event]:
    """Record each string append's outcome (None: it went through); the event is set at the
    first failure."""
    outcomes: list[BaseException | None] = []
    failed = threading.Event()
    original = pg_recorder.run_with_copy

    def counted(connection: Any, statements: bytes, data: bytes) -> list[Any]:
        try:
            results = original(connection, statements, data)
        except BaseException as error:
            outcomes.append(error)
            failed.set()
            raise
        outcomes.append(None)
        return results

    monkeypatch.setattr(pg_recorder, "run_with_copy", counted)
    return outcomes, failed


@pytest.mark.parametrize("how", ["cancelled", "terminated"])
def test_an_append_failing_while_it_waits_for_the_lock_is_retried_and_written_once(
    ledger: TwinLedger, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Another session holds the events table's lock; the append's string waits for it at
    its ``SELECT lock()``. Its statement is then cancelled (QueryCanceled) or its backend
    terminated (the connection lost): an OperationalError either way, which the library's
    retry takes; the lock is released and the retried string writes the batch once, its
    chain record once, with the ids the log gives."""
    recorder: Any = ledger.recorder
    first = batch(100)
    recorder.insert_events(first)  # its hashes remembered: the next append is the string
    head = recorder.max_notification_id()
    outcomes, failed = attempts(monkeypatch)
    table = sql.Identifier(recorder.datastore.schema, recorder.events_table_name)
    holder = psycopg.connect(postgres_base_url(), autocommit=True)
    problems: list[BaseException] = []

    def interfere() -> None:
        try:
            with psycopg.connect(postgres_base_url(), autocommit=True) as watcher:
                while True:  # the appending backend, waiting for the lock the holder has
                    row = watcher.execute(
                        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query LIKE %s",
                        (f"%{recorder.datastore.schema}%COPY%",),
                    ).fetchone()
                    if row is not None:
                        break
                    failed.wait(0.05)
                function = "pg_cancel_backend" if how == "cancelled" else "pg_terminate_backend"
                watcher.execute(f"SELECT {function}(%s)", (row[0],))
            failed.wait(30)
        except BaseException as error:  # pragma: no cover - reported below
            problems.append(error)
        finally:
            holder.rollback()  # the lock goes: the retry gets it

    try:
        holder.execute("BEGIN")
        holder.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table))
        thread = threading.Thread(target=interfere)
        thread.start()
        second = batch(100)
        ids = recorder.insert_events(second)
        thread.join()
    finally:
        holder.close()
    assert problems == []
    expected = psycopg.errors.QueryCanceled if how == "cancelled" else psycopg.OperationalError
    assert isinstance(outcomes[0], expected)
    assert outcomes[-1] is None and all(o is not None for o in outcomes[:-1])
    assert list(ids) == list(range(head + 1, head + 101))
    stored = recorder.select_events(second[0].originator_id)
    assert [(e.originator_version, e.state) for e in stored] == [
        (e.originator_version, e.state) for e in second
    ]
    assert recorder.max_notification_id() == head + 100
    expected_records = sorted(
        (str(b[0].originator_id), 1, b"".join(h for _, _, h in chain_batch(b, {})))
        for b in (first, second)
    )
    assert chain_rows(recorder) == [(v, h) for _, v, h in expected_records]


@pytest.mark.parametrize("where", ["before the rows", "after the rows, before their end"])
def test_an_interrupt_mid_exchange_writes_nothing_and_the_pool_goes_on(
    ledger: TwinLedger, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Ctrl-C while the server is in the middle of the COPY: the connection is closed (the
    server rolls back and lets the table lock go), the pool does not hand it out again, and
    the next append, on the same recorder, goes through with the next ids."""
    recorder: Any = ledger.recorder
    recorder.insert_events(batch(100))
    head = recorder.max_notification_id()
    pids: list[int] = []
    generators = pg_copy_string.generators

    class Interrupting:
        def __getattr__(self, name: str) -> Any:
            return getattr(generators, name)

        def copy_to(self, pgconn: Any, data: bytes) -> Any:
            pids.append(pgconn.backend_pid)
            if where == "before the rows":
                raise KeyboardInterrupt
            return generators.copy_to(pgconn, data)

    def end_copy(pgconn: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(pg_copy_string, "generators", Interrupting())
    if where != "before the rows":
        monkeypatch.setattr(pg_copy_string, "_end_copy", end_copy)
    interrupted = batch(100)
    with pytest.raises(KeyboardInterrupt):
        recorder.insert_events(interrupted)
    monkeypatch.undo()
    assert pids
    next_batch = batch(100)
    ids = recorder.insert_events(next_batch)  # waits for no lock: the old backend let go
    # (ids the rolled-back COPY drew stay drawn, as after any rollback: a gap, never a reuse)
    assert list(ids) == list(range(ids[0], ids[0] + 100)) and ids[0] > head
    assert recorder.max_notification_id() == ids[-1]
    assert recorder.select_events(interrupted[0].originator_id) == []
    assert len(recorder.select_events(next_batch[0].originator_id)) == 100
    # every connection the pool hands out now is usable and outside any transaction
    pool = recorder.datastore.pool
    taken = [pool.getconn() for _ in range(max(1, pool.get_stats()["pool_size"]))]
    try:
        assert pids[0] not in {c.info.backend_pid for c in taken}
        assert {c.info.transaction_status for c in taken} == {TransactionStatus.IDLE}
        assert all(c.execute("SELECT 1").fetchone() is not None for c in taken)
    finally:
        for connection in taken:
            pool.putconn(connection)
