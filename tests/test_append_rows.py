"""The append's per-batch shortcuts write exactly what the plain definitions say: the chained
hashes (infrastructure/integrity.py) and the binary COPY rows (infrastructure/pg_recorder.py),
for batches that interleave streams, mix UUID and text ids, and start mid-stream."""

from __future__ import annotations

import struct
from dataclasses import FrozenInstanceError
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import Notification, Recording, StoredEvent

from infrastructure.event_store import recording
from infrastructure.integrity import (
    GENESIS,
    BrokenChain,
    RecentLinks,
    chain_batch,
    chain_records,
    hash_in_record,
    link,
    previous_links,
    split_records,
)
from infrastructure.pg_recorder import SIGNATURE, TRAILER, event_rows, record_rows


def interleaved() -> tuple[list[StoredEvent], dict[tuple[UUID, int], bytes]]:
    """Stream a from version 4 (3 stored before), stream b from 1, then a again, then b as
    text, then c: runs of one stream, a stream coming back, a new UUID object for the same id."""
    a, b, c = uuid4(), uuid4(), uuid4()
    batch = [
        StoredEvent(a, 4, "domain.run:YearResultRecorded", b"\x93\x02\xcb"),
        StoredEvent(a, 5, "domain.run:YearResultRecorded", b"five"),
        StoredEvent(b, 1, "domain.twin:TwinCloned", b"{}"),
        StoredEvent(UUID(str(a)), 6, "domain.run:RunCompleted", b"six" * 100),
        StoredEvent(str(b), 2, "domain.twin:TwinRunEnded", b""),
        StoredEvent(c, 1, "domain.run:RunQueued", bytes(range(256))),
    ]
    return batch, {(a, 3): bytes(range(32))}


def test_chain_batch_is_link_applied_event_by_event() -> None:
    batch, previous = interleaved()
    expected, heads = [], {ident: digest for (ident, _), digest in previous.items()}
    for event in batch:
        ident = UUID(str(event.originator_id))
        prior = GENESIS if event.originator_version == 1 else heads[ident]
        heads[ident] = link(prior, ident.bytes, event.originator_version, event.topic, event.state)
        expected.append((ident, event.originator_version, heads[ident]))
    assert chain_batch(batch, previous) == expected
    assert previous_links(batch) == [(batch[0].originator_id, 3)]


def test_a_gap_in_a_batch_or_a_missing_stored_hash_is_refused() -> None:
    batch, previous = interleaved()
    with pytest.raises(BrokenChain, match="version 3 has no stored hash"):
        chain_batch(batch, {})
    gap = [*batch[:2], StoredEvent(batch[0].originator_id, 7, "t:T", b"")]
    with pytest.raises(BrokenChain, match="version 6 has no stored hash"):
        chain_batch(gap, previous)


def test_recent_links_keep_each_streams_last_hash() -> None:
    batch, previous = interleaved()
    rows = chain_batch(batch, previous)
    recent = RecentLinks()
    recent.remember(rows)
    a, b, c = rows[0][0], rows[2][0], rows[5][0]
    assert recent.known == {(a, 6): rows[3][2], (b, 2): rows[4][2], (c, 1): rows[5][2]}


def test_event_rows_are_the_binary_copy_format() -> None:
    batch, _ = interleaved()
    data = event_rows(batch)
    assert data.startswith(SIGNATURE) and data.endswith(TRAILER)
    at, parsed = len(SIGNATURE), []
    while data[at:] != TRAILER:
        (fields,) = struct.unpack_from(">h", data, at)
        at += 2
        row = []
        for _ in range(fields):
            (size,) = struct.unpack_from(">i", data, at)
            row.append(data[at + 4 : at + 4 + size])
            at += 4 + size
        parsed.append(row)
    assert parsed == [
        [
            UUID(str(e.originator_id)).bytes,
            struct.pack(">q", e.originator_version),
            e.topic.encode(),
            e.state,
        ]
        for e in batch
    ]


def test_a_batch_is_one_chain_record_per_run_of_a_streams_versions() -> None:
    """The interleaved batch (a 4-5, b 1, a 6, b 2, c 1) is five records, each the hashes of its
    versions in order; every hash is found again in its record."""
    batch, previous = interleaved()
    rows = chain_batch(batch, previous)
    records = chain_records(rows)
    a, b, c = rows[0][0], rows[2][0], rows[5][0]
    assert [(i, v, len(h) // 32) for i, v, h in records] == [
        (a, 4, 2),
        (b, 1, 1),
        (a, 6, 1),
        (b, 2, 1),
        (c, 1, 1),
    ]
    assert b"".join(h for _, _, h in records) == b"".join(h for _, _, h in rows)
    held = {
        (i, first + k): hash_in_record(first, h, first + k)
        for i, first, h in records
        for k in range(len(h) // 32)
    }
    assert held == {(i, v): h for i, v, h in rows}
    assert (
        hash_in_record(4, records[0][2], 3) is None and hash_in_record(4, records[0][2], 6) is None
    )


def test_a_converted_table_splits_records_and_isolates_a_damaged_hash() -> None:
    """Converting per-event rows: a gap starts a new record, records hold at most ``most``
    hashes, and a "hash" that is not 32 bytes is a record of its own."""
    a = uuid4()
    rows = [(a, v, bytes([v]) * 32) for v in (1, 2, 3, 4, 5, 7)]
    rows.insert(3, (a, 3, b"short"))
    rows.pop(2)  # version 3 is now the 5-byte "hash"
    records = split_records(rows, 2)
    assert [(v, len(h)) for _, v, h in records] == [(1, 64), (3, 5), (4, 64), (7, 32)]


def test_record_rows_are_the_binary_copy_format() -> None:
    batch, previous = interleaved()
    records = chain_records(chain_batch(batch, previous))
    body = b"".join(
        struct.pack(">hi16siqi", 3, 16, i.bytes, 8, v, len(h)) + h for i, v, h in records
    )
    assert record_rows(records) == SIGNATURE + body + TRAILER


def test_the_event_stores_recordings_equal_the_librarys() -> None:
    ident, event = uuid4(), object()
    stored = StoredEvent(ident, 3, "domain.run:YearResultRecorded", b"state")
    got = recording(event, stored, 42)  # type: ignore[arg-type]
    expected = Notification(ident, 3, stored.topic, b"state", 42)
    assert got == Recording(event, expected)  # type: ignore[arg-type]
    assert hash(got) == hash(Recording(event, expected))  # type: ignore[arg-type]
    assert type(got.notification) is Notification and got.notification.id == 42
    with pytest.raises(FrozenInstanceError):
        got.notification.id = 7  # type: ignore[misc]
