"""The write path of execute_run: completing a run does not read its years back, and chunks
before the last may commit without waiting for the log flush (PostgreSQL: synchronous_commit
off; SQLite: synchronous NORMAL) while the last one, and RunCompleted, commit durably."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from conftest import fresh_postgres_url

from domain.values import RunStatus
from infrastructure.application import TwinLedger
from infrastructure.pg_recorder import CopyApplicationRecorder
from infrastructure.sqlite_recorder import HashingSQLiteRecorder

BUDGET = 1_000_000_000_000


def test_completing_a_run_does_not_read_its_years_back(ledger: TwinLedger) -> None:
    twin_id = ledger.clone_twin(name="Mars A", body="mars")
    run_id = ledger.queue_run(
        twin_id, pattern="mars_terraform", duration_years=80, budget_cents=BUDGET
    )
    store = ledger.repository.event_store
    read: dict[UUID, int] = {}
    original = store.get

    def counting_get(originator_id: UUID, *args: Any, **kwargs: Any) -> Any:
        for event in original(originator_id, *args, **kwargs):
            read[originator_id] = read.get(originator_id, 0) + 1
            yield event

    store.get = counting_get  # type: ignore[method-assign]
    try:
        run = ledger.execute_run(run_id, chunk_years=20)
    finally:
        del store.get
    assert run.status == RunStatus.COMPLETED
    assert ledger.get_run(run_id).status == RunStatus.COMPLETED
    assert len(list(ledger.recorded_years(run_id))) == 80
    # RunQueued read to start it (twice: the check, then the start under retry), never the years.
    assert read[run.id] <= 4


def test_a_cancel_between_the_last_chunk_and_completion_wins(ledger: TwinLedger) -> None:
    """The run in memory is stale once another writer cancelled it: the completion conflicts,
    reloads, and is refused as before; nothing of it is written."""
    twin_id = ledger.clone_twin(name="Mars A", body="mars")
    run_id = ledger.queue_run(
        twin_id, pattern="mars_terraform", duration_years=40, budget_cents=BUDGET
    )
    original = ledger._save_chunk

    def save_then_cancel(run: Any, *, durable: bool = True) -> bool:
        saved = original(run, durable=durable)
        if durable:  # the last chunk: another process cancels before the completion
            ledger.cancel_run(run_id, reason="stop", by="other")
        return saved

    ledger._save_chunk = save_then_cancel  # type: ignore[method-assign]
    from domain.errors import InvalidTransition

    with pytest.raises(InvalidTransition):
        ledger.execute_run(run_id, chunk_years=10)
    stored = ledger.get_run(run_id)
    assert stored.status == RunStatus.CANCELLED
    assert len(list(ledger.recorded_years(run_id))) == 40


@pytest.fixture
def pg_ledger() -> Iterator[TwinLedger]:
    with fresh_postgres_url() as url:
        application = TwinLedger.open(url)
        yield application
        application.close()


@pytest.mark.postgres
def test_only_the_last_chunk_waits_for_the_log_flush(pg_ledger: TwinLedger) -> None:
    recorder: Any = pg_ledger.recorder
    seen: list[bool] = []
    original = recorder.insert_events

    def spy(stored_events: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("durable", True))
        return original(stored_events, **kwargs)

    recorder.insert_events = spy
    twin_id = pg_ledger.clone_twin(name="Mars A", body="mars")
    run_id = pg_ledger.queue_run(
        twin_id, pattern="mars_terraform", duration_years=40, budget_cents=BUDGET
    )
    seen.clear()
    pg_ledger.execute_run(run_id, chunk_years=10)
    # start (durable), chunks of years 10, 20, 30 (not), 40 (durable), RunCompleted (durable)
    assert seen == [True, False, False, False, True, True]
    assert len(list(pg_ledger.recorded_years(run_id))) == 40


@pytest.mark.postgres
def test_a_save_that_need_not_wait_sets_synchronous_commit_off_for_itself(
    pg_ledger: TwinLedger,
) -> None:
    recorder: Any = pg_ledger.recorder
    assert isinstance(recorder, CopyApplicationRecorder)
    statements = {
        durable: recorder.append_preamble(durable).as_string(None) for durable in (True, False)
    }
    assert "synchronous_commit = off" in statements[False]
    assert "synchronous_commit" not in statements[True]
    for text in statements.values():
        # The table lock goes through the owner's function (docs/integrity.md: roles).
        assert '"twinledger_events_lock"()' in text
        assert "NOTIFY" in text and "lock_timeout" in text
    assert "SET LOCAL synchronous_commit" in statements[False]  # this transaction only


# --- SQLite: intermediate chunks commit without an fsync of the WAL --------------------------


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Iterator[TwinLedger]:
    application = TwinLedger.open(f"sqlite:///{tmp_path}/ledger.db")
    yield application
    application.close()


def test_sqlite_only_the_last_chunk_fsyncs(sqlite_ledger: TwinLedger) -> None:
    """The synchronous level in force inside each write transaction of execute_run (2 FULL:
    the commit fsyncs the WAL; 1 NORMAL: it does not), and every pooled connection is back at
    FULL afterwards."""
    recorder: Any = sqlite_ledger.recorder
    assert isinstance(recorder, HashingSQLiteRecorder)
    levels: list[int] = []
    original = recorder._insert_events

    def spy(c: Any, stored_events: Any, **kwargs: Any) -> Any:
        connection = c.sqlite_cursor.connection
        levels.append(connection.execute("PRAGMA synchronous").fetchone()[0])
        return original(c, stored_events, **kwargs)

    recorder._insert_events = spy
    twin_id = sqlite_ledger.clone_twin(name="Mars A", body="mars")
    run_id = sqlite_ledger.queue_run(
        twin_id, pattern="mars_terraform", duration_years=40, budget_cents=BUDGET
    )
    assert levels == [2, 2]  # the twin, the queued run: durable
    levels.clear()
    sqlite_ledger.execute_run(run_id, chunk_years=10)
    # start (FULL), chunks of years 10, 20, 30 (NORMAL), 40 (FULL), RunCompleted (FULL)
    assert levels == [2, 1, 1, 1, 2, 2]
    assert len(list(sqlite_ledger.recorded_years(run_id))) == 40
    pool = recorder.datastore.pool
    assert pool._pool, "no pooled connection to check"
    for connection in pool._pool:
        assert connection._sqlite_conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_sqlite_a_crash_after_an_unsynced_chunk_resumes_to_the_same_digest(
    tmp_path: Path,
) -> None:
    """The process dies (os._exit: no close, no rollback) right after the second of two
    NORMAL chunk commits. The chunks are there (a process crash loses no WAL commit), and
    the run resumes to the digest of the same run executed without a crash."""
    url = f"sqlite:///{tmp_path}/ledger.db"
    ledger = TwinLedger.open(url)
    try:
        runs = []
        for name in ("Mars A", "Mars B"):
            twin_id = ledger.clone_twin(name=name, body="mars")
            runs.append(
                ledger.queue_run(
                    twin_id,
                    pattern="mars_terraform",
                    duration_years=60,
                    budget_cents=BUDGET,
                    seed=1234,
                )
            )
    finally:
        ledger.close()
    disturbed, reference = runs
    crash = textwrap.dedent(
        f"""
        import os
        from infrastructure.application import TwinLedger

        def die(done, total):
            if done == 40:
                os._exit(17)

        TwinLedger.open({url!r}).execute_run({str(disturbed)!r}, chunk_years=20, on_progress=die)
        """
    )
    environment = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    died = subprocess.run([sys.executable, "-c", crash], env=environment, timeout=120)
    assert died.returncode == 17
    ledger = TwinLedger.open(url)
    try:
        run = ledger.get_run(disturbed)
        assert (run.status, run.years_recorded) == (RunStatus.RUNNING, 40)
        expected = ledger.execute_run(reference, chunk_years=20)
        resumed = ledger.execute_run(disturbed, chunk_years=20)
        assert resumed.status == expected.status == RunStatus.COMPLETED
        assert resumed.result_digest == expected.result_digest
        assert [y.year for y in ledger.recorded_years(disturbed)] == list(range(1, 61))
    finally:
        ledger.close()


def test_sqlite_a_connection_not_restored_to_full_is_not_pooled(
    sqlite_ledger: TwinLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If setting the level back fails, the connection is closed: no later save may commit
    at NORMAL on it by accident."""
    import infrastructure.sqlite_recorder as module

    recorder: Any = sqlite_ledger.recorder
    real = module._synchronous
    calls: list[int | None] = []

    def failing_restore(connection: Any, level: int | None) -> int:
        calls.append(level)
        if len(calls) == 3:  # read, set NORMAL, then the restore
            raise module.OperationalError("disk I/O error")
        return real(connection, level)

    twin_id = sqlite_ledger.clone_twin(name="Mars A", body="mars")
    run_id = sqlite_ledger.queue_run(
        twin_id, pattern="mars_terraform", duration_years=40, budget_cents=BUDGET
    )
    monkeypatch.setattr(module, "_synchronous", failing_restore)
    from infrastructure.errors import RunInterrupted

    with pytest.raises(RunInterrupted, match="disk I/O error"):
        sqlite_ledger.execute_run(run_id, chunk_years=10)
    monkeypatch.setattr(module, "_synchronous", real)
    for connection in recorder.datastore.pool._pool:
        assert connection._sqlite_conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert sqlite_ledger.get_run(run_id).years_recorded == 10  # committed before the failure
    assert sqlite_ledger.execute_run(run_id, chunk_years=10).status == RunStatus.COMPLETED


def test_sqlite_a_read_table_write_that_need_not_wait_skips_the_fsync_for_itself(
    tmp_path: Path,
) -> None:
    """Store.transaction(durable=False) means on SQLite what it means on PostgreSQL: that one
    commit does not wait for the log (synchronous=NORMAL), the connection's level is restored.
    The bench's direct-CRUD baseline commits its intermediate chunks this way, as the ledger."""
    from infrastructure.settings import resolve_database
    from projections.store import Store

    store = Store(resolve_database(f"sqlite:///{tmp_path}/tables.db"))
    try:
        store.lite.execute("PRAGMA journal_mode=WAL")
        store.lite.execute("PRAGMA synchronous = FULL")

        def level() -> int:
            return int(store.lite.execute("PRAGMA synchronous").fetchone()[0])

        with store.transaction(durable=False) as cursor:
            cursor.execute("CREATE TABLE t (x INTEGER)")
            assert level() == 1  # NORMAL inside
        assert level() == 2  # FULL again after
        with store.transaction() as cursor:
            assert level() == 2
            cursor.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(RuntimeError), store.transaction(durable=False) as cursor:
            cursor.execute("INSERT INTO t VALUES (2)")
            raise RuntimeError("rolled back")
        assert level() == 2
        assert store.lite.execute("SELECT x FROM t").fetchall() == [(1,)]
    finally:
        store.close()
