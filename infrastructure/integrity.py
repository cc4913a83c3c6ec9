"""The tamper-evident ledger: hash chains over each stream, a Merkle digest over their heads.

Every stored event has beside it, in a side table written in the same transaction as the event
(infrastructure/pg_recorder.py, infrastructure/sqlite_recorder.py), the SHA-256 of its stored
bytes chained to the previous event of its stream. The side table holds one **chain record**
per stream per appended batch: ``(originator_id, first_version, hashes)``, ``hashes`` the
32-byte hashes of versions first_version, first_version + 1, ... concatenated (one row per
batch, not per event: the database's work per event halves; docs/performance.md, issue 13).
The algorithm (docs/integrity.md, and the standalone checker docs/examples/check_proof.py,
which must agree with this module):

    framing(e) = id(16 bytes, the UUID's bytes) || u64(version) || u32(len(topic)) || topic
                 || u64(len(state)) || state                      (big-endian, topic UTF-8)
    hash_0     = 32 zero bytes
    hash_n     = SHA-256(hash_{n-1} || framing(e_n))

The ledger digest at log position P is the RFC 6962 Merkle tree hash over one leaf per stream
that has an event at or before P, sorted by stream id (the 16 bytes), each leaf the stream's
head at P:

    leaf  = SHA-256(0x00 || id || u64(head version) || head hash)
    node  = SHA-256(0x01 || left || right)
    MTH([]) = SHA-256(""), MTH([l]) = l, MTH(D[0:n]) = node(MTH(D[0:k]), MTH(D[k:n]))
    with k the largest power of two below n.

Nothing here simulates: checking every chain is one pass over the log in (stream, version)
order, holding one stream's running hash and O(log streams) Merkle subtree roots.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.persistence import DataError, StoredEvent

from domain.errors import ValidationError

GENESIS = bytes(32)
GENESIS_ID = UUID(int=0)
ALGORITHM = "twinledger-chain-v1/rfc6962-sha256"
_HEAD = struct.Struct(">16sQI")
_LENGTH = struct.Struct(">Q")
_LEAF = struct.Struct(">c16sQ32s")
FETCH = 5000  # rows per round trip when scanning the log
HASH_SIZE = 32


def chain_table_name(events_table_name: str) -> str:
    """The chain records' table: ``twinledger_events`` -> ``twinledger_event_chain``;
    ``stored_events`` -> ``stored_event_chain``."""
    return events_table_name.removesuffix("s") + "_chain"


def hashes_table_name(events_table_name: str) -> str:
    """The per-event hashes table of stores made before the chain records (one row per event,
    converted once when such a store is opened): ``twinledger_events`` ->
    ``twinledger_event_hashes``; ``stored_events`` -> ``stored_event_hashes``."""
    return events_table_name.removesuffix("s") + "_hashes"


def framing(originator_id: bytes, version: int, topic: str, state: bytes) -> bytes:
    encoded = topic.encode()
    return b"".join(
        (_HEAD.pack(originator_id, version, len(encoded)), encoded, _LENGTH.pack(len(state)), state)
    )


def link(previous: bytes, originator_id: bytes, version: int, topic: str, state: bytes) -> bytes:
    """hash_n from hash_{n-1} and event n."""
    return hashlib.sha256(previous + framing(originator_id, version, topic, state)).digest()


def leaf_hash(originator_id: bytes, version: int, head: bytes) -> bytes:
    return hashlib.sha256(_LEAF.pack(b"\x00", originator_id, version, head)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class MerkleRoot:
    """RFC 6962 Merkle tree hash of leaves added in order, in O(log n) memory.

    The tree of n leaves is the perfect subtrees of n's binary digits, largest first, joined
    from the right; ``pending`` holds those subtrees' roots and sizes, like a binary counter."""

    def __init__(self) -> None:
        self.pending: list[tuple[int, bytes]] = []
        self.size = 0

    def add(self, leaf: bytes) -> None:
        size, top = 1, leaf
        while self.pending and self.pending[-1][0] == size:
            left = self.pending.pop()[1]
            size, top = size * 2, node_hash(left, top)
        self.pending.append((size, top))
        self.size += 1

    def root(self) -> bytes:
        if not self.pending:
            return hashlib.sha256(b"").digest()
        top = self.pending[-1][1]
        for _, left in reversed(self.pending[:-1]):
            top = node_hash(left, top)
        return top


def audit_path(leaves: Sequence[bytes], index: int) -> list[tuple[str, bytes]]:
    """RFC 6962 PATH(index, leaves) as (side of the sibling, sibling hash), leaf upward."""
    if len(leaves) <= 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if index < k:
        return [*audit_path(leaves[:k], index), ("right", _root_of(leaves[k:]))]
    return [*audit_path(leaves[k:], index - k), ("left", _root_of(leaves[:k]))]


def _root_of(leaves: Iterable[bytes]) -> bytes:
    tree = MerkleRoot()
    for leaf in leaves:
        tree.add(leaf)
    return tree.root()


# --- writing: the recorders call these inside their append transaction ---------------------


def previous_links(stored_events: Sequence[StoredEvent]) -> list[tuple[UUID, int]]:
    """(stream, version) of each stored hash the batch chains onto: the event before each
    stream's first event in the batch, unless that is version 1."""
    first: dict[UUID, int] = {}
    current: object = None
    for event in stored_events:
        if event.originator_id is not current:  # a batch is runs of one stream's events
            current = event.originator_id
            first.setdefault(_uuid(event.originator_id), event.originator_version)
    return [(ident, version - 1) for ident, version in first.items() if version > 1]


class RecentLinks:
    """Hashes this process wrote lately, by (stream, version): a stored hash never changes, so a
    remembered one is as good as reading it, and the next save of a stream it wrote (the next
    chunk of a run) needs no extra round trip. Bounded: forgotten wholesale when full."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self.known: dict[tuple[UUID, int], bytes] = {}

    def split(
        self, wanted: list[tuple[UUID, int]]
    ) -> tuple[dict[tuple[UUID, int], bytes], list[tuple[UUID, int]]]:
        """(the wanted hashes remembered, the wanted ones to read from the store)."""
        found = {key: self.known[key] for key in wanted if key in self.known}
        return found, [key for key in wanted if key not in found]

    def remember(self, rows: list[tuple[UUID, int, bytes]]) -> None:
        """Keep each stream's last hash of a written batch (call after it is stored)."""
        if len(self.known) >= self.size:
            self.known.clear()
        last: dict[UUID, tuple[int, bytes]] = {}
        current: object = None
        for ident, version, digest in reversed(rows):
            if ident is not current:
                current = ident
                last.setdefault(ident, (version, digest))
        for ident, (version, digest) in last.items():
            self.known[(ident, version)] = digest


def chain_batch(
    stored_events: Sequence[StoredEvent], previous: dict[tuple[UUID, int], bytes]
) -> list[tuple[UUID, int, bytes]]:
    """The hash of each event of a batch, chained onto the stored ``previous`` hashes.

    Raises BrokenChain (the write is refused, nothing is written) if a stream's previous
    event has no stored hash: the chain is already broken there (docs/integrity.md).

    The same bytes as ``link`` hashes, framed in one join per event; a stream's id bytes and
    head are looked up once per run of its events (a batch is one run's chunk, mostly), each
    topic's encoding once per batch: the append hashes every event it writes
    (docs/performance.md, issue 13)."""
    heads: dict[UUID, tuple[int, bytes]] = {
        ident: (version, digest) for (ident, version), digest in previous.items()
    }
    pack_head, pack_length, sha256 = _HEAD.pack, _LENGTH.pack, hashlib.sha256
    topics: dict[str, bytes] = {}
    rows: list[tuple[UUID, int, bytes]] = []
    current: object = None  # the originator_id object of the run of events being chained
    ident, raw, head_version, prior = GENESIS_ID, b"", 0, GENESIS
    for event in stored_events:
        if event.originator_id is not current:  # a batch is runs of one stream's events
            if current is not None:
                heads[ident] = (head_version, prior)
            current = event.originator_id
            ident = _uuid(event.originator_id)
            raw = ident.bytes
            head_version, prior = heads.get(ident, (0, GENESIS))
        version = event.originator_version
        if version == 1:
            prior = GENESIS
        elif head_version != version - 1:  # 0: no stored hash for the stream
            raise BrokenChain(
                f"stream {ident} version {version - 1} has no stored hash: its chain is "
                "broken (twinledger verify names where); nothing was written"
            )
        topic = topics.get(event.topic)
        if topic is None:
            topic = topics[event.topic] = event.topic.encode()
        state = bytes(event.state)
        prior = sha256(
            b"".join(
                (prior, pack_head(raw, version, len(topic)), topic, pack_length(len(state)), state)
            )
        ).digest()
        head_version = version
        rows.append((ident, version, prior))
    return rows


def chain_records(rows: Sequence[tuple[UUID, int, bytes]]) -> list[tuple[UUID, int, bytes]]:
    """One chain record (stream, first version, the hashes concatenated) per run of a stream's
    consecutive versions in ``rows`` (a batch's hashes, from ``chain_batch``): one record per
    stream a batch writes, as a batch is runs of one stream's events."""
    records: list[tuple[UUID, int, bytes]] = []
    ident: UUID | None = None
    first = following = 0
    hashes: list[bytes] = []
    for stream, version, digest in rows:
        # identity first: chain_batch gives a run of a stream's events one UUID object
        if (stream is not ident and stream != ident) or version != following:
            if hashes:
                records.append((ident, first, b"".join(hashes)))  # type: ignore[arg-type]
            ident, first, hashes = stream, version, []
        hashes.append(digest)
        following = version + 1
    if hashes:
        records.append((ident, first, b"".join(hashes)))  # type: ignore[arg-type]
    return records


def split_records(
    rows: Sequence[tuple[UUID, int, bytes]], most: int
) -> list[tuple[UUID, int, bytes]]:
    """``chain_records`` of at most ``most`` hashes each, for converting a per-event hashes
    table verbatim: a stored "hash" that is not 32 bytes (a damaged row) gets a record of its
    own, so it cannot shift its neighbours' hashes (``verify`` names its version)."""
    records: list[tuple[UUID, int, bytes]] = []
    run: list[tuple[UUID, int, bytes]] = []

    def flush() -> None:
        for ident, first, hashes in chain_records(run):
            step = most * HASH_SIZE
            for start in range(0, len(hashes), step):
                records.append((ident, first + start // HASH_SIZE, hashes[start : start + step]))
        run.clear()

    for ident, version, digest in rows:
        if len(digest) != HASH_SIZE:
            flush()
            records.append((ident, version, digest))
        else:
            run.append((ident, version, digest))
    flush()
    return records


def hash_in_record(first_version: int, hashes: bytes, version: int) -> bytes | None:
    """The stored hash of ``version`` in a chain record starting at ``first_version``, or None
    if the record does not reach it."""
    start = (version - first_version) * HASH_SIZE
    if start < 0 or start + HASH_SIZE > len(hashes):
        return None
    return bytes(hashes[start : start + HASH_SIZE])


class BrokenChain(DataError):
    """A write onto a stream whose chain is already broken (not a concurrent write)."""


def _uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(value)


# --- checking: one pass over the log ---------------------------------------------------------


@dataclass(frozen=True)
class Break:
    """Where the log stops matching its chain: the first broken stream and version."""

    stream: UUID
    version: int
    problem: str

    def __str__(self) -> str:
        return f"stream {self.stream} version {self.version}: {self.problem}"


@dataclass
class Scan:
    """The outcome of checking every chain: the digest at ``position``, or the first break."""

    position: int
    digest: str = ""
    streams: int = 0
    events: int = 0
    records: int = 0  # chain records used by the pass
    broken: Break | None = None
    leaves: list[bytes] = field(default_factory=list)  # kept only when asked (proofs)
    ids: list[bytes] = field(default_factory=list)
    heads: list[tuple[int, bytes]] = field(default_factory=list)

    def head_of(self, stream: UUID) -> tuple[int, int, bytes] | None:
        """(leaf index, head version, head hash) of a stream at the position (kept scans)."""
        try:
            index = self.ids.index(stream.bytes)
        except ValueError:
            return None
        return (index, *self.heads[index])


Row = tuple[bytes, int, str | None, bytes | None, int | None, bytes | None]
"""(stream id bytes, version, topic, state, position, the hashes of the chain record that
starts at this version, or None if none does)."""

_ORPHAN = "deleted: its hash is stored but the event is not"
_NO_HASH = "no stored hash: the event was written outside the ledger, or its hash was deleted"


def check_rows(rows: Iterable[Row], position: int, *, keep: bool = False) -> Scan:
    """Check rows ordered by (stream, version) and build the digest at ``position``.

    Each event's stored hash is the next one of its stream's current chain record: the record
    that starts at this event replaces the current one, which must be used up by then (else two
    records hold the event's hash), and a stream must use up its last record (else a hash is
    stored for an event that is not: a deleted last event). A chain record that starts at no
    event is not in the rows: the scans count the records (``Scan.records``) and look for such
    a record separately (``with_orphan``)."""
    scan = Scan(position=position)
    tree = MerkleRoot()
    stream: bytes | None = None
    expected = 1
    prior = GENESIS
    last_position = 0
    head: tuple[int, bytes] | None = None
    record = b""  # the stream's current chain record's hashes
    used = 0  # bytes of it matched to events so far

    def close() -> None:
        if stream is not None and head is not None:
            leaf = leaf_hash(stream, head[0], head[1])
            tree.add(leaf)
            scan.streams += 1
            if keep:
                scan.leaves.append(leaf)
                scan.ids.append(stream)
                scan.heads.append(head)

    def broken(ident: bytes, version: int, problem: str) -> Scan:
        scan.broken = Break(UUID(bytes=ident), version, problem)
        return scan

    for ident, version, topic, state, where, starts in rows:
        if ident != stream:
            if stream is not None and used < len(record):
                return broken(stream, expected, _ORPHAN)
            close()
            stream, expected, prior, last_position, head = ident, 1, GENESIS, 0, None
            record, used = b"", 0
        if version != expected:
            return broken(
                ident,
                expected,
                f"missing: the stream skips from here to version {version}"
                if version > expected
                else "stored twice or out of order",
            )
        if topic is None or state is None or where is None:
            return broken(ident, version, "its stored topic or state is missing (NULL)")
        if starts is not None:
            scan.records += 1
            if used < len(record):
                return broken(
                    ident, version, "its hash is stored twice (overlapping chain records)"
                )
            if not starts or len(starts) % HASH_SIZE:
                return broken(
                    ident, version, "its chain record is malformed (not whole 32-byte hashes)"
                )
            record, used = bytes(starts), 0
        if used >= len(record):
            return broken(ident, version, _NO_HASH)
        stored = record[used : used + HASH_SIZE]
        used += HASH_SIZE
        digest = link(prior, ident, version, topic, state)
        if digest != stored:
            return broken(
                ident,
                version,
                "its stored bytes do not match its hash (changed, replaced or reordered)",
            )
        if where <= last_position:
            return broken(ident, version, "stored before the event it follows (reordered)")
        if where <= position:
            head = (version, digest)
        prior, last_position, expected = digest, where, expected + 1
        scan.events += 1
    if stream is not None and used < len(record):
        return broken(stream, expected, _ORPHAN)
    close()
    scan.digest = tree.root().hex()
    return scan


def scan_log(recorder: Any, position: int | None = None, *, keep: bool = False) -> Scan:
    """Check every chain of the ledger's log in one pass; the digest at ``position`` (default:
    the last position when the scan starts)."""
    from eventsourcing.postgres import PostgresApplicationRecorder
    from eventsourcing.sqlite import SQLiteApplicationRecorder

    if isinstance(recorder, PostgresApplicationRecorder):
        return _scan_postgres(recorder, position, keep)
    if isinstance(recorder, SQLiteApplicationRecorder):
        return _scan_sqlite(recorder, position, keep)
    raise TypeError(f"no integrity scan for {type(recorder).__name__}")


def _scan_postgres(recorder: Any, position: int | None, keep: bool) -> Scan:
    from psycopg.sql import SQL, Identifier

    schema = recorder.datastore.schema
    events = Identifier(schema, recorder.events_table_name)
    chain = Identifier(schema, chain_table_name(recorder.events_table_name))
    with recorder.datastore.get_connection() as connection, connection.transaction():
        connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        row = connection.execute(
            SQL("SELECT coalesce(max(notification_id), 0) AS p FROM {}").format(events)
        ).fetchone()
        position = _position(position, int(row["p"]))
        # COPY streams the rows with no round trip per batch (a loaded server answers each
        # FETCH late); memory stays bounded: rows are checked as they arrive.
        with (
            connection.cursor() as cursor,
            cursor.copy(
                SQL(
                    "COPY (SELECT uuid_send(e.originator_id), e.originator_version, e.topic,"
                    " e.state, e.notification_id, c.hashes FROM {e} e LEFT JOIN {c} c"
                    " ON c.originator_id = e.originator_id"
                    " AND c.first_version = e.originator_version"
                    " ORDER BY e.originator_id, e.originator_version) TO STDOUT (FORMAT BINARY)"
                ).format(e=events, c=chain)
            ) as copy,
        ):
            copy.set_types(["bytea", "int8", "text", "bytea", "int8", "bytea"])
            scan = check_rows(copy.rows(), position, keep=keep)
            while copy.read():  # after a break: the rest, unparsed, to free the connection
                pass
        if scan.broken is None:
            row = connection.execute(SQL("SELECT count(*) AS n FROM {}").format(chain)).fetchone()
            if int(row["n"]) == scan.records:
                return scan  # every chain record starts at a checked event and was used up
        row = connection.execute(
            SQL(
                "SELECT uuid_send(c.originator_id) AS i, c.first_version AS v FROM {c} c"
                " WHERE NOT EXISTS (SELECT 1 FROM {e} e WHERE e.originator_id ="
                " c.originator_id AND e.originator_version = c.first_version)"
                " ORDER BY c.originator_id, c.first_version LIMIT 1"
            ).format(c=chain, e=events)
        ).fetchone()
        return with_orphan(scan, None if row is None else (bytes(row["i"]), row["v"]))


def _position(asked: int | None, last: int) -> int:
    """The position to take the digest at: the last one unless asked; never beyond it (a
    digest there would claim a position the log has not reached)."""
    if asked is None:
        return last
    if asked > last:
        raise ValidationError("position", f"{asked} is beyond the log's last position {last}")
    return asked


def with_orphan(scan: Scan, orphan: tuple[bytes, int] | None) -> Scan:
    """The first break, counting a chain record that starts at no stored event (its first
    event deleted, or the record inserted; found only when the pass broke, or when there are
    more records than the pass used)."""
    if orphan is None:
        return scan
    broken = scan.broken
    if broken is None or orphan < (broken.stream.bytes, broken.version):
        scan.broken = Break(UUID(bytes=orphan[0]), orphan[1], _ORPHAN)
        scan.digest = ""
    return scan


def _scan_sqlite(recorder: Any, position: int | None, keep: bool) -> Scan:
    events = recorder.events_table_name
    chain = chain_table_name(events)
    with recorder.datastore.transaction(commit=False) as cursor:
        connection: sqlite3.Connection = cursor.sqlite_cursor.connection
        last = connection.execute(f"SELECT coalesce(max(rowid), 0) FROM {events}").fetchone()[0]
        position = _position(position, int(last))
        reader = connection.execute(
            f"SELECT e.originator_id, e.originator_version, e.topic, e.state, e.rowid,"
            f" c.hashes FROM {events} e LEFT JOIN {chain} c"
            " ON c.originator_id = e.originator_id AND c.first_version = e.originator_version"
            " ORDER BY e.originator_id, e.originator_version"
        )
        rows = ((bytes.fromhex(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in reader)
        scan = check_rows(rows, position, keep=keep)
        reader.close()
        if scan.broken is None:
            count = connection.execute(f"SELECT count(*) FROM {chain}").fetchone()[0]
            if count == scan.records:
                return scan
        row = connection.execute(
            f"SELECT c.originator_id, c.first_version FROM {chain} c"
            f" WHERE NOT EXISTS (SELECT 1 FROM {events} e WHERE e.originator_id ="
            " c.originator_id AND e.originator_version = c.first_version)"
            " ORDER BY c.originator_id, c.first_version LIMIT 1"
        ).fetchone()
        return with_orphan(scan, None if row is None else (bytes.fromhex(row[0]), row[1]))


# --- proofs ----------------------------------------------------------------------------------


def prove(
    recorder: Any, stream_id: UUID, digest: str, position: int | None = None
) -> dict[str, Any]:
    """A proof that ``stream_id``'s events up to ``position`` are in the ledger whose digest
    there is ``digest``: its events, their chain, and the Merkle audit path of its head.

    Raises ProofRefused if the log is broken, does not match ``digest`` or lacks the stream."""
    scan = scan_log(recorder, position, keep=True)
    if scan.broken is not None:
        raise ProofRefused(f"the log is broken at {scan.broken}")
    if scan.digest != digest.strip().lower():
        raise ProofRefused(
            f"the log at position {scan.position} has digest {scan.digest}, not {digest}"
        )
    head = scan.head_of(stream_id)
    if head is None:
        raise ProofRefused(f"stream {stream_id} has no event at position {scan.position}")
    index, version, _ = head
    stored = recorder.select_events(stream_id, lte=version)
    events, prior = [], GENESIS
    for event in stored:
        prior = link(
            prior, stream_id.bytes, event.originator_version, event.topic, bytes(event.state)
        )
        events.append(
            {
                "originator_version": event.originator_version,
                "topic": event.topic,
                **state_fields(bytes(event.state)),
                "hash": prior.hex(),
            }
        )
    return {
        "format": "twinledger-proof",
        "version": 1,
        "algorithm": ALGORITHM,
        "digest": scan.digest,
        "position": scan.position,
        "tree_size": scan.streams,
        "stream": str(stream_id),
        "leaf_index": index,
        "events": events,
        "path": [
            {"side": side, "hash": sibling.hex()}
            for side, sibling in audit_path(scan.leaves, index)
        ],
    }


def check_proof(proof: dict[str, Any], digest: str) -> str | None:
    """None if ``proof`` holds against ``digest``, else why not (the same algorithm as
    docs/examples/check_proof.py, which uses hashlib and json only)."""
    ident = UUID(proof["stream"]).bytes
    prior, version = GENESIS, 0
    for event in proof["events"]:
        version += 1
        if event["originator_version"] != version:
            return f"event versions skip at {version}"
        prior = link(prior, ident, version, event["topic"], event["state"].encode())
        if prior.hex() != event["hash"]:
            return f"version {version} does not match its hash"
    top = leaf_hash(ident, version, prior)
    for step in proof["path"]:
        sibling = bytes.fromhex(step["hash"])
        top = node_hash(sibling, top) if step["side"] == "left" else node_hash(top, sibling)
    if top.hex() != digest.strip().lower():
        return "the stream's head does not lead to the digest"
    return None


class ProofRefused(Exception):
    """A proof cannot be made: the log is broken or does not match the digest."""


# --- creating the table and computing the chain of a store made before it --------------------


class Chainer:
    """Hashes events handed in (stream, version) order: the one-time backfill of a store made
    before any chain (no chain records, no per-event hashes)."""

    def __init__(self) -> None:
        self.stream: bytes | None = None
        self.prior = GENESIS

    def __call__(self, ident: bytes, version: int, topic: str, state: bytes) -> bytes:
        if ident != self.stream:
            self.stream, self.prior = ident, GENESIS
        self.prior = link(self.prior, ident, version, topic, state)
        return self.prior


def state_fields(state: bytes) -> dict[str, str]:
    """A stored state in JSON: text when it is UTF-8 JSON, else (a compact binary state,
    infrastructure/codec.py) ``state_base64``. Archives and proofs carry states this way."""
    try:
        return {"state": state.decode()}
    except UnicodeDecodeError:
        return {"state_base64": base64.b64encode(state).decode()}
