"""The tamper-evident ledger (docs/integrity.md): every stored event's hash chained to its
stream's previous one, written with it; `verify` names the first broken stream and version
after any change, deletion or reordering by SQL; digests and proofs a third party can check."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from conftest import fresh_postgres_url
from eventsourcing.persistence import IntegrityError, StoredEvent
from hypothesis import given
from hypothesis import strategies as st
from psycopg import sql
from storage import rewrite_stored_event
from test_experiments import small_spec
from typer.testing import CliRunner

from infrastructure.application import TwinLedger
from infrastructure.cli import app
from infrastructure.experiments import run_experiment
from infrastructure.integrity import (
    GENESIS,
    BrokenChain,
    MerkleRoot,
    audit_path,
    check_rows,
    leaf_hash,
    link,
    node_hash,
    with_orphan,
)
from infrastructure.settings import resolve_database

CHECKER = Path(__file__).parent.parent / "docs" / "examples" / "check_proof.py"
runner = CliRunner()


def twinledger(db: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--db", db, *args])
    return result.exit_code, result.stdout, result.stderr


@dataclass
class Story:
    twin: UUID
    run: UUID  # completed, 12 years: versions 1 queued, 2 started, 3..14 years, 15 completed
    cancelled: UUID  # queued then cancelled: versions 1, 2
    experiment: UUID


@pytest.fixture
def story(ledger: TwinLedger) -> Story:
    twin = ledger.clone_twin(name="Mars A", body="mars")
    run = ledger.queue_run(
        twin, pattern="mars_terraform", duration_years=12, budget_cents=10**12, seed=3
    )
    ledger.execute_run(run, chunk_years=5)
    cancelled = ledger.queue_run(
        twin, pattern="mars_terraform", duration_years=12, budget_cents=10**12, seed=4
    )
    ledger.cancel_run(cancelled, reason="not needed")
    experiment = run_experiment(ledger, small_spec(max_iterations=2, years=5))
    return Story(twin=twin, run=run, cancelled=cancelled, experiment=experiment.id)


# --- raw SQL, as an attacker or a buggy script would -------------------------------------------


def tamper(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run ``statement`` on the store and return its rows; {events}, {chain} (the chain
    records) and {hashes} (the per-event hashes of earlier releases) name its tables, ``?``
    marks parameters, ids are converted to the back end's storage (uuid or 32 hex digits), and
    {position} is the log position column, {id} the id column's type."""
    database = resolve_database(url)
    if database.is_postgres:
        text = statement.format(
            events=f'"{database.schema}".twinledger_events',
            chain=f'"{database.schema}".twinledger_event_chain',
            hashes=f'"{database.schema}".twinledger_event_hashes',
            position="notification_id",
            id="uuid",
        ).replace("?", "%s")
        with psycopg.connect(database.psycopg_conninfo(), autocommit=True) as connection:
            cursor = connection.execute(sql.SQL(text), params)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []
    text = statement.format(
        events="stored_events",
        chain="stored_event_chain",
        hashes="stored_event_hashes",
        position="rowid",
        id="TEXT",
    )
    lite = tuple(p.hex if isinstance(p, UUID) else p for p in params)
    connection = sqlite3.connect(database.sqlite_path)
    try:
        rows = connection.execute(text, lite).fetchall()
        connection.commit()
        return rows
    finally:
        connection.close()


def record_holding(url: str, stream: UUID, version: int) -> tuple[int, bytes]:
    """(first version, hashes) of the chain record that holds ``version``'s hash."""
    for first, hashes in tamper(
        url, "SELECT first_version, hashes FROM {chain} WHERE originator_id = ?", stream
    ):
        if first <= version < first + len(hashes) // 32:
            return int(first), bytes(hashes)
    raise AssertionError(f"no chain record holds version {version}")


def delete_record(url: str, stream: UUID, version: int) -> tuple[UUID, int]:
    """Delete the chain record holding ``version``: named at the record's first version."""
    first, _ = record_holding(url, stream, version)
    tamper(url, "DELETE FROM {chain} WHERE originator_id = ? AND first_version = ?", stream, first)
    return stream, first


def change_hash(url: str, stream: UUID, version: int) -> tuple[UUID, int]:
    """Flip one byte of ``version``'s hash inside its chain record."""
    first, hashes = record_holding(url, stream, version)
    at = (version - first) * 32
    changed = hashes[:at] + bytes([hashes[at] ^ 1]) + hashes[at + 1 :]
    tamper(
        url,
        "UPDATE {chain} SET hashes = ? WHERE originator_id = ? AND first_version = ?",
        changed,
        stream,
        first,
    )
    return stream, version


def shorten_record(url: str, stream: UUID, version: int) -> tuple[UUID, int]:
    """Drop the last hash of the record holding ``version``: named at that record's last
    version (no stored hash)."""
    first, hashes = record_holding(url, stream, version)
    assert len(hashes) >= 64, "a record of one hash: shortening it deletes it"
    tamper(
        url,
        "UPDATE {chain} SET hashes = ? WHERE originator_id = ? AND first_version = ?",
        hashes[:-32],
        stream,
        first,
    )
    return stream, first + len(hashes) // 32 - 1


def move_record(url: str, stream: UUID, version: int) -> tuple[UUID, int]:
    """Move the record holding ``version`` one version on: its first event loses its hash."""
    first, _ = record_holding(url, stream, version)
    tamper(
        url,
        "UPDATE {chain} SET first_version = first_version + 1"
        " WHERE originator_id = ? AND first_version = ?",
        stream,
        first,
    )
    return stream, first


def insert_record(url: str, stream: UUID, version: int, hashes: bytes) -> tuple[UUID, int]:
    tamper(url, "INSERT INTO {chain} VALUES (?, ?, ?)", stream, version, hashes)
    return stream, version


def to_per_event_format(url: str) -> None:
    """Rewrite a store's chain as an earlier release stored it: one row per event in
    ``{hashes}``, no chain records table."""
    rows = tamper(url, "SELECT originator_id, first_version, hashes FROM {chain}")
    tamper(
        url,
        "CREATE TABLE {hashes} (originator_id {id} NOT NULL, originator_version bigint NOT NULL,"
        " hash bytea NOT NULL, PRIMARY KEY (originator_id, originator_version))",
    )
    for ident, first, hashes in rows:
        stream = ident if isinstance(ident, UUID) else UUID(ident)
        for k in range(len(hashes) // 32):
            tamper(
                url,
                "INSERT INTO {hashes} VALUES (?, ?, ?)",
                stream,
                first + k,
                bytes(hashes[k * 32 : k * 32 + 32]),
            )
    tamper(url, "DROP TABLE {chain}")


def swap_states(url: str, stream: UUID, a: int, b: int) -> None:
    tamper(
        url,
        "UPDATE {events} SET state = (SELECT e2.state FROM {events} e2 WHERE"
        " e2.originator_id = ? AND e2.originator_version = (? + ? - {events}.originator_version))"
        " WHERE originator_id = ? AND originator_version IN (?, ?)",
        stream,
        a,
        b,
        stream,
        a,
        b,
    )


def swap_positions(url: str, stream: UUID, a: int, b: int) -> None:
    """Exchange the log positions of two events (a reordered log)."""
    where = " WHERE originator_id = ? AND originator_version = ?"
    first, second = (position(url, stream, v) for v in (a, b))
    tamper(url, "UPDATE {events} SET {position} = ?" + where, -1, stream, a)
    tamper(url, "UPDATE {events} SET {position} = ?" + where, first, stream, b)
    tamper(url, "UPDATE {events} SET {position} = ?" + where, second, stream, a)


def position(url: str, stream: UUID, version: int) -> int:
    ledger = TwinLedger.open(url)
    try:
        for event in ledger.recorder.select_notifications(start=None, limit=10_000):
            if (event.originator_id, event.originator_version) == (stream, version):
                return int(event.id)
    finally:
        ledger.close()
    raise AssertionError("no such event")


def edit(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(state: dict[str, Any]) -> None:
        state[field] = value

    return change


TAMPERS: dict[str, Callable[[str, Story], tuple[UUID, int]]] = {
    "edit TwinCloned": lambda url, s: (
        rewrite_stored_event(url, s.twin, 1, edit("name", "Venus")),
        (s.twin, 1),
    )[1],
    "edit RunCancelled": lambda url, s: (
        rewrite_stored_event(url, s.cancelled, 2, edit("reason", "other")),
        (s.cancelled, 2),
    )[1],
    "edit an experiment decision": lambda url, s: (
        rewrite_stored_event(url, s.experiment, 3, lambda d: d.update(accepted=not d["accepted"])),
        (s.experiment, 3),
    )[1],
    "delete a year": lambda url, s: (
        tamper(
            url, "DELETE FROM {events} WHERE originator_id = ? AND originator_version = 7", s.run
        ),
        (s.run, 7),
    )[1],
    "delete RunCancelled (the stream's last event)": lambda url, s: (
        tamper(
            url,
            "DELETE FROM {events} WHERE originator_id = ? AND originator_version = 2",
            s.cancelled,
        ),
        (s.cancelled, 2),
    )[1],
    "swap two years": lambda url, s: (swap_states(url, s.run, 5, 6), (s.run, 5))[1],
    "reorder two years in the log": lambda url, s: (swap_positions(url, s.run, 5, 6), (s.run, 6))[
        1
    ],
    "change a topic": lambda url, s: (
        tamper(
            url,
            "UPDATE {events} SET topic = 'domain.run:RunFailed'"
            " WHERE originator_id = ? AND originator_version = 15",
            s.run,
        ),
        (s.run, 15),
    )[1],
    "delete a chain record": lambda url, s: delete_record(url, s.run, 9),
    "change a hash in a chain record": lambda url, s: change_hash(url, s.run, 9),
    "shorten a chain record": lambda url, s: shorten_record(url, s.run, 9),
    "move a chain record": lambda url, s: move_record(url, s.run, 9),
    "insert a chain record past the stream's end": lambda url, s: insert_record(
        url, s.run, 16, bytes(32)
    ),
    "insert a chain record over the stream's events": lambda url, s: insert_record(
        url, s.run, record_holding(url, s.run, 9)[0] + 1, bytes(32)
    ),
    "append an event outside the ledger": lambda url, s: (
        tamper(
            url,
            "INSERT INTO {events} (originator_id, originator_version, topic, state)"
            " SELECT originator_id, 16, topic, state FROM {events}"
            " WHERE originator_id = ? AND originator_version = 15",
            s.run,
        ),
        (s.run, 16),
    )[1],
}


def test_an_untouched_log_verifies(database_url: str, story: Story) -> None:
    code, out, err = twinledger(database_url, "verify")
    assert code == 0, err
    assert "intact" in out
    code, out, err = twinledger(database_url, "digest", "--format", "json")
    assert code == 0, err
    taken = json.loads(out)
    assert taken["streams"] >= 4 and len(taken["digest"]) == 64
    code, out, err = twinledger(
        database_url, "verify", "--digest", taken["digest"], "--position", str(taken["position"])
    )
    assert code == 0, err
    code, out, err = twinledger(database_url, "verify", "--digest", "00" * 32)
    assert code == 1 and "digest" in err
    code, out, err = twinledger(database_url, "digest", "--position", str(taken["position"] + 1))
    assert code == 2 and "position" in err


@pytest.mark.parametrize("kind", sorted(TAMPERS))
def test_verify_names_the_stream_and_version_of_any_tampering(
    database_url: str, story: Story, kind: str
) -> None:
    assert twinledger(database_url, "verify")[0] == 0
    stream, version = TAMPERS[kind](database_url, story)
    code, out, err = twinledger(database_url, "verify")
    assert code == 1, (kind, out, err)
    assert f"stream {stream} version {version}:" in err, (kind, err)
    assert twinledger(database_url, "digest")[0] == 1


def test_both_postgres_append_paths_write_the_same_chain(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """COPY (large batches) and the library's INSERT path hash identically (the digest covers
    the stored bytes, which differ only in timestamps: compare each chain with a recomputation)."""
    monkeypatch.setenv("TWINLEDGER_PG_APPEND", "insert")
    ledger = TwinLedger.open(database_url)
    try:
        twin = ledger.clone_twin(name="Mars B", body="mars")
        run = ledger.queue_run(
            twin, pattern="mars_terraform", duration_years=40, budget_cents=10**12, seed=1
        )
        ledger.execute_run(run)
    finally:
        ledger.close()
    assert twinledger(database_url, "verify")[0] == 0
    rewrite_stored_event(database_url, run, 30, edit("year", 31))
    code, _, err = twinledger(database_url, "verify")
    assert code == 1 and f"stream {run} version 30:" in err


def test_a_proof_checks_against_its_digest_and_fails_against_a_later_one(
    database_url: str, story: Story, tmp_path: Path
) -> None:
    code, out, err = twinledger(database_url, "digest", "--format", "json")
    assert code == 0, err
    before = json.loads(out)
    code, out, err = twinledger(database_url, "prove", str(story.run), "--digest", before["digest"])
    assert code == 0, err
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(out)
    proof = json.loads(out)
    assert len(proof["events"]) == 15 and proof["stream"] == str(story.run)
    assert check(proof_file, before["digest"]) == 0

    # A capable attacker changes a year and recomputes the stream's whole chain: every chain
    # is consistent again, so only a digest kept elsewhere shows it.
    rewrite_stored_event(database_url, story.run, 9, edit("year", 99))
    rechain(database_url, story.run)
    assert twinledger(database_url, "verify")[0] == 0
    code, _, err = twinledger(
        database_url, "verify", "--digest", before["digest"], "--position", str(before["position"])
    )
    assert code == 1 and "digest" in err
    code, out, _ = twinledger(
        database_url, "digest", "--format", "json", "--position", str(before["position"])
    )
    after = json.loads(out)
    assert after["digest"] != before["digest"]
    assert check(proof_file, after["digest"]) == 1
    code, _, err = twinledger(database_url, "prove", str(story.run), "--digest", before["digest"])
    assert code == 1 and "digest" in err
    # a proof of the altered stream does not check against the digest taken before
    code, out, err = twinledger(database_url, "prove", str(story.run), "--digest", after["digest"])
    assert code == 0, err
    proof_file.write_text(out)
    assert check(proof_file, after["digest"]) == 0
    assert check(proof_file, before["digest"]) == 1


def check(proof_file: Path, digest: str) -> int:
    """Run the standalone checker (docs/examples/check_proof.py) as a third party would."""
    return subprocess.run(
        [sys.executable, str(CHECKER), str(proof_file), digest], capture_output=True, check=False
    ).returncode


def rechain(url: str, stream: UUID) -> None:
    """Recompute and store a stream's hashes from its stored events (an attacker who knows the
    algorithm)."""
    ledger = TwinLedger.open(url)
    try:
        stored = ledger.recorder.select_events(stream)
    finally:
        ledger.close()
    prior, hashes = GENESIS, b""
    for event in stored:
        prior = link(prior, stream.bytes, event.originator_version, event.topic, bytes(event.state))
        hashes += prior
    tamper(url, "DELETE FROM {chain} WHERE originator_id = ?", stream)
    tamper(url, "INSERT INTO {chain} VALUES (?, 1, ?)", stream, hashes)


def test_a_store_made_before_the_chain_gets_it_when_opened(database_url: str, story: Story) -> None:
    code, out, err = twinledger(database_url, "digest")
    assert code == 0, err
    tamper(database_url, "DROP TABLE {chain}")
    code, again, err = twinledger(database_url, "digest")
    assert code == 0, err
    assert again == out  # the same stored bytes, the same chain and digest


def test_a_store_with_per_event_hashes_is_converted_once_and_keeps_its_digest(
    database_url: str, story: Story
) -> None:
    """A store of an earlier release (one hash row per event) gets chain records holding the
    same hashes when first opened, the old table dropped; it then verifies with the same digest
    and takes new events chained onto the converted ones (old and new records in one stream)."""
    code, out, err = twinledger(database_url, "digest", "--format", "json")
    assert code == 0, err
    before = json.loads(out)
    to_per_event_format(database_url)
    per_event = tamper(database_url, "SELECT count(*) FROM {hashes}")[0][0]
    assert per_event == before["events"]
    code, again, err = twinledger(
        database_url, "digest", "--format", "json", "--position", str(before["position"])
    )
    assert code == 0, err
    assert json.loads(again)["digest"] == before["digest"]
    with pytest.raises(Exception, match=r"stored_event_hashes|twinledger_event_hashes"):
        tamper(database_url, "SELECT count(*) FROM {hashes}")  # dropped
    converted = tamper(database_url, "SELECT count(*) FROM {chain}")[0][0]
    assert 0 < converted < per_event
    # mixed: converted records, then new ones, in the same streams
    ledger = TwinLedger.open(database_url)
    try:
        ledger.extend_twin(story.twin, by=timedelta(days=1))
        run = ledger.queue_run(
            story.twin, pattern="mars_terraform", duration_years=30, budget_cents=10**12, seed=9
        )
        ledger.execute_run(run)
    finally:
        ledger.close()
    assert twinledger(database_url, "verify")[0] == 0
    code, _, err = twinledger(
        database_url, "verify", "--digest", before["digest"], "--position", str(before["position"])
    )
    assert code == 0, err
    change_hash(database_url, story.twin, 2)  # the new record of a converted stream
    code, _, err = twinledger(database_url, "verify")
    assert code == 1 and f"stream {story.twin} version 2:" in err


@pytest.mark.parametrize("damage", ["delete", "change", "delete the last"])
def test_a_per_event_store_damaged_before_conversion_is_named_as_before(
    database_url: str, story: Story, damage: str
) -> None:
    """The conversion moves stored hashes, it never recomputes one: a hash row deleted or
    changed before it is still named, at the same version, after it."""
    to_per_event_format(database_url)
    where = " WHERE originator_id = ? AND originator_version = ?"
    if damage == "delete":
        tamper(database_url, "DELETE FROM {hashes}" + where, story.run, 9)
        named = (story.run, 9, "no stored hash")
    elif damage == "change":
        tamper(database_url, "UPDATE {hashes} SET hash = ?" + where, bytes(32), story.run, 9)
        named = (story.run, 9, "do not match")
    else:  # the event deleted, its hash left: the stream's last event
        tamper(
            database_url,
            "DELETE FROM {events} WHERE originator_id = ? AND originator_version = 15",
            story.run,
        )
        named = (story.run, 15, "its hash is stored but the event is not")
    code, _, err = twinledger(database_url, "verify")
    assert code == 1, err
    assert f"stream {named[0]} version {named[1]}:" in err and named[2] in err, err
    assert twinledger(database_url, "verify")[0] == 1  # converted once: the same answer again


# --- the algorithm ------------------------------------------------------------------------------


def reference_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 MTH, recursively, as written in the RFC."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(reference_root(leaves[:k]), reference_root(leaves[k:]))


@given(st.integers(min_value=0, max_value=70), st.data())
def test_the_streaming_merkle_root_is_rfc_6962s_and_every_audit_path_leads_to_it(
    size: int, data: st.DataObject
) -> None:
    leaves = [leaf_hash(i.to_bytes(16, "big"), i + 1, bytes(32)) for i in range(size)]
    tree = MerkleRoot()
    for leaf in leaves:
        tree.add(leaf)
    root = reference_root(leaves)
    assert tree.root() == root
    if size:
        index = data.draw(st.integers(min_value=0, max_value=size - 1))
        top = leaves[index]
        for side, sibling in audit_path(leaves, index):
            top = node_hash(sibling, top) if side == "left" else node_hash(top, sibling)
        assert top == root


def test_the_checker_script_uses_nothing_but_the_standard_library() -> None:
    imports = {
        line.split()[1].split(".")[0]
        for line in CHECKER.read_text().splitlines()
        if line.startswith(("import ", "from "))
    }
    assert imports <= {"base64", "hashlib", "json", "sys", "__future__"}, imports


# --- archives carry the chain and the digest ---------------------------------------------------


def forge(archive: Path, stream: UUID, version: int, *, rechained: bool) -> Path:
    """A copy of ``archive`` with one event changed and a valid checksum; with ``rechained``,
    the stream's hashes recomputed too (only the digest then tells)."""
    lines = archive.read_text().splitlines(keepends=True)
    body = [json.loads(line) for line in lines[1:-1]]
    prior = GENESIS
    for line in body:
        if line["originator_id"] != str(stream):
            continue
        if line["originator_version"] == version:
            if "state_base64" in line:  # a compact state: change one of its bytes
                raw = bytearray(base64.b64decode(line["state_base64"]))
                raw[-1] ^= 1
                line["state_base64"] = base64.b64encode(bytes(raw)).decode()
            else:
                state = json.loads(line["state"])
                state["year"] = 999
                line["state"] = json.dumps(state, separators=(",", ":"))
        if rechained:
            prior = link(
                prior,
                stream.bytes,
                line["originator_version"],
                line["topic"],
                base64.b64decode(line["state_base64"])
                if "state_base64" in line
                else line["state"].encode(),
            )
            line["hash"] = prior.hex()
    text = [json.dumps(line, separators=(",", ":")) + "\n" for line in body]
    checksum = hashlib.sha256("".join(text).encode()).hexdigest()
    trailer = json.dumps({"end": True, "events": len(text), "sha256": checksum}) + "\n"
    forged = archive.with_name(f"forged-{rechained}.jsonl")
    forged.write_text(lines[0] + "".join(text) + trailer)
    return forged


def test_an_imported_archive_is_checked_not_trusted(
    database_url: str, other_database_url: str, story: Story, tmp_path: Path
) -> None:
    archive = tmp_path / "run.jsonl"
    code, _, err = twinledger(database_url, "archive", str(story.run), "-o", str(archive))
    assert code == 0, err
    header = json.loads(archive.read_text().splitlines()[0])
    _, out, _ = twinledger(database_url, "digest", "--format", "json")
    assert header["digest"] == json.loads(out)["digest"]
    for rechained, message in (
        (False, f"stream {story.run} version 6 does not match its hash"),
        (True, f"stream {story.run} version 15 does not lead to the archive's digest"),
    ):
        forged = forge(archive, story.run, 6, rechained=rechained)
        code, _, err = twinledger(other_database_url, "import", str(forged))
        assert code == 2 and message in err, err
        assert twinledger(other_database_url, "verify")[2] == ""
        assert events_in(other_database_url) == 0
    code, _, err = twinledger(other_database_url, "import", str(archive), "--digest", "ab" * 32)
    assert code == 2 and "digest" in err
    code, _, err = twinledger(
        other_database_url, "import", str(archive), "--digest", header["digest"]
    )
    assert code == 0, err
    code, _, err = twinledger(other_database_url, "verify")
    assert code == 0, err
    assert events_in(other_database_url) == header["events"]


def events_in(url: str) -> int:
    ledger = TwinLedger.open(url)
    try:
        return ledger.event_count()
    finally:
        ledger.close()


def test_a_write_onto_a_broken_chain_is_refused_and_writes_nothing(
    open_ledger: Callable[[], TwinLedger], database_url: str
) -> None:
    twin = open_ledger().clone_twin(name="Mars C", body="mars")
    tamper(database_url, "DELETE FROM {chain} WHERE originator_id = ?", twin)
    ledger = open_ledger()  # another process: it has not just written the twin's hash itself
    before = ledger.event_count()
    with pytest.raises(BrokenChain, match=f"stream {twin} version 1"):
        ledger.extend_twin(twin, by=timedelta(days=1))  # one event: the INSERT path
    batch = [StoredEvent(twin, v, "tests:Probe", b"{}") for v in range(2, 40)]
    with pytest.raises(BrokenChain, match=f"stream {twin} version 1"):
        ledger.recorder.insert_events(batch)  # the COPY path on PostgreSQL
    assert ledger.event_count() == before
    code, _, err = twinledger(database_url, "verify")
    assert code == 1 and f"stream {twin} version 1: no stored hash" in err


def test_consecutive_saves_chain_onto_the_hash_just_written(ledger: TwinLedger) -> None:
    """The next chunk of a run chains onto the hash its process remembers (no extra read)."""
    twin = ledger.clone_twin(name="Mars D", body="mars")
    recent = ledger.recorder.recent  # type: ignore[attr-defined]
    assert list(recent.known) == [(twin, 1)]
    ledger.extend_twin(twin, by=timedelta(days=1))
    assert (twin, 2) in recent.known


# --- the pass itself, on made-up logs ----------------------------------------------------------


def made_up_log(shape: list[int], starts: list[bool]) -> list[list[Any]]:
    """Rows (id, version, topic, state, position, chain record starting here or None) of
    streams of the given lengths, in (stream, version) order, positions interleaved round-robin
    like concurrent writers; a stream's chain records start at version 1 and wherever
    ``starts`` (cycled) says, as batches of any size would."""
    ids = sorted(uuid_n.to_bytes(16, "big") for uuid_n in range(1, len(shape) + 1))
    rows: list[list[Any]] = []
    position = 0
    for round_ in range(max(shape, default=0)):
        for ident, length in zip(ids, shape, strict=True):
            if round_ < length:
                position += 1
                rows.append([ident, round_ + 1, "t:E", f'{{"n":{position}}}'.encode(), position])
    rows.sort(key=lambda r: (r[0], r[1]))
    prior: dict[bytes, bytes] = {}
    opened: list[Any] = []
    for n, row in enumerate(rows):
        digest = link(prior.get(row[0], GENESIS), row[0], row[1], row[2], row[3])
        prior[row[0]] = digest
        if row[1] == 1 or starts[n % len(starts)]:
            opened = [digest]
            row.append(opened)
        else:
            opened.append(digest)
            row.append(None)
    for row in rows:
        row[5] = None if row[5] is None else b"".join(row[5])
    return rows


@given(
    shape=st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=5),
    starts=st.lists(st.booleans(), min_size=1, max_size=7),
    data=st.data(),
)
def test_any_single_change_is_named_at_its_stream_and_version(
    shape: list[int], starts: list[bool], data: st.DataObject
) -> None:
    rows = made_up_log(shape, starts)
    intact = check_rows((tuple(r) for r in rows), len(rows))
    assert intact.broken is None and intact.events == len(rows)
    assert intact.records == sum(r[5] is not None for r in rows)
    index = data.draw(st.integers(min_value=0, max_value=len(rows) - 1))
    ident, version = rows[index][0], rows[index][1]
    holder = max(i for i in range(index + 1) if rows[i][5] is not None)  # its record's row
    slot = (index - holder) * 32
    kind = data.draw(
        st.sampled_from(["state", "topic", "hash", "delete", "drop record", "shorten record"])
    )
    orphan = None
    if kind == "state":
        rows[index][3] += b" "
    elif kind == "topic":
        rows[index][2] = "t:F"
    elif kind == "hash":
        record = rows[holder][5]
        rows[holder][5] = record[:slot] + bytes(32) + record[slot + 32 :]
    elif kind == "drop record":
        rows[holder][5] = None
        version = rows[holder][1]  # the record's first event has no hash
    elif kind == "shorten record":  # its last hash gone: its last event has no hash
        record = rows[holder][5]
        rows[holder][5] = record[:-32] or None
        version = rows[holder][1] + len(record) // 32 - 1
    else:
        if rows[index][5] is not None:  # the record starts at no event now: found by SQL
            orphan = (ident, version)
        del rows[index]
    scan = with_orphan(check_rows((tuple(r) for r in rows), 10**6), orphan)
    assert scan.broken is not None, kind
    assert (scan.broken.stream.bytes, scan.broken.version) == (ident, version), (kind, scan.broken)


@pytest.mark.postgres
def test_conflicting_writes_leave_the_connections_usable() -> None:
    """Concurrent writers to the same streams: a conflict's IntegrityError aborts the library's
    pipeline, and no statement may be left half-prepared by it (psycopg prepares a statement on
    its fifth execution; before the fix: "prepared statement _pg3_7 does not exist" on later
    writes, first seen in parallel experiments)."""
    with fresh_postgres_url() as url:
        ledger = TwinLedger.open(url)
        streams = [uuid4(), uuid4()]
        unexpected: list[str] = []

        def write() -> None:
            for i in range(60):
                stream = streams[i % 2]
                version = len(ledger.recorder.select_events(stream)) + 1
                try:
                    ledger.recorder.insert_events([StoredEvent(stream, version, "t:E", b"{}")])
                except IntegrityError:
                    pass  # another writer took that version: expected
                except Exception as error:
                    unexpected.append(repr(error))

        try:
            writers = [threading.Thread(target=write) for _ in range(4)]
            for writer in writers:
                writer.start()
            for writer in writers:
                writer.join()
        finally:
            ledger.close()
        assert unexpected == []
        assert twinledger(url, "verify")[0] == 0


@pytest.mark.postgres
def test_only_a_store_without_chain_records_runs_ddl_at_open() -> None:
    """A store with chain records is opened with no DDL (store_exists); a store with per-event
    hashes is not taken as existing until converted."""
    from infrastructure.postgres import setting_up

    with fresh_postgres_url() as url:
        database = resolve_database(url)
        TwinLedger.open(url).close()
        with setting_up(database) as exists:
            assert exists
        to_per_event_format(url)
        with setting_up(database) as exists:
            assert not exists
        TwinLedger.open(url).close()
        with setting_up(database) as exists:
            assert exists
