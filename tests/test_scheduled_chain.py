"""The daemon's scheduled chain check (docs/scale-out.md): an intact log passes and records its
digest; a chain tampered by SQL is a failed outcome naming the first broken stream and version,
in scheduled_operations and scheduled_operation_runs, and `daemon --once` exits non-zero."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

from test_integrity import tamper
from typer.testing import CliRunner

from infrastructure.application import TwinLedger
from infrastructure.cli import app
from infrastructure.integrity import scan_log
from infrastructure.schedule import OPERATIONS_TABLE, Scheduler, history
from projections.runner import Projector

runner = CliRunner()


def completed_run(url: str) -> UUID:
    ledger = TwinLedger.open(url)
    try:
        twin = ledger.clone_twin(name="Mars A", body="mars")
        run = ledger.queue_run(
            twin, pattern="mars_terraform", duration_years=6, budget_cents=10**12, seed=3
        )
        ledger.execute_run(run, chunk_years=3)
        return run
    finally:
        ledger.close()


def operation_row(ledger: TwinLedger, name: str) -> dict[str, Any]:
    assert ledger.database is not None
    with Projector(ledger.database) as projector:
        store = projector.store
        with store.reading() as cursor:
            cursor.execute(
                store.sql(
                    "SELECT last_outcome, last_ok, state FROM {t} WHERE name = %s",
                    t=OPERATIONS_TABLE,
                ),
                (name,),
            )
            outcome, ok, state = cursor.fetchone()
    return {"outcome": outcome, "ok": bool(ok), "state": state}


def make_due(url: str, name: str) -> None:
    ledger = TwinLedger.open(url)
    assert ledger.database is not None
    try:
        with Projector(ledger.database) as projector:
            store = projector.store
            with store.transaction() as cursor:
                cursor.execute(
                    store.sql(
                        "UPDATE {t} SET last_started_at = NULL WHERE name = %s",
                        t=OPERATIONS_TABLE,
                    ),
                    (name,),
                )
    finally:
        ledger.close()


def test_an_intact_chain_passes_and_a_tampered_one_is_named(database_url: str, clock: Any) -> None:
    run = completed_run(database_url)
    ledger = TwinLedger.open(database_url, clock=clock)
    try:
        scheduler = Scheduler(ledger, {"verify-chain": timedelta(days=1)}, clock=clock)
        [done] = scheduler.tick()
        scan = scan_log(ledger.recorder)
        assert (done.name, done.ok) == ("verify-chain", True), done
        assert done.outcome.startswith("intact:") and scan.digest in done.outcome
        row = operation_row(ledger, "verify-chain")
        assert row["ok"] and row["state"] == f"{scan.position} {scan.digest}"
        assert scheduler.tick() == []  # not due again for a day

        tamper(
            database_url,
            "UPDATE {events} SET topic = 'domain.run:RunFailed'"
            " WHERE originator_id = ? AND originator_version = 4",
            run,
        )
        clock.advance(days=1)
        [done] = scheduler.tick()
        assert not done.ok
        assert f"stream {run} version 4:" in done.outcome, done.outcome
        row = operation_row(ledger, "verify-chain")
        assert not row["ok"] and f"stream {run} version 4:" in row["outcome"]
        last = history(ledger)[-1]
        assert last["name"] == "verify-chain" and not last["ok"]
        assert f"stream {run} version 4:" in last["outcome"]
    finally:
        ledger.close()


def test_daemon_once_exits_non_zero_on_a_broken_chain(database_url: str) -> None:
    run = completed_run(database_url)
    args = ["--db", database_url, "daemon", "--once", "--every", "expire=off"]
    args += ["--every", "retention=off"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "verify-chain: intact:" in result.stdout
    assert "verify: verified 1 runs" in result.stdout

    tamper(
        database_url,
        "DELETE FROM {chain} WHERE originator_id = ? AND first_version = 2",
        run,
    )
    make_due(database_url, "verify-chain")  # as if a day had passed
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert f"stream {run} version 2:" in result.stdout
    assert "failed: verify-chain" in result.stderr


def test_a_log_whose_earlier_digest_changed_is_named_rewritten(
    database_url: str, clock: Any
) -> None:
    """Intact chains are not enough: the digest at the position verified last must not change
    (the log is append-only). Here the digest recorded last time stands for a log that was
    rewritten, with consistent hashes, since."""
    completed_run(database_url)
    ledger = TwinLedger.open(database_url, clock=clock)
    try:
        scheduler = Scheduler(ledger, {"verify-chain": timedelta(days=1)}, clock=clock)
        [done] = scheduler.tick()
        assert done.ok, done
        first = scan_log(ledger.recorder)
        completed_run(database_url)  # the log grows: the next check looks back at `first`
        clock.advance(days=1)
        [done] = scheduler.tick()
        assert done.ok, done  # appended, nothing rewritten
        now = scan_log(ledger.recorder)
        assert operation_row(ledger, "verify-chain")["state"] == f"{now.position} {now.digest}"

        completed_run(database_url)
        forged = "0" * len(now.digest)
        with Projector(ledger.database) as projector:  # type: ignore[arg-type]
            store = projector.store
            with store.transaction() as cursor:
                cursor.execute(
                    store.sql("UPDATE {t} SET state = %s WHERE name = %s", t=OPERATIONS_TABLE),
                    (f"{now.position} {forged}", "verify-chain"),
                )
        clock.advance(days=1)
        [done] = scheduler.tick()
        assert not done.ok
        assert done.outcome.startswith("ChainBroken: REWRITTEN"), done.outcome
        assert f"position {now.position} is {now.digest}" in done.outcome
        assert first.position < now.position
    finally:
        ledger.close()
