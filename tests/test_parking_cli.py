"""`projections status|parked|retry|skip` as an operator meets them; a closed pipe ends quietly."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from uuid import uuid4

from eventsourcing.persistence import StoredEvent
from typer.testing import CliRunner

from infrastructure.application import TwinLedger
from infrastructure.cli import app
from tests.projection_scenario import build, projector

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def twinledger(db: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--db", db, *args])
    return result.exit_code, result.stdout, result.stderr


def test_parked_events_from_the_command_line(ledger: TwinLedger, database_url: str) -> None:
    build(ledger)
    topic = f"{__name__}:Unknown{uuid4().hex[:8]}"
    ledger.recorder.insert_events([StoredEvent(uuid4(), 1, topic, b"{}")])
    bad = ledger.event_count()

    code, out, err = twinledger(database_url, "projections", "run", "--once")
    assert code == 0, err
    code, out, err = twinledger(database_url, "projections", "status")
    assert code == 0, err
    assert "parked" in out and "projections parked" in out
    (runs,) = [line.split("│") for line in out.splitlines() if line.startswith("│ runs ")]
    assert [cell.strip() for cell in runs[-3:-1]] == ["1", "ok"]  # parked, state
    code, out, err = twinledger(database_url, "projections", "parked", "runs")
    assert code == 0, err
    assert out.startswith(f"runs {bad}: {topic} ")
    assert "UnhandledEvent: its topic names no event class" in out

    # Wrong uses: exit 2 with the field named, nothing changed.
    assert twinledger(database_url, "projections", "retry")[0] == 2
    code, _, err = twinledger(database_url, "projections", "retry", str(bad + 5))
    assert code == 2 and "position" in err
    code, _, err = twinledger(database_url, "projections", "skip", str(bad), "--reason", " ")
    assert code == 2 and "reason" in err
    assert twinledger(database_url, "projections", "skip", str(bad))[0] == 2  # --reason needed
    code, _, err = twinledger(database_url, "projections", "skip", str(bad), "--reason", "a\x00b")
    assert code == 2 and "reason" in err
    code, _, err = twinledger(
        database_url, "projections", "skip", str(bad), "--reason", "ok", "--by", "x\ny"
    )
    assert code == 2 and "by" in err
    code, _, err = twinledger(database_url, "projections", "parked", "nope")
    assert code == 2 and "name" in err

    code, out, err = twinledger(database_url, "projections", "retry", str(bad))
    assert code == 1 and "4 still parked" in out  # the event is still unknown to this code
    code, out, err = twinledger(
        database_url, "projections", "skip", str(bad), "--reason", "test event", "--by", "alice"
    )
    assert code == 0, err
    assert out.count("skipped by alice") == 4
    code, out, err = twinledger(database_url, "projections", "retry", "--all")
    assert code == 0 and "0 applied, 0 still parked" in out
    code, out, err = twinledger(database_url, "projections", "status")
    assert "0 (+1 skipped)" in out
    code, out, err = twinledger(database_url, "projections", "parked", "twins")
    assert "  skipped " in out and " by alice: test event" in out
    with projector(ledger) as p:
        trail = p.audit_trail()
    assert {(e.action, e.actor, e.reason, e.position) for e in trail} == {
        ("skipped", "alice", "test event", bad)
    }


def test_a_closed_pipe_ends_a_printing_command_quietly(tmp_path: Path) -> None:
    """`twinledger projections checksum | head -0`: no BrokenPipeError on stderr."""
    db = f"sqlite:///{tmp_path}/ledger.db"
    ledger = TwinLedger.open(db)
    try:
        build(ledger)
    finally:
        ledger.close()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from infrastructure.cli import main; main()",
            "--db",
            db,
            "projections",
            "checksum",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader goes away before the command prints
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == -signal.SIGPIPE
    assert "BrokenPipe" not in err and "Error" not in err and err == ""
