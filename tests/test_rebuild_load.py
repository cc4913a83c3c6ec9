"""A PostgreSQL rebuild's load in fewer round trips gives what the plain load gives.

The load runs each batch in pipeline mode (a write's error then surfaces later: the batch's all
the same) and commits asynchronously by session. On SQLite neither applies: the same outcomes
are checked there too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from infrastructure.application import TwinLedger
from projections.base import Batch
from projections.runs import RunsProjection
from projections.store import Store
from tests.projection_scenario import build, projector

YEAR_TOPIC = "domain.run:YearResultRecorded"


def test_a_write_refused_in_a_pipelined_batch_is_parked_as_a_catch_up_parks_it(
    ledger: TwinLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runs projection writes a row its table refuses while applying one year: in pipeline
    mode the error surfaces at the batch's COMMIT, not at the write. The batch runs again with
    savepoints, which parks that year and holds the run's later events behind it: the tables
    and parked events a catch-up from position 0 gives with the same fault."""
    s = build(ledger)
    years = [
        n.id
        for n in ledger.recorder.select_notifications(start=1, limit=10_000)
        if str(n.originator_id) == str(s.completed) and n.topic == YEAR_TOPIC
    ]
    faulty = years[len(years) // 2]
    original = RunsProjection.apply

    def refused(self: RunsProjection, batch: Batch) -> None:
        original(self, batch)
        if any(event.position == faulty for event in batch.events):
            batch.cursor.execute(  # NOT NULL id: refused on both back ends
                batch.store.sql(
                    "INSERT INTO {t} (id) VALUES (NULL)", t=batch.table("simulation_runs")
                )
            )

    monkeypatch.setattr(RunsProjection, "apply", refused)
    pipelined: list[bool] = []
    transaction = Store.pipelined

    def spy(self: Store, **options: Any) -> Any:
        pipelined.append(self.postgres)
        return transaction(self, **options)

    monkeypatch.setattr(Store, "pipelined", spy)
    with projector(ledger) as p:
        p.catch_up()
        expected = p.checksums()
        parked = [(r.projection, r.position, r.error_class) for r in p.parked()]
        assert parked[0][:2] == ("runs", faulty)
        assert parked[0][2] in ("IntegrityError", "NotNullViolation")
        assert {(name, kind) for name, _, kind in parked[1:]} == {("runs", "Held")}
        pipelined.clear()
        p.rebuild()
        assert p.checksums() == expected
        assert [(r.projection, r.position, r.error_class) for r in p.parked()] == parked
        assert any(pipelined) == p.store.postgres


def test_a_load_interrupted_mid_batch_leaves_the_connection_and_the_tables_as_they_were(
    ledger: TwinLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted between two of a pipelined batch's statements: the batch is rolled back
    (out of pipeline mode), the live tables are untouched and the next rebuild runs."""
    build(ledger)
    original = RunsProjection.apply
    calls = {"n": 0}

    def interrupted(self: RunsProjection, batch: Batch) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        original(self, batch)

    with projector(ledger, batch_size=5) as p:
        p.catch_up()
        before = p.checksums()
        monkeypatch.setattr(RunsProjection, "apply", interrupted)
        with pytest.raises(KeyboardInterrupt):
            p.rebuild()
        assert calls["n"] == 3
        if p.store.postgres:
            assert p.store.pg.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert p.checksums() == before
        monkeypatch.undo()
        p.rebuild()
        assert p.checksums() == before


def test_the_load_leaves_the_session_committing_as_before(ledger: TwinLedger) -> None:
    build(ledger)
    with projector(ledger) as p:
        store = p.store
        p.catch_up()
        expected = p.checksums()

        def setting(cursor: Any) -> str:
            cursor.execute("SHOW synchronous_commit" if store.postgres else "PRAGMA synchronous")
            return str(cursor.fetchone()[0])

        with store.reading() as cursor:
            before = setting(cursor)
        if store.postgres:
            assert before == "on"
            with store.committing_asynchronously():
                with store.transaction(durable=False) as cursor:
                    assert setting(cursor) == "off"
                with store.transaction() as cursor:
                    assert setting(cursor) == "on"  # a durable one waits for the flush as ever
                with store.pipelined(durable=False) as cursor:
                    assert setting(cursor) == "off"
        p.rebuild()
        assert p.checksums() == expected
        with store.reading() as cursor:
            assert setting(cursor) == before


def _synchronous(store: Store) -> str:
    with store.reading() as cursor:
        cursor.execute("SHOW synchronous_commit" if store.postgres else "PRAGMA synchronous")
        return str(cursor.fetchone()[0])


@pytest.mark.parametrize("at", ["a write", "its end, before its commit"])
def test_an_interrupted_load_leaves_the_session_committing_as_before(
    ledger: TwinLedger, monkeypatch: pytest.MonkeyPatch, at: str
) -> None:
    """Interrupted inside a batch or at its end, before its COMMIT, the load's session-wide
    asynchronous commit is set back: the live catch-ups this connection makes afterwards wait
    for the WAL flush again (they send no SET LOCAL of their own)."""
    build(ledger)
    with projector(ledger, batch_size=5) as p:
        p.catch_up()
        before = p.checksums()
        setting = _synchronous(p.store)
        calls = {"n": 0}
        if at == "a write":
            original = RunsProjection.apply

            def interrupted(self: RunsProjection, batch: Batch) -> None:
                calls["n"] += 1
                if calls["n"] == 3:
                    raise KeyboardInterrupt
                original(self, batch)

            monkeypatch.setattr(RunsProjection, "apply", interrupted)
        else:
            commit = Store.transaction if not p.store.postgres else Store.pipelined
            name = "transaction" if not p.store.postgres else "pipelined"

            @contextmanager
            def at_commit(self: Store, **options: Any) -> Iterator[Any]:
                with commit(self, **options) as cursor:
                    yield cursor
                    calls["n"] += 1
                    if calls["n"] == 3 and not options.get("durable", True):
                        raise KeyboardInterrupt  # the block's end: its COMMIT not yet done

            monkeypatch.setattr(Store, name, at_commit)
        with pytest.raises(KeyboardInterrupt):
            p.rebuild()
        assert calls["n"] >= 3
        monkeypatch.undo()
        if p.store.postgres:
            assert p.store.pg.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert _synchronous(p.store) == setting
        assert p.checksums() == before
        p.rebuild()
        assert p.checksums() == before
        assert _synchronous(p.store) == setting


def test_a_load_whose_connection_the_server_ends_mid_batch_changes_nothing_live(
    ledger: TwinLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ends the rebuild's connection between a pipelined batch's writes and its
    COMMIT: the rebuild fails with the connection's error (transient: nothing of it is
    retried on a dead session), the live tables and positions are as they were, and once
    reconnected a rebuild gives them again."""
    build(ledger)
    with projector(ledger, batch_size=5) as p:
        if not p.store.postgres:
            return
        p.catch_up()
        before = p.checksums()
        positions = {row.name: row.position for row in p.status()}
        calls = {"n": 0}
        pipelined = Store.pipelined

        @contextmanager
        def killed(self: Store, **options: Any) -> Iterator[Any]:
            with pipelined(self, **options) as cursor:
                yield cursor
                calls["n"] += 1
                if calls["n"] == 3:
                    with psycopg.connect(self.database.psycopg_conninfo()) as other:
                        other.execute(
                            "SELECT pg_terminate_backend(%s)", (self.pg.info.backend_pid,)
                        )

        monkeypatch.setattr(Store, "pipelined", killed)
        with pytest.raises(psycopg.OperationalError) as caught:
            p.rebuild()
        assert "the connection is closed" not in str(caught.value)  # the server's own error
        assert calls["n"] == 3
        monkeypatch.undo()
        assert p.store.pg.closed
        p.store.reconnect()
        assert {row.name: row.position for row in p.status()} == positions
        assert p.checksums() == before
        p.rebuild()
        assert p.checksums() == before
        assert _synchronous(p.store) == "on"


def test_a_refused_write_late_in_a_load_of_prepared_statements_is_parked(
    ledger: TwinLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small batches: by the faulty year psycopg has made its repeated statements prepared
    ones, and a Parse in the aborted part of a pipeline never reaches the server. The careful
    rerun (no pipeline) and every batch after it must find their statements all the same: the
    rebuild parks what a catch-up parks and gives the same tables."""
    s = build(ledger)
    years = [
        n.id
        for n in ledger.recorder.select_notifications(start=1, limit=10_000)
        if str(n.originator_id) == str(s.completed) and n.topic == YEAR_TOPIC
    ]
    faulty = years[-3]
    original = RunsProjection.apply

    def refused(self: RunsProjection, batch: Batch) -> None:
        original(self, batch)
        if any(event.position == faulty for event in batch.events):
            batch.cursor.execute(
                batch.store.sql(
                    "INSERT INTO {t} (id) VALUES (NULL)", t=batch.table("simulation_runs")
                )
            )

    monkeypatch.setattr(RunsProjection, "apply", refused)
    with projector(ledger, batch_size=2) as p:
        p.catch_up()
        expected = p.checksums()
        parked = [(r.projection, r.position, r.error_class) for r in p.parked()]
        assert parked[0][:2] == ("runs", faulty)
        p.rebuild()
        assert p.checksums() == expected
        assert [(r.projection, r.position, r.error_class) for r in p.parked()] == parked
        p.rebuild()  # and again, on the same connection and its prepared statements
        assert p.checksums() == expected
