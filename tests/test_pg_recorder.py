"""The COPY append path on PostgreSQL keeps the library's guarantees: ids in order and
returned, conflicts refused whole, notifications visible to readers."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest
from conftest import fresh_postgres_url
from eventsourcing.persistence import IntegrityError, StoredEvent

from infrastructure.application import TwinLedger
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
