"""The staged append (TWINLEDGER_PG_APPEND=staged, infrastructure/pg_staged.py) keeps the COPY
recorder's guarantees: ids consecutive, in the batch's order and returned; a conflict refused
whole; the hash chain verified; readers see the events."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest
from conftest import fresh_postgres_url
from eventsourcing.persistence import IntegrityError, StoredEvent

from domain.values import RunStatus
from infrastructure.application import TwinLedger
from infrastructure.integrity import scan_log
from infrastructure.pg_staged import StagedCopyRecorder

pytestmark = pytest.mark.postgres


@pytest.fixture
def ledger(monkeypatch: pytest.MonkeyPatch) -> Iterator[TwinLedger]:
    monkeypatch.setenv("TWINLEDGER_PG_APPEND", "staged")
    with fresh_postgres_url() as url:
        application = TwinLedger.open(url)
        yield application
        application.close()


def probes(streams: int, versions: int, first: int = 1) -> list[StoredEvent]:
    return [
        StoredEvent(stream, v, "tests:Probe", f'{{"v":{v}}}'.encode())
        for stream in [uuid4() for _ in range(streams)]
        for v in range(first, first + versions)
    ]


def test_ids_are_consecutive_in_the_batch_order_and_conflicts_refused_whole(
    ledger: TwinLedger,
) -> None:
    assert isinstance(ledger.recorder, StagedCopyRecorder)
    made = probes(3, 300)
    events = made[300:600] + made[:300] + made[600:]  # the batch's order, not creation order
    ids = ledger.recorder.insert_events(events)
    assert ids is not None and list(ids) == list(range(ids[0], ids[0] + len(events)))
    stored = ledger.recorder.select_notifications(start=ids[0], limit=len(events))
    assert [(n.id, n.originator_id, n.originator_version) for n in stored] == [
        (i, e.originator_id, e.originator_version) for i, e in zip(ids, events, strict=True)
    ]
    head = ledger.recorder.max_notification_id()
    taken = [StoredEvent(events[-1].originator_id, 300, "tests:Probe", b"{}")]
    with pytest.raises(IntegrityError):
        ledger.recorder.insert_events(probes(1, 40) + taken)
    assert ledger.recorder.max_notification_id() == head
    again = ledger.recorder.insert_events(probes(1, 40))  # the connection is usable after
    assert again is not None and again[0] > head


def test_runs_recorded_through_it_verify(ledger: TwinLedger) -> None:
    twin = ledger.clone_twin(name="Mars A", body="mars")
    for seed in (1, 2):
        run_id = ledger.queue_run(
            twin, pattern="mars_terraform", duration_years=120, budget_cents=10**12, seed=seed
        )
        assert ledger.execute_run(run_id, chunk_years=40).status == RunStatus.COMPLETED
    assert len(list(ledger.recorded_years(run_id))) == 120
    scan = scan_log(ledger.recorder)
    assert scan.broken is None and scan.events == ledger.event_count()
