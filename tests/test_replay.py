"""Replay verification on SQLite and on PostgreSQL: stored runs replay identically, with the
same digest on every back end; tampering is detected and named; --to-year; --all; engine
version refusal; the CLI's exit codes."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage import rewrite_stored_event
from test_engine import GOLDEN_MARS_DIGEST
from typer.testing import CliRunner

import infrastructure.application as application_module
import infrastructure.cli.replay  # noqa: F401  (registers the command)
from domain.engine import ENGINE_VERSION
from domain.errors import NothingToVerify
from domain.replay import EngineVersionMismatch
from domain.run import YearResultRecorded
from domain.values import RunStatus
from infrastructure.application import TwinLedger
from infrastructure.cli import app

BUDGET = 1_000_000_000_000
HOME = {
    "mars_terraform": "mars",
    "venus_industrial": "venus",
    "titan_fuel": "titan",
    "europa_ocean": "europa",
}
runner = CliRunner()


def twinledger(db: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--db", db, *args])
    return result.exit_code, result.stdout, result.stderr


def completed_run(
    ledger: TwinLedger,
    *,
    pattern: str = "mars_terraform",
    years: int = 100,
    seed: int = 42,
    chunk_years: int = 50,
) -> UUID:
    twin_id = ledger.clone_twin(name=f"{pattern} {seed}", body=HOME[pattern])
    run_id = ledger.queue_run(
        twin_id, pattern=pattern, duration_years=years, budget_cents=BUDGET, seed=seed
    )
    assert ledger.execute_run(run_id, chunk_years=chunk_years).status == RunStatus.COMPLETED
    return run_id


def version_of_year(ledger: TwinLedger, run_id: UUID, year: int) -> int:
    for event in ledger.repository.event_store.get(run_id):
        if isinstance(event, YearResultRecorded) and event.year == year:
            return event.originator_version
    raise AssertionError(f"year {year} not recorded")


# --- identical replays -----------------------------------------------------------------------


def test_a_stored_run_replays_identically_with_the_same_digest_on_every_back_end(
    ledger: TwinLedger, database_url: str
) -> None:
    run_id = completed_run(ledger)
    stored = ledger.get_run(run_id)
    assert stored.result_digest == GOLDEN_MARS_DIGEST  # the same on SQLite and PostgreSQL
    report = ledger.replay_run(run_id)
    assert report.identical and report.complete
    assert report.years == 100
    assert report.digest == report.recorded_digest == GOLDEN_MARS_DIGEST

    code, out, err = twinledger(database_url, "replay", str(run_id))
    assert code == 0, err
    assert out.strip() == f"identical: 100 years, {GOLDEN_MARS_DIGEST}"


@given(
    pattern=st.sampled_from(sorted(HOME)),
    seed=st.integers(min_value=0, max_value=2**63 - 1),
    years=st.integers(min_value=1, max_value=30),
    chunk=st.integers(min_value=1, max_value=50),
)
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_stored_runs_replay_identically_whatever_the_inputs(
    ledger: TwinLedger, pattern: str, seed: int, years: int, chunk: int
) -> None:
    run_id = completed_run(ledger, pattern=pattern, years=years, seed=seed, chunk_years=chunk)
    report = ledger.replay_run(run_id)
    assert report.divergence is None
    assert report.years == years
    assert report.digest == ledger.get_run(run_id).result_digest


def test_a_run_resumed_after_a_crash_replays_identically(ledger: TwinLedger) -> None:
    twin_id = ledger.clone_twin(name="Mars crash", body="mars")
    run_id = ledger.queue_run(
        twin_id, pattern="mars_terraform", duration_years=100, budget_cents=BUDGET, seed=42
    )

    class Crash(BaseException):
        pass

    def crash(done: int, total: int) -> None:
        if done == 60:
            raise Crash

    with pytest.raises(Crash):
        ledger.execute_run(run_id, chunk_years=30, on_progress=crash)
    assert ledger.get_run(run_id).years_recorded == 60
    resumed = ledger.execute_run(run_id, chunk_years=30)
    assert resumed.result_digest == GOLDEN_MARS_DIGEST  # as if it had never crashed
    assert ledger.replay_run(run_id).identical


def test_readers_see_progress_in_chunks_and_a_run_in_flight_replays_so_far(
    open_ledger: Callable[[], TwinLedger],
) -> None:
    executor, reader = open_ledger(), open_ledger()
    twin_id = executor.clone_twin(name="Mars live", body="mars")
    run_id = executor.queue_run(
        twin_id, pattern="mars_terraform", duration_years=90, budget_cents=BUDGET, seed=3
    )
    seen: list[tuple[int, bool, int]] = []

    def look(done: int, total: int) -> None:
        report = reader.replay_run(run_id)
        seen.append((reader.get_run(run_id).years_recorded, report.identical, report.years))

    executor.execute_run(run_id, chunk_years=30, on_progress=look)
    assert seen == [(30, True, 30), (60, True, 60), (90, True, 90)]
    assert reader.get_run(run_id).status == RunStatus.COMPLETED


def test_a_cancelled_run_replays_its_recorded_years(
    open_ledger: Callable[[], TwinLedger], database_url: str
) -> None:
    executor, other = open_ledger(), open_ledger()
    twin_id = executor.clone_twin(name="Venus stop", body="venus")
    run_id = executor.queue_run(
        twin_id, pattern="venus_industrial", duration_years=50, budget_cents=BUDGET, seed=5
    )

    def cancel(done: int, total: int) -> None:
        if done == 20:
            other.cancel_run(run_id, reason="enough")

    assert executor.execute_run(run_id, chunk_years=10, on_progress=cancel).years_recorded == 20
    report = executor.replay_run(run_id)
    assert report.identical and not report.complete and report.years == 20
    code, out, _ = twinledger(database_url, "replay", str(run_id))
    assert code == 0
    assert out.startswith("identical: 20 years (run not completed: recorded years only), sha256:")


def test_a_run_with_nothing_recorded_is_not_reported_identical(
    ledger: TwinLedger, database_url: str
) -> None:
    """Replaying a queued run verified nothing: it says so and exits 2, not "identical: 0"."""
    twin_id = ledger.clone_twin(name="waiting", body="mars")
    queued = ledger.queue_run(
        twin_id, pattern="mars_terraform", duration_years=10, budget_cents=BUDGET
    )
    with pytest.raises(NothingToVerify, match="no recorded years to verify \\(status queued\\)"):
        ledger.replay_run(queued)
    code, out, err = twinledger(database_url, "replay", str(queued))
    assert (code, out) == (2, "")
    assert " ".join(err.split()) == (  # one message (the console may wrap it)
        f"error: run_id: run {queued} has no recorded years to verify (status queued)"
    )

    ledger.cancel_run(queued, reason="changed my mind")
    code, _, err = twinledger(database_url, "replay", str(queued))
    assert code == 2 and "no recorded years to verify (status cancelled)" in " ".join(err.split())


# --- tampering -------------------------------------------------------------------------------


def test_a_tampered_year_result_is_detected_and_named(
    open_ledger: Callable[[], TwinLedger], database_url: str
) -> None:
    writer = open_ledger()
    run_id = completed_run(writer, years=60)
    original = list(writer.recorded_years(run_id))[36].environment.temperature_k

    def warmer(state: dict[str, Any]) -> None:
        state["environment"]["temperature_k"] += 0.5

    rewrite_stored_event(database_url, run_id, version_of_year(writer, run_id, 37), warmer)
    report = open_ledger().replay_run(run_id)
    assert report.divergence is not None
    assert report.divergence.year == 37
    assert report.divergence.field == "environment.temperature_k"
    assert report.divergence.recorded == json.dumps(original + 0.5)
    assert report.divergence.replayed == json.dumps(original)
    assert report.years == 36

    code, out, _ = twinledger(database_url, "replay", str(run_id))
    assert code == 1
    assert "diverged at year 37, field environment.temperature_k" in out
    assert f"recorded {original + 0.5!r}, replayed {original!r}" in out


def test_tampered_money_and_key_events_are_named(ledger: TwinLedger, database_url: str) -> None:
    run_id = completed_run(ledger, years=30)

    def richer(state: dict[str, Any]) -> None:
        state["economic"]["balance_cents"] += 1

    rewrite_stored_event(database_url, run_id, version_of_year(ledger, run_id, 12), richer)
    divergence = ledger.replay_run(run_id).divergence
    assert divergence is not None
    assert (divergence.year, divergence.field) == (12, "economic.balance_cents")

    def renamed(state: dict[str, Any]) -> None:
        state["key_events"][0]["name"] = "nothing_happened"

    other_id = completed_run(ledger, years=30, seed=43)
    year = next(y.year for y in ledger.recorded_years(other_id) if y.key_events)
    rewrite_stored_event(database_url, other_id, version_of_year(ledger, other_id, year), renamed)
    divergence = ledger.replay_run(other_id).divergence
    assert divergence is not None
    assert (divergence.year, divergence.field) == (year, "key_events[0].name")
    assert divergence.recorded == '"nothing_happened"'


def test_a_stored_event_that_no_longer_decodes_is_a_divergence(
    ledger: TwinLedger, database_url: str
) -> None:
    run_id = completed_run(ledger, years=10)

    def float_money(state: dict[str, Any]) -> None:
        state["economic"]["spend_cents"] = 1.5

    rewrite_stored_event(database_url, run_id, version_of_year(ledger, run_id, 4), float_money)
    report = ledger.replay_run(run_id)
    assert report.divergence is not None and report.divergence.field == "stored_event"
    code, out, _ = twinledger(database_url, "replay", str(run_id))
    assert code == 1 and "stored_event" in out


# --- state at a year ---------------------------------------------------------------------------


def test_to_year_rebuilds_the_state_from_recorded_events_alone(
    ledger: TwinLedger, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = completed_run(ledger)
    years = list(ledger.recorded_years(run_id))

    def no_simulation(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("--to-year must not re-simulate")

    monkeypatch.setattr("domain.replay.Simulation", no_simulation)
    monkeypatch.setattr(application_module, "Simulation", no_simulation)
    state = ledger.state_at_year(run_id, 55)
    assert state.year == 55
    assert state.environment == years[54].environment
    assert state.economic == years[54].economic
    assert state.total_spend_cents == sum(y.economic.spend_cents for y in years[:55])
    assert state.total_revenue_cents == 0
    assert [e.year for e in state.key_events] == [e.year for y in years[:55] for e in y.key_events]
    assert state.key_events[-1].name == "first_liquid_water"

    code, out, err = twinledger(database_url, "replay", str(run_id), "--to-year", "55")
    assert code == 0, err
    assert "at year 55 of 100 (from recorded events, not re-simulated)" in out
    assert f"{years[54].environment.temperature_k:g} K" in out
    assert "first_liquid_water" in out and "biosphere_established" not in out
    code, out, err = twinledger(database_url, "replay", str(run_id), "--to-year", "5", "--json")
    assert code == 0, err
    assert json.loads(out)["environment"]["temperature_k"] == years[4].environment.temperature_k

    for bad in ("0", "101"):
        code, _, err = twinledger(database_url, "replay", str(run_id), "--to-year", bad)
        assert code == 2 and "to_year" in err and "1 to 100" in err


# --- all runs ----------------------------------------------------------------------------------


def test_replay_all_verifies_every_completed_run(ledger: TwinLedger, database_url: str) -> None:
    code, out, _ = twinledger(database_url, "replay", "--all")
    assert (code, out.strip()) == (0, "0 completed run(s): 0 identical, 0 diverged, 0 refused")

    good = completed_run(ledger, pattern="titan_fuel", years=12)
    bad = completed_run(ledger, pattern="europa_ocean", years=12)
    twin_id = ledger.clone_twin(name="queued only", body="mars")
    ledger.queue_run(twin_id, pattern="mars_terraform", duration_years=5, budget_cents=BUDGET)
    code, out, _ = twinledger(database_url, "replay", "--all")
    assert code == 0
    assert out.strip().endswith("2 completed run(s): 2 identical, 0 diverged, 0 refused")

    def drier(state: dict[str, Any]) -> None:
        state["environment"]["liquid_water_kg"] *= 0.5

    rewrite_stored_event(database_url, bad, version_of_year(ledger, bad, 9), drier)
    outcomes = dict(ledger.replay_all())
    assert set(outcomes) == {good, bad}
    assert list(ledger.completed_run_ids(page_size=1)) == [good, bad]  # paged scan of the log
    code, out, _ = twinledger(database_url, "replay", "--all")
    assert code == 1
    lines = out.strip().splitlines()
    assert f"{good} identical: 12 years, sha256:" in out
    assert any(
        line.startswith(f"{bad} diverged at year 9, field environment.liquid_water_kg")
        for line in lines
    )
    assert lines[-1] == "2 completed run(s): 1 identical, 1 diverged, 0 refused"


# --- engine versions ---------------------------------------------------------------------------


def test_runs_of_another_engine_version_are_refused_unless_asked(
    ledger: TwinLedger, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(application_module, "ENGINE_VERSION", "0.9.0")
    old = completed_run(ledger, years=10)
    queued_only = ledger.queue_run(
        ledger.clone_twin(name="old queue", body="mars"),
        pattern="mars_terraform",
        duration_years=10,
        budget_cents=BUDGET,
    )
    monkeypatch.undo()
    assert ledger.get_run(old).engine_version == "0.9.0"

    with pytest.raises(
        EngineVersionMismatch,
        match=rf"recorded by engine 0\.9\.0.*engine {re.escape(ENGINE_VERSION)}",
    ):
        ledger.replay_run(old)
    assert ledger.replay_run(old, allow_other_engine=True).identical  # same model underneath

    code, _, err = twinledger(database_url, "replay", str(old))
    assert code == 2
    assert "engine_version" in err and "--allow-other-engine" in err
    code, out, _ = twinledger(database_url, "replay", str(old), "--allow-other-engine")
    assert code == 0 and out.startswith("identical: 10 years")
    code, out, err = twinledger(database_url, "replay", "--all")
    assert code == 2
    assert "refused: recorded by engine 0.9.0" in out and "--allow-other-engine" in err

    before = ledger.event_count()
    with pytest.raises(EngineVersionMismatch, match="queue it again"):
        ledger.execute_run(queued_only)
    assert ledger.event_count() == before


def test_a_run_recorded_by_engine_1_0_0_with_float_money_replays_as_another_engines(
    ledger: TwinLedger, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Engine 1.0.0 stored key-event money as floats rounded to 6 digits. Such runs still
    decode and show, replay refuses them as another engine's (exit 2), and with
    --allow-other-engine the float money is the divergence replay names."""
    monkeypatch.setattr(application_module, "ENGINE_VERSION", "1.0.0")
    old = completed_run(ledger, years=100)
    monkeypatch.undo()
    year = next(
        y.year
        for y in ledger.recorded_years(old)
        if any(e.name == "budget_exhausted" for e in y.key_events)
    )

    def as_engine_1_0_0(state: dict[str, Any]) -> None:
        for event in state["key_events"]:
            for key in event["data"]:
                if key.endswith("_cents"):
                    event["data"][key] = float(f"{event['data'][key]:.6g}")

    rewrite_stored_event(database_url, old, version_of_year(ledger, old, year), as_engine_1_0_0)
    recorded = next(y for y in ledger.recorded_years(old) if y.year == year)
    exhausted = next(e for e in recorded.key_events if e.name == "budget_exhausted")
    assert type(exhausted.data["balance_cents"]) is float  # still decodes, as recorded

    code, _, err = twinledger(database_url, "replay", str(old))
    assert code == 2 and "recorded by engine 1.0.0" in " ".join(err.split())
    report = ledger.replay_run(old, allow_other_engine=True)
    assert report.divergence is not None and report.divergence.year == year
    assert report.divergence.field.startswith("key_events[")
    assert report.divergence.field.endswith("_cents")
    code, out, _ = twinledger(database_url, "replay", str(old), "--allow-other-engine")
    assert code == 1 and f"diverged at year {year}" in out
    code, out, _ = twinledger(database_url, "show-run", str(old))
    assert code == 0


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--all", "00000000-0000-0000-0000-000000000000"],
        ["--all", "--to-year", "3"],
        ["not-a-run-id"],
        ["00000000-0000-0000-0000-000000000000"],
    ],
)
def test_replay_user_errors_exit_2_with_one_line(database_url: str, args: list[str]) -> None:
    code, _, err = twinledger(database_url, "replay", *args)
    assert code == 2
    assert err.startswith("error: ") and "Traceback" not in err
