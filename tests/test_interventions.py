"""Scheduled interventions and hazards: recorded in RunQueued, applied at the start of their
year as key events, replayed identically; a changed recorded intervention is named by replay;
hostile interventions are refused naming the year, key or value, with nothing written."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from storage import rewrite_stored_event
from test_engine import SPEC
from typer.testing import CliRunner

from domain.catalog import CATALOG
from domain.digest import ResultDigest
from domain.engine import RunInputs, Simulation
from domain.errors import ValidationError
from domain.interventions import (
    HAZARDS,
    ORBITAL_PROJECTS,
    ForkPoint,
    Intervention,
    RunChanges,
)
from domain.replay import replay
from domain.values import Pattern, RunParameters, RunStatus
from infrastructure.application import TwinLedger
from infrastructure.cli import app
from infrastructure.interventions import parse_intervention, validate_interventions

BUDGET = 1_000_000_000_000
YEARS = 40
SCHEDULE = [
    "10:budget_cents=+50000000000",
    "15:hazard=dust_storm",
    "20:param.tech_level=7",
    "25:param.spend_scale=2.0",
    "30:budget_cents=-1000",
    "32:budget_cents=0",
]
runner = CliRunner()


def body_state(key: str) -> Any:
    return CATALOG[key].state


def twinledger(db: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--db", db, *args])
    return result.exit_code, result.stdout, result.stderr


def run_with(ledger: TwinLedger, interventions: list[str], *, seed: int = 42) -> UUID:
    twin_id = ledger.clone_twin(name="Mars", body="mars")
    run_id = ledger.queue_run(
        twin_id,
        pattern="mars_terraform",
        duration_years=YEARS,
        budget_cents=BUDGET,
        seed=seed,
        interventions=interventions,
    )
    assert ledger.execute_run(run_id).status == RunStatus.COMPLETED
    return run_id


def test_interventions_are_recorded_applied_as_key_events_and_replay_identically(
    ledger: TwinLedger,
) -> None:
    run_id = run_with(ledger, SCHEDULE)
    run = ledger.get_run(run_id)
    assert [item.text() for item in run.interventions] == SCHEDULE
    years = {year.year: year for year in ledger.recorded_years(run_id)}
    budget = years[10].key_events[0]
    assert budget.name == "intervention" and budget.data["change_cents"] == 50_000_000_000
    assert budget.description.startswith("scheduled intervention 10:budget_cents=+50000000000")
    storm = next(e for e in years[15].key_events if e.name == "dust_storm")
    assert storm.data["surface_capacity_lost_pct"] == 20.0
    assert [e.name for e in years[20].key_events][:1] == ["intervention"]
    emptied = years[32].key_events[0]
    assert emptied.data["balance_cents"] == 0
    assert years[32].economic.balance_cents == 0  # nothing left to spend, no revenue
    plain = run_with(ledger, [])
    plain_years = list(ledger.recorded_years(plain))
    assert list(years.values())[:9] == plain_years[:9]  # nothing changes before year 10
    assert years[10].economic != plain_years[9].economic
    report = ledger.replay_run(run_id)
    assert report.identical and report.complete and report.digest == run.result_digest


def _queued_version(ledger: TwinLedger, run_id: UUID) -> int:
    return next(iter(ledger.repository.event_store.get(run_id))).originator_version


@pytest.mark.parametrize(
    ("change", "year"),
    [
        (lambda item: item.update(value=60_000_000_000), 10),  # another amount
        (lambda item: item.update(year=12), 10),  # another year: missing at 10
        (lambda item: item.update(key="hazard", value="solar_flare", mode="set"), 10),
    ],
)
def test_a_changed_recorded_intervention_is_named_by_replay(
    ledger: TwinLedger, database_url: str, change: Any, year: int
) -> None:
    run_id = run_with(ledger, SCHEDULE[:2])

    def tamper(state: dict[str, Any]) -> None:
        change(state["interventions"][0])

    rewrite_stored_event(database_url, run_id, _queued_version(ledger, run_id), tamper)
    report = ledger.replay_run(run_id)
    assert report.divergence is not None
    assert report.divergence.year == year and report.divergence.field == "intervention"
    assert "10:budget_cents=+50000000000" in report.divergence.recorded
    code, out, _ = twinledger(database_url, "replay", str(run_id))
    assert code == 1 and f"diverged at year {year}, field intervention" in out


HOSTILE = [
    ("0:hazard=dust_storm", "interventions[0].year"),
    (f"{YEARS + 1}:hazard=dust_storm", "interventions[0].year"),
    ("99999:hazard=dust_storm", "interventions[0].year"),
    ("x:hazard=dust_storm", "interventions[0].year"),
    ("10:warp=1", "interventions[0].key"),
    ("10:param.=1", "interventions[0].key"),
    ("10:hazard=volcano", "interventions[0].value"),
    ("10:hazard=dust\x00storm", "interventions[0]"),
    ("10:hazard=dust_storm\x1b[2J", "interventions[0]"),
    ("10:budget_cents=1.5", "interventions[0].value"),
    ("10:budget_cents=+1e12", "interventions[0].value"),
    (f"10:budget_cents=+{2**70}", "interventions[0].value"),
    ("10:param.tech_level=11", "interventions[0].value"),
    ("10:param.tech_level=7.5", "interventions[0].value"),
    ("10:param.priority=urgent", "interventions[0].value"),
    ("10:param.spend_scale=nan", "interventions[0].value"),
    ("10:param.spend_scale=inf", "interventions[0].value"),
    ("10:param.spend_scale=50", "interventions[0].value"),
    ("10:param.warp_factor=9", "interventions[0].value"),
    ("no separators", "interventions[0]"),
    ("\u0661\u0660:hazard=dust_storm", "interventions[0].year"),  # Arabic-Indic digits
    ("10:budget_cents=+1_000", "interventions[0].value"),
    ("10:budget_cents=+\u0661\u0662", "interventions[0].value"),
    ("10:param.spend_scale=\u0661", "interventions[0].value"),
    ("10:param.tech_level=\u00b2", "interventions[0].value"),
    ("10:hazard=dust_storm\ud800", "interventions[0]"),
]


@pytest.mark.parametrize(("text", "field"), HOSTILE)
def test_hostile_interventions_exit_2_naming_the_field_and_write_nothing(
    ledger: TwinLedger, database_url: str, text: str, field: str
) -> None:
    twin_id = str(ledger.clone_twin(name="Mars", body="mars"))
    before = ledger.event_count()
    for command in ("queue", "run"):
        code, _, err = twinledger(
            database_url, command, twin_id, "--years", str(YEARS), "--intervene", text
        )
        assert code == 2, err
        assert err.startswith(f"error: {field}"), err
    assert ledger.event_count() == before


def test_the_second_bad_intervention_is_the_one_named(ledger: TwinLedger) -> None:
    twin_id = ledger.clone_twin(name="Mars", body="mars")
    before = ledger.event_count()
    with pytest.raises(ValidationError) as refused:
        ledger.queue_run(
            twin_id,
            pattern="mars_terraform",
            duration_years=YEARS,
            budget_cents=BUDGET,
            interventions=["10:hazard=dust_storm", {"year": 12, "key": "hazard", "value": 3}],
        )
    assert refused.value.field == "interventions[1].value"
    with pytest.raises(ValidationError, match=r"interventions\[0\]\.mode"):
        validate_interventions(
            [{"year": 3, "key": "hazard", "value": "solar_flare", "mode": "add"}],
            pattern=Pattern.MARS_TERRAFORM,
            duration_years=YEARS,
        )
    assert ledger.event_count() == before


def test_a_hazard_that_cannot_happen_on_the_pattern_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"interventions\[0\].value: dust_storm cannot"):
        validate_interventions(
            ["5:hazard=dust_storm"], pattern=Pattern.VENUS_INDUSTRIAL, duration_years=10
        )


STRIKES = [(hazard, pattern) for hazard in sorted(HAZARDS) for pattern in HAZARDS[hazard].effects]
HOME = {
    Pattern.MARS_TERRAFORM: "mars",
    Pattern.CUSTOM: "mars",
    Pattern.VENUS_INDUSTRIAL: "venus",
    Pattern.TITAN_FUEL: "titan",
    Pattern.EUROPA_OCEAN: "europa",
}


@pytest.mark.parametrize(("hazard", "pattern"), STRIKES)
def test_every_scheduled_hazard_strikes_where_it_can(hazard: str, pattern: Pattern) -> None:
    effect = HAZARDS[hazard].effects[pattern]
    plain = RunInputs(
        state=body_state(HOME[pattern]),
        pattern=pattern,
        duration_years=6,
        parameters=RunParameters(
            budget_cents=BUDGET, custom_spec=SPEC if pattern == Pattern.CUSTOM else None
        ),
        seed=5,
    )
    struck = msgspec.structs.replace(
        plain, interventions=[Intervention(year=3, key="hazard", value=hazard)]
    )
    without, with_ = Simulation(plain), Simulation(struck)
    before = [without.step() for _ in range(3)]
    after = [with_.step() for _ in range(3)]
    assert after[:2] == before[:2]
    events = [e for e in after[2].key_events if e.name == hazard]
    assert len(events) == 1
    assert events[0].data["surface_capacity_lost_pct"] == effect.surface_damage * 100.0
    assert events[0].data["temperature_change_k"] == effect.temperature_change_k
    # every project lost at least its share of capacity in year 3 (space projects the orbital
    # one; more where the pattern's physics compounds it, e.g. Europa's radiation once the
    # shielding is damaged)
    lost = False
    for name, project in with_.projects.items():
        share = effect.orbital_damage if name in ORBITAL_PROJECTS else effect.surface_damage
        intact = without.projects[name].capacity
        assert project.capacity <= intact * (1.0 - share) * (1.0 + 1e-12), name
        lost = lost or project.capacity < intact
    assert lost
    if effect.temperature_change_k < 0.0:
        assert after[2].environment.temperature_k < before[2].environment.temperature_k


# --- properties (pure engine) -------------------------------------------------------------------

intervention_texts = st.one_of(
    st.builds(
        lambda y, c: f"{y}:budget_cents={c:+d}", st.integers(1, 12), st.integers(-(10**12), 10**12)
    ),
    st.builds(lambda y, c: f"{y}:budget_cents={c}", st.integers(1, 12), st.integers(0, 10**12)),
    st.builds(lambda y, h: f"{y}:hazard={h}", st.integers(1, 12), st.sampled_from(sorted(HAZARDS))),
    st.builds(lambda y, t: f"{y}:param.tech_level={t}", st.integers(1, 12), st.integers(1, 10)),
    st.builds(
        lambda y, p: f"{y}:param.priority={p}", st.integers(1, 12), st.sampled_from(["low", "high"])
    ),
    st.builds(
        lambda y, v: f"{y}:param.hazard_rate={v!r}",
        st.integers(1, 12),
        st.floats(0.0, 0.5, allow_nan=False),
    ),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(intervention_texts, max_size=5), st.integers(0, 2**63 - 1))
def test_interventions_are_deterministic_and_leave_earlier_years_alone(
    texts: list[str], seed: int
) -> None:
    items = validate_interventions(texts, pattern=Pattern.MARS_TERRAFORM, duration_years=12)
    base = RunInputs(
        state=body_state("mars"),
        pattern=Pattern.MARS_TERRAFORM,
        duration_years=12,
        parameters=RunParameters(budget_cents=BUDGET),
        seed=seed,
    )
    changed = msgspec.structs.replace(base, interventions=items)
    simulation = Simulation(changed)
    first = [simulation.step() for _ in range(12)]
    plain = Simulation(base)
    unchanged = [plain.step() for _ in range(12)]
    start = min((item.year for item in items), default=13)
    assert first[: start - 1] == unchanged[: start - 1]
    assert replay(changed, first, None, None).identical


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_text_is_an_intervention_or_a_named_refusal(text: str) -> None:
    try:
        items = validate_interventions([text], pattern=Pattern.MARS_TERRAFORM, duration_years=50)
    except ValidationError as error:
        assert error.field.startswith("interventions[0]")
        assert "\x00" not in error.field
    else:
        assert len(items) == 1 and 1 <= items[0].year <= 50


def test_parse_keeps_the_sign_of_a_budget_change() -> None:
    assert parse_intervention("7:budget_cents=+5", 0)["mode"] == "add"
    assert parse_intervention("7:budget_cents=5", 0)["mode"] == "set"
    assert parse_intervention("7:budget_cents=-5", 0)["value"] == -5


# SHA-256 of the results of SCHEDULE on Mars (40 years, seed 42, 10 bn GCC), and of a fork of it
# at year 12 (seed 7, technology 9, 20 bn GCC budget): computed once, pinned so that any machine
# and any later engine 1.1.0 reproduces interventions, hazards and forks bit for bit.
GOLDEN_INTERVENTIONS = "sha256:b47036b49915c75105b7cb547048e0937f1ef5388ffe8a79e3f13abb4b51958f"
GOLDEN_FORK = "sha256:02a18d926b1a9d4195636d2e94241be6004fbd9c6bcd97bc0da1062211cb778a"


def _digest(inputs: RunInputs) -> str:
    simulation, digest = Simulation(inputs), ResultDigest()
    for _ in range(inputs.duration_years):
        digest.add_year(simulation.step())
    digest.add_summary(simulation.summary())
    return digest.hexdigest()


def test_interventions_and_forks_are_pinned_bit_for_bit(ledger: TwinLedger) -> None:
    scheduled = RunInputs(
        state=body_state("mars"),
        pattern=Pattern.MARS_TERRAFORM,
        duration_years=YEARS,
        parameters=RunParameters(budget_cents=BUDGET),
        seed=42,
        interventions=validate_interventions(
            SCHEDULE, pattern=Pattern.MARS_TERRAFORM, duration_years=YEARS
        ),
    )
    assert _digest(scheduled) == GOLDEN_INTERVENTIONS
    point = ForkPoint(
        parent_run_id=UUID(int=1),
        at_year=12,
        changes=RunChanges(seed=7, tech_level=9, budget_cents=2 * BUDGET),
    )
    assert _digest(msgspec.structs.replace(scheduled, forks=[point])) == GOLDEN_FORK
    # the same through the ledger, on each back end
    run_id = run_with(ledger, SCHEDULE)
    assert ledger.get_run(run_id).result_digest == GOLDEN_INTERVENTIONS
