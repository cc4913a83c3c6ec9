"""SIGKILL in the middle of a batch or of a rebuild: nothing is lost, nothing is doubled.

Each test runs the projections in a real child process that kills itself with SIGKILL at a
chosen point: after writing a batch's rows and its new position, before the commit; or in the
middle of a rebuild. Then the tables are resumed (or checked untouched) and compared with a
clean rebuild, checksum for checksum.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from infrastructure.application import TwinLedger
from projections.runs import RunsProjection
from tests.projection_scenario import build, projector

ROOT = Path(__file__).resolve().parent.parent

KILL_MID_BATCH = textwrap.dedent(
    """
    import os, signal, sys
    from projections import tracking
    from projections.checksum import table_checksum
    from projections.runner import Projector

    url, victim, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    original = tracking.advance
    calls = {"n": 0}

    def advance(store, cursor, name, old, new):
        original(store, cursor, name, old, new)  # rows and position written, not committed
        if name != victim:
            return
        calls["n"] += 1
        if calls["n"] == batch:
            (table,) = Projector.open(url).by_name[name].tables
            rows, checksum = table_checksum(store, cursor, table)  # what this batch wrote
            print(old, new, rows, checksum, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    tracking.advance = advance
    Projector.open(url, batch_size=4).catch_up()
    print("not killed", flush=True)
    """
)

KILL_IN_REBUILD = textwrap.dedent(
    """
    import os, signal, sys
    from projections.results import ResultsProjection
    from projections.runner import Projector

    url, where = sys.argv[1], sys.argv[2]
    if where == "build":  # while writing the second batch of a staging table
        original = ResultsProjection.apply
        calls = {"n": 0}

        def apply(self, batch):
            original(self, batch)
            calls["n"] += 1
            if calls["n"] == 2:
                os.kill(os.getpid(), signal.SIGKILL)

        ResultsProjection.apply = apply
    else:  # in the swap: live tables dropped, the first staging table renamed, no commit
        original = Projector._rename

        def rename(self, cursor, table, staging):
            original(self, cursor, table, staging)
            os.kill(os.getpid(), signal.SIGKILL)

        Projector._rename = rename
    Projector.open(url, batch_size=4).rebuild()
    print("not killed", flush=True)
    """
)


KILL_WHILE_PARKING = textwrap.dedent(
    """
    import os, signal, sys
    from projections import parking
    from projections.runs import RunsProjection
    from projections.runner import Projector

    url, bad = sys.argv[1], int(sys.argv[2])
    apply = RunsProjection.apply

    def buggy(self, batch):  # a handler bug: this one event cannot be applied
        if any(event.position == bad for event in batch.events):
            raise RuntimeError(f"handler bug at {bad}")
        apply(self, batch)

    RunsProjection.apply = buggy
    park = parking.park

    def park_then_die(store, cursor, rows):
        park(store, cursor, rows)  # parked rows written with the batch, not committed
        if rows:
            print(" ".join(str(row.position) for row in rows), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    parking.park = park_then_die
    Projector.open(url, batch_size=4).catch_up()
    print("not killed", flush=True)
    """
)


def child(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("victim", ["runs", "results"])
def test_a_projection_killed_mid_batch_resumes_to_the_clean_rebuild(
    ledger: TwinLedger, database_url: str, victim: str
) -> None:
    build(ledger)
    with projector(ledger) as p:
        p.prepare()  # tables exist, nothing applied yet
    killed = child(KILL_MID_BATCH, database_url, victim, "2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    old, new, rows, in_flight = killed.stdout.split()
    assert int(new) > int(old) > 0

    with projector(ledger) as p:
        status = {row.name: row for row in p.status()}
        assert status[victim].position == int(old)  # the batch in flight was not committed
        (table,) = p.by_name[victim].tables
        committed_rows, committed = p.checksums([victim])[table.name]
        assert committed != in_flight  # its rows were written, then rolled back
        assert committed_rows <= int(rows)

        p.catch_up()
        resumed = p.checksums()
        assert {row.position for row in p.status()} == {ledger.event_count()}
        p.rebuild()
        assert p.checksums() == resumed


@pytest.mark.parametrize("where", ["build", "swap"])
def test_a_rebuild_killed_at_any_point_leaves_the_live_tables_alone(
    ledger: TwinLedger, database_url: str, where: str
) -> None:
    build(ledger)
    with projector(ledger) as p:
        p.catch_up()
        before = p.checksums()
        positions = [row.position for row in p.status()]
    killed = child(KILL_IN_REBUILD, database_url, where)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with projector(ledger) as p:
        assert p.checksums() == before
        assert [row.position for row in p.status()] == positions
        p.rebuild()
        assert p.checksums() == before


def test_a_projection_killed_while_parking_resumes_to_the_clean_rebuild(
    ledger: TwinLedger, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL after the parked row and the batch's rows are written, before the commit:
    neither the parked row nor the position survive; resuming parks the event once."""
    s = build(ledger)
    notes = ledger.recorder.select_notifications(start=1, limit=10_000)
    bad = [n.id for n in notes if str(n.originator_id) == str(s.completed)][4]
    with projector(ledger) as p:
        p.prepare()
    killed = child(KILL_WHILE_PARKING, database_url, str(bad))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert int(killed.stdout.split()[0]) == bad

    original = RunsProjection.apply

    def buggy(self: RunsProjection, batch: Any) -> None:  # the same bug in this process
        if any(event.position == bad for event in batch.events):
            raise RuntimeError(f"handler bug at {bad}")
        original(self, batch)

    monkeypatch.setattr(RunsProjection, "apply", buggy)
    with projector(ledger) as p:
        status = {row.name: row for row in p.status()}
        assert status["runs"].position < bad and status["runs"].parked == 0
        assert p.parked() == []
        p.catch_up()
        resumed = p.checksums()
        parked = [(row.projection, row.position, row.error_class) for row in p.parked()]
        assert parked[0] == ("runs", bad, "RuntimeError")
        assert {row.position for row in p.status()} == {ledger.event_count()}
        p.rebuild()
        assert p.checksums() == resumed
        assert [(row.projection, row.position, row.error_class) for row in p.parked()] == parked
