"""Two writers changing the same aggregate: the second gets a clear error, no event is lost.
Many processes starting at once on a fresh or an existing store all succeed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import fresh_postgres_url

from domain.errors import ConcurrentWrite
from domain.values import RunStatus, TwinStatus
from infrastructure.application import TwinLedger


def test_a_concurrent_write_to_the_same_twin_is_refused_clearly(
    open_ledger: Callable[[], TwinLedger],
) -> None:
    first, second = open_ledger(), open_ledger()
    twin_id = first.clone_twin(name="Mars A", body="mars")
    stale = second.get_twin(twin_id)  # second writer reads...
    first.delete_twin(twin_id, reason="first")  # ...first writer writes...
    before = first.event_count()
    stale.delete(second.clock(), "second", "second")
    with pytest.raises(ConcurrentWrite, match="another writer changed DigitalTwin"):
        second._save(stale)  # ...second writer's stale write is refused
    assert first.event_count() == before
    twin = second.get_twin(twin_id)
    assert twin.status == TwinStatus.DELETED
    assert twin.version == 2


# --- many processes at once (issue 10, item 6) ------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
CLI = "from infrastructure.cli import main; main()"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def start(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CLI, "--db", url, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def all_succeed(url: str, commands: list[list[str]]) -> list[str]:
    """Start every command at once; assert each exits 0 with no warning; their outputs."""
    assert len(commands) == 16
    processes = [start(url, *command) for command in commands]
    outputs = []
    failures = []
    for command, process in zip(commands, processes, strict=True):
        out, err = process.communicate(timeout=300)
        if process.returncode != 0 or "warning" in err:
            failures.append(f"{' '.join(command)}: exit {process.returncode}: {err.strip()}")
        outputs.append(out)
    assert not failures, "\n".join(failures)
    return outputs


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_postgres_url() as url:
        yield url


@pytest.mark.postgres
def test_sixteen_commands_of_every_kind_at_once_on_a_fresh_and_an_existing_store(
    postgres_url: str,
) -> None:
    """Before the fix, each started with the library's DDL (CREATE OR REPLACE FUNCTION ...):
    some failed with ``tuple concurrently updated``. PostgreSQL only: SQLite serialises its
    DDL by its database lock (and the 64 processes of both back ends cost minutes here)."""
    database_url = postgres_url
    fresh = [
        *(["clone", body, "--name", f"{body} {i}"] for i, body in enumerate(["mars"] * 4)),
        *(["clone", "venus", "--name", f"Venus {i}"] for i in range(2)),
        ["twins"],
        ["runs"],
        ["experiments"],
        ["projections", "status"],
        ["projections", "run", "--once"],
        ["projections", "checksum"],
        ["replay", "--all"],
        ["expire"],
        ["retention", "apply", "--dry-run"],
        ["bodies"],
    ]
    outputs = all_succeed(database_url, fresh)
    twin_ids = [UUID_RE.findall(out)[0] for out in outputs[:6]]
    assert len(set(twin_ids)) == 6

    ledger = TwinLedger.open(database_url)
    try:
        mars = twin_ids[0]
        queued = [
            ledger.queue_run(
                mars, pattern="mars_terraform", duration_years=4, budget_cents=10**12, seed=i
            )
            for i in range(3)
        ]
        done = ledger.queue_run(
            mars, pattern="mars_terraform", duration_years=3, budget_cents=10**12, seed=9
        )
        ledger.execute_run(done)
    finally:
        ledger.close()
    existing = [
        ["queue", twin_ids[1], "--pattern", "mars_terraform", "--years", "3", "--budget", "10"],
        ["queue", twin_ids[2], "--pattern", "mars_terraform", "--years", "3", "--budget", "10"],
        ["clone", "titan", "--name", "Titan X"],
        ["execute", str(queued[0])],
        ["execute", str(queued[1])],
        ["run", twin_ids[3], "--pattern", "mars_terraform", "--years", "3", "--budget", "10"],
        ["cancel", str(queued[2])],
        ["twins"],
        ["runs"],
        ["show-run", str(done)],
        ["twin", twin_ids[4]],
        ["replay", str(done)],
        ["replay", "--all"],
        ["projections", "status"],
        ["projections", "run", "--once"],
        ["expire"],
    ]
    all_succeed(database_url, existing)
    ledger = TwinLedger.open(database_url)
    try:
        assert [ledger.get_run(r).status for r in queued] == [
            RunStatus.COMPLETED,
            RunStatus.COMPLETED,
            RunStatus.CANCELLED,
        ]
    finally:
        ledger.close()
