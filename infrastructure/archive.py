"""Archive files: the complete event streams of a run, or of a twin and its runs, in one file.

Format (JSON lines, UTF-8):
- line 1, the header: {"format": "twinledger-archive", "version": 2, "kind": "run"|"twin",
  "root_id": ..., "created_at": ..., "streams": N, "events": M, "position": P,
  "digest": D, "algorithm": ..., "paths": {stream id: [{"side", "hash"}, ...]}}: the ledger
  digest at the position the archive was made at, and each stream's Merkle audit path to it
  (docs/integrity.md)
- one line per stored event, streams in order and each stream by version:
  {"originator_id": ..., "originator_version": ..., "topic": ..., "state": "<the stored JSON>",
  "hash": ...}
  ``state`` is the stored event's bytes as text, so an import writes back exactly what was
  stored; a compact (binary, msgpack) state is ``"state_base64": "..."`` instead (an optional
  field: files without it read as before); ``hash`` is the event's chained hash.
- the last line, the trailer: {"end": true, "events": M, "sha256": ...}, SHA-256 over the event
  lines (each with its newline), so a truncated or altered file is refused.

Import checks the archive, it does not trust it: every event's hash is recomputed along its
stream's chain, and each stream's head must lead, by its audit path, to the archive's digest
(and, given ``--digest``, that must be the digest kept elsewhere). A tampered archive is refused
naming the stream and version; nothing is imported. Version 1 archives (no chain) are refused.

A run archive holds the run's stream and its twin's stream (so the run has its twin wherever it
is imported); a twin archive holds the twin's stream and every run queued on it.

Import merges: a stream absent from the target store is added whole; a stream the target already
holds a prefix of gets its missing tail; a stream the target holds entirely is left alone; a
stream that differs at some version is refused. Everything is written in one transaction, so an
import is all or nothing and importing the same file twice writes nothing the second time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from uuid import UUID

import msgspec
from eventsourcing.persistence import MapperDeserialisationError, StoredEvent
from eventsourcing.utils import get_topic

from domain.errors import TwinLedgerError, ValidationError
from domain.run import RunQueued
from infrastructure.application import TwinLedger
from infrastructure.codec import is_compact
from infrastructure.inputs import check_safe, read_input_file
from infrastructure.integrity import (
    ALGORITHM,
    GENESIS,
    audit_path,
    leaf_hash,
    link,
    node_hash,
    scan_log,
)

FORMAT = "twinledger-archive"
MAX_ARCHIVE_BYTES = 2**30  # read whole into memory and checked before anything is written
VERSION = 2
PAGE = 1000


class Header(msgspec.Struct, kw_only=True):
    format: str
    version: int
    kind: str
    root_id: UUID
    created_at: str
    streams: int
    events: int
    position: int = 0
    digest: str = ""
    algorithm: str = ""
    paths: dict[UUID, list[PathStep]] = msgspec.field(default_factory=dict)


class PathStep(msgspec.Struct):
    side: str
    hash: str


class Line(msgspec.Struct, kw_only=True, omit_defaults=True):
    originator_id: UUID
    originator_version: int
    topic: str
    state: str = ""
    state_base64: str | None = None  # a compact (binary) state (infrastructure/codec.py)
    hash: str = ""


class Trailer(msgspec.Struct, kw_only=True):
    end: bool
    events: int
    sha256: str


@dataclass(frozen=True)
class ImportReport:
    streams: int
    events_in_file: int
    events_written: int
    streams_already_present: int


def _stream(ledger: TwinLedger, originator_id: UUID) -> Sequence[StoredEvent]:
    return ledger.recorder.select_events(originator_id)


def _runs_of_twin(ledger: TwinLedger, twin_id: UUID) -> list[UUID]:
    """Ids of every run queued on a twin, found by scanning RunQueued notifications."""
    runs: list[UUID] = []
    position = 0
    topic = get_topic(RunQueued)
    decoder = msgspec.json.Decoder(_TwinOfRun)
    while True:
        page = ledger.recorder.select_notifications(
            start=position, limit=PAGE, topics=[topic], inclusive_of_start=False
        )
        if not page:
            return runs
        for notification in page:
            if decoder.decode(notification.state).twin_id == twin_id:
                runs.append(UUID(str(notification.originator_id)))
        position = page[-1].id


class _TwinOfRun(msgspec.Struct):
    twin_id: UUID


def export(
    ledger: TwinLedger, out: IO[bytes], *, run_id: str | None = None, twin_id: str | None = None
) -> int:
    """Write the archive of a run or of a twin to ``out``; returns the number of events."""
    if (run_id is None) == (twin_id is None):
        raise ValidationError("run_id", "give a run id or --twin, not both")
    if run_id is not None:
        run = ledger.get_run(run_id)
        kind, root, stream_ids = "run", run.id, [run.twin_id, run.id]
    else:
        twin = ledger.get_twin(str(twin_id))
        kind, root, stream_ids = "twin", twin.id, [twin.id, *_runs_of_twin(ledger, twin.id)]
    scan = scan_log(ledger.recorder, keep=True)  # checks the log, and the digest to carry
    if scan.broken is not None:
        raise ArchiveRefused(f"the log is broken at {scan.broken}; nothing was archived")
    streams: list[Sequence[StoredEvent]] = []
    paths: dict[UUID, list[PathStep]] = {}
    for stream_id in stream_ids:
        head = scan.head_of(stream_id)
        if head is None:
            continue
        index, version, _ = head
        streams.append(ledger.recorder.select_events(stream_id, lte=version))
        paths[stream_id] = [
            PathStep(side, sibling.hex()) for side, sibling in audit_path(scan.leaves, index)
        ]
    total = sum(len(stream) for stream in streams)
    header = Header(
        format=FORMAT,
        version=VERSION,
        kind=kind,
        root_id=root,
        created_at=ledger.clock().isoformat(),
        streams=len(streams),
        events=total,
        position=scan.position,
        digest=scan.digest,
        algorithm=ALGORITHM,
        paths=paths,
    )
    out.write(msgspec.json.encode(header) + b"\n")
    digest = hashlib.sha256()
    for stream in streams:
        prior = GENESIS
        for stored in stream:
            ident = UUID(str(stored.originator_id))
            prior = link(
                prior, ident.bytes, stored.originator_version, stored.topic, bytes(stored.state)
            )
            line = (
                msgspec.json.encode(
                    Line(
                        originator_id=ident,
                        originator_version=stored.originator_version,
                        topic=stored.topic,
                        **_state_fields(bytes(stored.state)),
                        hash=prior.hex(),
                    )
                )
                + b"\n"
            )
            digest.update(line)
            out.write(line)
    out.write(
        msgspec.json.encode(Trailer(end=True, events=total, sha256=digest.hexdigest())) + b"\n"
    )
    return total


def read_archive(path: str | Path) -> tuple[Header, list[StoredEvent]]:
    """Read and check an archive file: header, every line, trailer count and checksum."""
    file = Path(path)
    # A regular file of bounded size only: never /dev/zero, a FIFO or a directory.
    lines = read_input_file(file, "file", MAX_ARCHIVE_BYTES).splitlines(keepends=True)
    if len(lines) < 2:
        raise ValidationError("file", f"{file} is not a TwinLedger archive (too short)")
    try:
        header = msgspec.json.decode(lines[0], type=Header)
    except msgspec.DecodeError as error:
        raise ValidationError("file", f"{file} has no valid archive header: {error}") from None
    if header.format != FORMAT:
        raise ValidationError(
            "file", f"{file} is not a TwinLedger archive (format {header.format!r})"
        )
    if header.version != VERSION:
        raise ValidationError(
            "file",
            f"{file} is archive format version {header.version}; this version reads {VERSION}",
        )
    try:
        trailer = msgspec.json.decode(lines[-1], type=Trailer)
    except msgspec.DecodeError:
        raise ValidationError("file", f"{file} is truncated: no trailer line") from None
    body = lines[1:-1]
    decoder = msgspec.json.Decoder(Line)
    events = []
    heads: dict[UUID, tuple[int, bytes]] = {}
    for number, raw in enumerate(body, start=2):
        try:
            line = decoder.decode(raw)
            state = _state_of(line)
        except (msgspec.DecodeError, binascii.Error) as error:
            raise ValidationError("file", f"{file} line {number}: {error}") from None
        stored = StoredEvent(line.originator_id, line.originator_version, line.topic, state)
        heads[line.originator_id] = _check_link(file, heads.get(line.originator_id), line, stored)
        events.append(stored)
    for stream, (version, head) in heads.items():
        top = leaf_hash(stream.bytes, version, head)
        for step in header.paths.get(stream, []):
            sibling = bytes.fromhex(step.hash)
            top = node_hash(sibling, top) if step.side == "left" else node_hash(top, sibling)
        if top.hex() != header.digest:
            raise ValidationError(
                "file",
                f"{file}: stream {stream} version {version} does not lead to the archive's "
                "digest; nothing was imported",
            )
    digest = hashlib.sha256(b"".join(body)).hexdigest()
    if trailer.events != len(body) or header.events != len(body) or digest != trailer.sha256:
        raise ValidationError(
            "file", f"{file} is damaged: its checksum or event count does not match"
        )
    return header, events


def _check_link(
    file: Path, head: tuple[int, bytes] | None, line: Line, stored: StoredEvent
) -> tuple[int, bytes]:
    """The next link of a stream's chain, checked against the hash the archive carries."""
    version, prior = head if head is not None else (0, GENESIS)
    where = f"{file}: stream {line.originator_id} version {line.originator_version}"
    if line.originator_version != version + 1:
        raise ValidationError(
            "file", f"{where} does not follow version {version}; nothing was imported"
        )
    digest = link(
        prior, line.originator_id.bytes, line.originator_version, line.topic, stored.state
    )
    if digest.hex() != line.hash:
        raise ValidationError("file", f"{where} does not match its hash; nothing was imported")
    return line.originator_version, digest


def import_archive(
    ledger: TwinLedger, path: str | Path, *, expected_digest: str | None = None
) -> ImportReport:
    """Merge an archive's streams into the ledger's store, in one transaction; with
    ``expected_digest``, only if the archive was made at that ledger digest."""
    header, events = read_archive(path)
    if expected_digest is not None and header.digest != expected_digest.strip().lower():
        raise ValidationError(
            "digest", f"{path} was made at digest {header.digest}, not {expected_digest}"
        )
    for stored in events:  # every event must decode here, before anything is written
        try:
            event = ledger.mapper.to_domain_event(stored)
        except MapperDeserialisationError as error:
            raise ValidationError("file", f"{path}: {error}") from None
        # The same text rules as every other input (docs/validation.md): no NUL or other
        # control character may enter the store through an archive either.
        check_safe(msgspec.to_builtins(event), f"file.{stored.originator_id}")
    streams: dict[UUID, list[StoredEvent]] = {}
    for stored in events:
        streams.setdefault(UUID(str(stored.originator_id)), []).append(stored)
    to_write: list[StoredEvent] = []
    present = 0
    for originator_id, archived in streams.items():
        existing = _stream(ledger, originator_id)
        for index, (ours, theirs) in enumerate(zip(existing, archived, strict=False)):
            if (ours.originator_version, ours.topic, bytes(ours.state)) != (
                theirs.originator_version,
                theirs.topic,
                theirs.state,
            ):
                raise ImportConflict(
                    f"file: stream {originator_id} differs from this store at version {index + 1}; "
                    "nothing was imported"
                )
        if len(existing) >= len(archived):
            present += 1
        to_write.extend(archived[len(existing) :])
    if to_write:
        ledger.recorder.insert_events(to_write)
        for hook in ledger.after_write:
            hook()
    return ImportReport(
        streams=len(streams),
        events_in_file=len(events),
        events_written=len(to_write),
        streams_already_present=present,
    )


class ArchiveRefused(TwinLedgerError):
    """The store's own chain is broken: an archive of it would carry the break."""


class ImportConflict(TwinLedgerError):
    """The archive and the store disagree about a stream."""


def _state_fields(state: bytes) -> dict[str, str]:
    """A stored state as an archive line holds it: JSON as text, a compact state in base64."""
    if is_compact(state):
        return {"state_base64": base64.b64encode(state).decode()}
    return {"state": state.decode()}


def _state_of(line: Line) -> bytes:
    if line.state_base64 is not None:
        return base64.b64decode(line.state_base64, validate=True)
    return line.state.encode()
