"""The read commands and `projections ...` as a user meets them, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import re

from typer.testing import CliRunner

from infrastructure.application import TwinLedger
from infrastructure.cli import app
from infrastructure.settings import resolve_database
from projections.store import Store
from tests.storage import rewrite_stored_event

runner = CliRunner()
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def twinledger(db: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--db", db, *args])
    return result.exit_code, result.stdout, result.stderr


def ok(db: str, *args: str) -> str:
    code, out, err = twinledger(db, *args)
    assert code == 0, (out, err)
    return out


def table_rows(db: str, table: str) -> list[tuple[object, ...]]:
    """Straight from the read table with SQL: no projection is run by reading this way."""
    store = Store(resolve_database(db))
    try:
        with store.reading() as cursor:
            cursor.execute(store.sql("SELECT * FROM {t}", t=table))
            return list(cursor.fetchall())
    finally:
        store.close()


def clone(db: str, body: str, name: str) -> str:
    match = UUID_RE.search(ok(db, "clone", body, "--name", name))
    assert match
    return match.group(0)


def test_a_write_command_prints_after_the_tables_hold_its_writes(database_url: str) -> None:
    twin_id = clone(database_url, "mars", "Mars A")
    assert [row[0] for row in table_rows(database_url, "digital_twins")] in (
        [twin_id],
        [__import__("uuid").UUID(twin_id)],
    )
    out = ok(database_url, "run", twin_id, "--years", "6", "--seed", "3", "--chunk", "4")
    run_id = UUID_RE.search(out.split("run ", 1)[1])
    assert run_id
    assert len(table_rows(database_url, "simulation_runs")) == 1
    assert len(table_rows(database_url, "simulation_results")) >= 12  # 6 years x 2, + timeline

    status = ok(database_url, "projections", "status")
    for name in ("twins", "runs", "results"):
        line = next(line for line in status.splitlines() if f" {name} " in line)
        assert " ok " in line, status


def test_twins_runs_and_results_read_from_the_tables(database_url: str) -> None:
    mars = clone(database_url, "mars", "Mars A")
    titan = clone(database_url, "titan", "Titan A")
    ok(database_url, "run", mars, "--years", "5", "--seed", "1")
    queued = UUID_RE.search(ok(database_url, "queue", titan, "--pattern", "titan_fuel"))
    assert queued

    twins = json.loads(ok(database_url, "twins", "--format", "json"))
    assert {t["name"]: t["status"] for t in twins} == {"Mars A": "completed", "Titan A": "ready"}
    assert {t["name"]: t["run_count"] for t in twins} == {"Mars A": 1, "Titan A": 1}
    ready = json.loads(ok(database_url, "twins", "--status", "ready", "--format", "json"))
    assert [t["id"] for t in ready] == [titan]
    assert titan in ok(database_url, "twins", "--status", "ready")  # table: full ids
    assert titan not in ok(database_url, "twins", "--status", "completed")

    runs = json.loads(ok(database_url, "runs", "--format", "json"))
    assert sorted(r["status"] for r in runs) == ["completed", "queued"]
    only = json.loads(ok(database_url, "runs", "--twin", titan, "--format", "json"))
    assert [r["id"] for r in only] == [queued.group(0)]
    assert json.loads(ok(database_url, "runs", "--status", "queued", "--format", "json")) == only
    assert (
        json.loads(ok(database_url, "runs", "--pattern", "titan_fuel", "--format", "json")) == only
    )
    assert queued.group(0) in ok(database_url, "runs", "--twin", titan)  # table: full ids

    done = next(r for r in runs if r["status"] == "completed")
    assert done["progress"] == 1.0 and isinstance(done["total_spend_cents"], int)
    every = json.loads(ok(database_url, "results", done["id"], "--format", "json"))
    assert {(r["year"], r["result_type"]) for r in every} >= {
        (year, kind) for year in range(1, 6) for kind in ("economic", "environmental")
    }
    some = json.loads(
        ok(
            database_url,
            "results",
            done["id"],
            "--type",
            "economic",
            "--from-year",
            "2",
            "--to-year",
            "3",
            "--format",
            "json",
        )
    )
    assert [(r["year"], r["result_type"]) for r in some] == [(2, "economic"), (3, "economic")]
    assert isinstance(some[0]["data"]["spend_cents"], int)

    text = ok(database_url, "results", done["id"], "--type", "economic", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [int(row["year"]) for row in rows] == [1, 2, 3, 4, 5]
    assert json.loads(rows[0]["data"])["spend_cents"] == some[0]["data"]["spend_cents"] or (
        rows[0]["year"] == "1"
    )
    assert set(rows[0]) == {"run_id", "year", "result_type", "data", "created_at"}
    table = ok(database_url, "results", done["id"], "--to-year", "1")
    assert "spend_cents=" in table and "environmental" in table


def test_read_commands_refuse_bad_input_with_one_line(database_url: str) -> None:
    clone(database_url, "moon", "Moon A")
    code, _, err = twinledger(database_url, "twins", "--format", "xml")
    assert code == 2 and "format" in err and "Traceback" not in err
    code, _, err = twinledger(database_url, "results", "00000000-0000-0000-0000-000000000001")
    assert code == 2 and "run_id" in err
    code, _, err = twinledger(database_url, "results", "not-an-id")
    assert code == 2 and "run_id" in err
    code, _, err = twinledger(database_url, "runs", "--twin", "nope")
    assert code == 2 and "twin" in err
    code, _, err = twinledger(database_url, "projections", "rebuild", "nope")
    assert code == 2 and "no projection 'nope'" in err


def test_rebuild_and_checksum_from_the_command_line(database_url: str) -> None:
    twin_id = clone(database_url, "europa", "Europa A")
    ok(database_url, "run", twin_id, "--pattern", "europa_ocean", "--years", "4", "--seed", "9")
    before = ok(database_url, "projections", "checksum")
    assert [line.split()[0] for line in before.splitlines()] == [
        "digital_twins",
        "simulation_runs",
        "simulation_results",
        "experiments",
        "experiment_iterations",
    ]
    out = ok(database_url, "projections", "rebuild")
    assert "events/s" in out
    assert ok(database_url, "projections", "checksum") == before
    assert "results" in ok(database_url, "projections", "rebuild", "results")
    assert ok(database_url, "projections", "checksum", "results") == before.splitlines()[2] + "\n"
    assert "at" in ok(database_url, "projections", "run", "--once")


def test_a_parked_event_warns_but_never_fails_a_write(database_url: str) -> None:
    twin_id = clone(database_url, "mars", "Mars A")
    ledger = TwinLedger.open(database_url)  # writes through the library: no catch-up hook
    try:
        run_id = ledger.queue_run(
            twin_id, pattern="mars_terraform", duration_years=3, budget_cents=10**12, seed=5
        )
        ledger.execute_run(run_id)
    finally:
        ledger.close()
    # Year 1 of the run becomes undecodable before any projection has read it.
    rewrite_stored_event(database_url, run_id, 3, lambda state: state.update(year=None))

    code, out, err = twinledger(database_url, "clone", "venus", "--name", "Venus A")
    assert code == 0, err
    assert "Venus A" in out
    assert "warning: projection runs parked event" in err and "YearResultRecorded" in err
    listed = json.loads(ok(database_url, "twins", "--format", "json"))
    assert "Venus A" in {t["name"] for t in listed}  # nothing waits for the parked event

    status = ok(database_url, "projections", "status")
    runs = next(line for line in status.splitlines() if " runs " in line)
    assert "STOPPED" not in runs and " ok " in runs
    assert "projections parked" in status
    parked = ok(database_url, "projections", "parked")
    assert "cannot decode its state" in parked or "ValidationError" in parked

    before = ok(database_url, "projections", "checksum")
    code, out, err = twinledger(database_url, "projections", "rebuild")
    assert code == 0, err
    assert ok(database_url, "projections", "checksum") == before  # parked again, same tables
    assert ok(database_url, "projections", "parked").count(" parked ") == parked.count(" parked ")
