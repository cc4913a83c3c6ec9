"""The COPY append path on PostgreSQL keeps the library's guarantees: ids in order and
returned, conflicts refused whole, notifications visible to readers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest
from conftest import fresh_postgres_url
from eventsourcing.persistence import IntegrityError, StoredEvent
from psycopg import sql
from round_trips import round_trips

from infrastructure.application import TwinLedger
from infrastructure.integrity import chain_batch, previous_links
from infrastructure.pg_recorder import COPY_FROM, CopyApplicationRecorder

pytestmark = pytest.mark.postgres


@pytest.fixture
def ledger() -> Iterator[TwinLedger]:
    with fresh_postgres_url() as url:
        application = TwinLedger.open(url)
        yield application
        application.close()


def batch(originator_count: int, per_originator: int) -> list[StoredEvent]:
    events = []
    for _ in range(originator_count):
        originator = uuid4()
        for version in range(1, per_originator + 1):
            events.append(
                StoredEvent(originator, version, "tests:Probe", f'{{"v":{version}}}'.encode())
            )
    return events


def test_the_ledger_uses_the_copy_recorder(ledger: TwinLedger) -> None:
    assert isinstance(ledger.recorder, CopyApplicationRecorder)


def test_copy_returns_the_notification_ids_it_stored_in_order(ledger: TwinLedger) -> None:
    small = batch(1, COPY_FROM - 1)  # library path
    first_ids = ledger.recorder.insert_events(small)
    large = batch(3, 400)  # COPY path
    ids = ledger.recorder.insert_events(large)
    assert ids is not None and first_ids is not None
    assert list(ids) == list(range(first_ids[-1] + 1, first_ids[-1] + 1 + len(large)))
    stored = ledger.recorder.select_notifications(start=ids[0], limit=len(large))
    assert [n.id for n in stored] == list(ids)
    assert [(n.originator_id, n.originator_version, n.state) for n in stored] == [
        (e.originator_id, e.originator_version, e.state) for e in large
    ]


def test_a_conflicting_batch_is_refused_whole(ledger: TwinLedger) -> None:
    events = batch(2, 100)
    ledger.recorder.insert_events(events[:100])
    head = ledger.recorder.max_notification_id()
    with pytest.raises(IntegrityError):
        ledger.recorder.insert_events(events[100:] + events[:1])  # version 1 of the first again
    assert ledger.recorder.max_notification_id() == head
    assert ledger.recorder.select_events(events[100].originator_id) == []


def test_an_append_chaining_onto_remembered_hashes_is_two_round_trips(ledger: TwinLedger) -> None:
    events = batch(1, 300)
    recorder: Any = ledger.recorder
    recorder.insert_events(events[:100])  # its hashes are remembered
    assert round_trips(lambda: recorder.insert_events(events[100:]))[0] == 2
    stored = ledger.recorder.select_events(events[0].originator_id)
    assert [(e.originator_version, e.state) for e in stored] == [
        (e.originator_version, e.state) for e in events
    ]
    previous, _ = recorder.recent.split(previous_links(events[:1]))
    hashes = chain_batch(events, previous)
    with recorder.datastore.get_connection() as connection:
        records = connection.execute(
            sql.SQL("SELECT originator_id, first_version, hashes FROM {} ORDER BY 2").format(
                sql.Identifier(recorder.datastore.schema, recorder.chain_table_name)
            )
        ).fetchall()
    # one record a batch, its hashes byte for byte those chained in the client
    assert [(r["first_version"], bytes(r["hashes"])) for r in records] == [
        (1, b"".join(h for _, _, h in hashes[:100])),
        (101, b"".join(h for _, _, h in hashes[100:])),
    ]


def test_a_refused_chain_record_refuses_the_events_too(ledger: TwinLedger) -> None:
    """The chain record is inserted in the append's string after the COPY: its refusal (a
    record already there) rolls the COPY back; the pooled connection works afterwards."""
    recorder: Any = ledger.recorder
    events = batch(1, 100)
    with recorder.datastore.get_connection() as connection:
        connection.execute(
            sql.SQL("INSERT INTO {} VALUES (%s, 1, %s)").format(
                sql.Identifier(recorder.datastore.schema, recorder.chain_table_name)
            ),
            (events[0].originator_id, bytes(32)),
        )
    head = recorder.max_notification_id()
    with pytest.raises(IntegrityError):
        recorder.insert_events(events)
    assert recorder.max_notification_id() == head
    assert recorder.select_events(events[0].originator_id) == []
    ids = recorder.insert_events(batch(2, 50))
    assert ids is not None and len(ids) == 100


def test_an_append_onto_a_hash_not_remembered_reads_it_under_the_lock() -> None:
    """Another process (here: another ledger on the same schema) continues a stream: the
    previous hash is read in the append's transaction, statement by statement."""
    events = batch(1, 200)
    with fresh_postgres_url() as url:
        first, second = TwinLedger.open(url), TwinLedger.open(url)
        try:
            first.recorder.insert_events(events[:100])
            recorder: Any = second.recorder
            assert round_trips(lambda: recorder.insert_events(events[100:]))[0] == 7
            with recorder.datastore.get_connection() as connection:
                stored = connection.execute(
                    sql.SQL("SELECT hashes FROM {} ORDER BY first_version").format(
                        sql.Identifier(recorder.datastore.schema, recorder.chain_table_name)
                    )
                ).fetchall()
            assert b"".join(bytes(r["hashes"]) for r in stored) == b"".join(
                h for _, _, h in chain_batch(events, {})
            )
        finally:
            first.close()
            second.close()
