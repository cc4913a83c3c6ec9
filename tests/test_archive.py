"""Archive a twin or a run, import it into another store (SQLite <-> PostgreSQL), same results."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from domain.errors import TwinLedgerError
from infrastructure.application import TwinLedger
from infrastructure.archive import export, import_archive

BUDGET = 1_000_000_000_000


def archive_to(ledger: TwinLedger, path: Path, **which: str) -> int:
    with path.open("wb") as out:
        return export(ledger, out, **which)


@pytest.fixture
def source(ledger: TwinLedger) -> tuple[TwinLedger, str, list[str]]:
    twin_id = str(ledger.clone_twin(name="Mars A", body="mars"))
    runs = []
    for seed in (42, 43):
        run_id = ledger.queue_run(
            twin_id, pattern="mars_terraform", duration_years=30, budget_cents=BUDGET, seed=seed
        )
        ledger.execute_run(run_id, chunk_years=10)
        runs.append(str(run_id))
    other_twin = ledger.clone_twin(name="Venus A", body="venus")
    ledger.execute_run(
        ledger.queue_run(
            other_twin, pattern="venus_industrial", duration_years=5, budget_cents=BUDGET
        )
    )
    return ledger, twin_id, runs


def test_a_twin_archive_moves_to_the_other_back_end_with_the_same_results(
    source: tuple[TwinLedger, str, list[str]], other_database_url: str, tmp_path: Path
) -> None:
    ledger, twin_id, runs = source
    path = tmp_path / "mars.jsonl"
    count = archive_to(ledger, path, twin_id=twin_id)
    header = json.loads(path.read_text().splitlines()[0])
    assert header["format"] == "twinledger-archive" and header["version"] == 2
    assert header["streams"] == 3 and header["events"] == count

    target = TwinLedger.open(other_database_url)
    try:
        report = import_archive(target, path)
        assert report.events_written == count == target.event_count()
        assert target.get_twin(twin_id).name == "Mars A"
        for run_id in runs:
            original, imported = ledger.get_run(run_id), target.get_run(run_id)
            assert imported.result_digest == original.result_digest
            assert list(target.recorded_years(run_id)) == list(ledger.recorded_years(run_id))
            replayed = target.replay_run(run_id)  # re-simulated on the other back end
            assert replayed.identical and replayed.complete
            assert replayed.digest == original.result_digest
        # Importing the same file again writes nothing.
        again = import_archive(target, path)
        assert again.events_written == 0 and again.streams_already_present == 3
        assert target.event_count() == count
    finally:
        target.close()


def test_a_run_archive_carries_its_twin(
    source: tuple[TwinLedger, str, list[str]], other_database_url: str, tmp_path: Path
) -> None:
    ledger, twin_id, runs = source
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    archive_to(ledger, first, run_id=runs[0])
    target = TwinLedger.open(other_database_url)
    try:
        import_archive(target, first)
        assert target.get_twin(twin_id).source_body == "mars"
        assert target.get_run(runs[0]).result_digest == ledger.get_run(runs[0]).result_digest
        # The second run's archive shares the twin stream: only the run is added.
        archive_to(ledger, second, run_id=runs[1])
        report = import_archive(target, second)
        assert report.streams_already_present == 1
        assert target.get_run(runs[1]).result_digest == ledger.get_run(runs[1]).result_digest
    finally:
        target.close()


def test_a_damaged_archive_is_refused_and_nothing_is_written(
    source: tuple[TwinLedger, str, list[str]], other_database_url: str, tmp_path: Path
) -> None:
    ledger, twin_id, _ = source
    path = tmp_path / "mars.jsonl"
    archive_to(ledger, path, twin_id=twin_id)
    lines = path.read_text().splitlines(keepends=True)
    target = TwinLedger.open(other_database_url)
    try:
        truncated = tmp_path / "truncated.jsonl"
        truncated.write_text("".join(lines[:-3]))
        altered = tmp_path / "altered.jsonl"
        # (years are stored compact, in base64: alter a named state)
        completed, failed = '\\"outcome\\":\\"completed\\"', '\\"outcome\\":\\"failed\\"'
        altered.write_text("".join(lines).replace(completed, failed, 1))
        assert altered.read_text() != "".join(lines)
        foreign = tmp_path / "foreign.jsonl"
        foreign.write_text('{"hello": "world"}\n{}\n')
        for bad in (truncated, altered, foreign, tmp_path / "missing.jsonl"):
            with pytest.raises(TwinLedgerError, match=r"^file: "):
                import_archive(target, bad)
        assert target.event_count() == 0
    finally:
        target.close()


def test_a_diverging_stream_is_refused(ledger: TwinLedger, tmp_path: Path) -> None:
    twin_id = str(ledger.clone_twin(name="Titan A", body="titan"))
    path = tmp_path / "titan.jsonl"
    archive_to(ledger, path, twin_id=twin_id)
    ledger.delete_twin(twin_id, reason="gone")
    other = tmp_path / "other.jsonl"
    archive_to(ledger, other, twin_id=twin_id)
    assert path.read_text() != other.read_text()
    before = ledger.event_count()
    report = import_archive(ledger, path)  # the archive is a prefix of what the store holds
    assert report.events_written == 0
    lines = other.read_text().splitlines(keepends=True)
    # A forged archive whose version 2 differs from the store's (with a valid checksum): its
    # chain names it (docs/integrity.md).
    tampered_body = lines[2].replace('\\"reason\\":\\"gone\\"', '\\"reason\\":\\"other\\"')
    assert tampered_body != lines[2]
    digest = hashlib.sha256("".join([lines[1], tampered_body]).encode()).hexdigest()
    trailer = json.dumps({"end": True, "events": 2, "sha256": digest}) + "\n"
    forged = tmp_path / "forged.jsonl"
    forged.write_text(lines[0] + lines[1] + tampered_body + trailer)
    with pytest.raises(TwinLedgerError, match=f"stream {twin_id} version 2"):
        import_archive(ledger, forged)
    assert ledger.event_count() == before
