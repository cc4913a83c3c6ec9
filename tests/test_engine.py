"""The simulation engine, pure: PRNG vectors, determinism, bounds, and each pattern's trends."""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.catalog import CATALOG
from domain.digest import ResultDigest
from domain.engine import ENGINE_VERSION, RunInputs, Simulation, check_parameters
from domain.errors import ValidationError
from domain.prng import SplitMix64
from domain.values import (
    MAX_SEED,
    CustomSpec,
    Pattern,
    Priority,
    RunParameters,
    RunSummary,
    YearResult,
)

BUDGET = 1_000_000_000_000  # the CLI's default: 10 billion GCC
HOME = {
    Pattern.MARS_TERRAFORM: "mars",
    Pattern.VENUS_INDUSTRIAL: "venus",
    Pattern.TITAN_FUEL: "titan",
    Pattern.EUROPA_OCEAN: "europa",
    Pattern.CUSTOM: "earth",
}
SPEC = CustomSpec(
    name="greenhouse",
    annual_cost_cents=5_000_000_000,
    annual_revenue_cents=1_000_000_000,
    temperature_change_k=0.2,
    pressure_change_kpa=0.01,
    gas_change_pct={"O2": 0.05},
    liquid_water_change_kg=1e12,
    biomass_growth_rate=0.3,
)
# SHA-256 of the canonical results of mars_terraform on Mars, 100 years, seed 42, default
# budget (the README's demo). Computed once; any machine must reproduce it bit for bit.
# Engine 1.1.0 (integer cents in key events, fsum): was sha256:3da9ce9b... under 1.0.0.
GOLDEN_MARS_DIGEST = "sha256:cf1438db7543ff1e8612565f5e3deb1cfac430fbb0ce14404ea5b72a090762a1"


def inputs(
    pattern: Pattern = Pattern.MARS_TERRAFORM,
    years: int = 100,
    seed: int = 42,
    body: str | None = None,
    **parameters: Any,
) -> RunInputs:
    parameters.setdefault("budget_cents", BUDGET)
    if pattern == Pattern.CUSTOM:
        parameters.setdefault("custom_spec", SPEC)
    return RunInputs(
        state=CATALOG[body or HOME[pattern]].state,
        pattern=pattern,
        duration_years=years,
        parameters=RunParameters(**parameters),
        seed=seed,
    )


def run(run_inputs: RunInputs) -> tuple[list[YearResult], RunSummary]:
    simulation = Simulation(run_inputs)
    years = [simulation.step() for _ in range(run_inputs.duration_years)]
    return years, simulation.summary()


def digest(years: list[YearResult], summary: RunSummary) -> str:
    result = ResultDigest()
    for year in years:
        result.add_year(year)
    result.add_summary(summary)
    return result.hexdigest()


def events(years: list[YearResult]) -> dict[str, int]:
    return {event.name: event.year for year in years for event in year.key_events}


# --- the PRNG --------------------------------------------------------------------------------


def test_splitmix64_first_outputs_for_seed_42_are_pinned() -> None:
    rng = SplitMix64(42)
    assert [rng.next_u64() for _ in range(5)] == [
        0xBDD732262FEB6E95,
        0x28EFE333B266F103,
        0x47526757130F9F52,
        0x581CE1FF0E4AE394,
        0x09BC585A244823F2,
    ]


def test_splitmix64_matches_the_reference_vector() -> None:
    """Seed 1234567: the published vector of Vigna's splitmix64.c (also on Rosetta Code)."""
    rng = SplitMix64(1234567)
    assert [rng.next_u64() for _ in range(5)] == [
        6457827717110365317,
        3203168211198807973,
        9817491932198370423,
        4593380528125082431,
        16408922859458223821,
    ]


@given(seed=st.integers(min_value=0, max_value=MAX_SEED), n=st.integers(min_value=1, max_value=10))
@settings(max_examples=25, deadline=None)
def test_derived_draws_stay_in_range(seed: int, n: int) -> None:
    rng = SplitMix64(seed)
    for _ in range(20):
        assert 0.0 <= rng.uniform() < 1.0
        assert 0 <= rng.below(n) < n
        assert 2.0 <= rng.between(2.0, 3.0) < 3.0
    assert rng.draws >= 60


# --- determinism -----------------------------------------------------------------------------


def test_engine_version_is_recorded_as_1_1_0() -> None:
    assert ENGINE_VERSION == "1.1.0"


def test_the_demo_run_has_its_golden_digest() -> None:
    """Byte-identical across machines: the same inputs must give this exact digest."""
    assert digest(*run(inputs())) == GOLDEN_MARS_DIGEST


custom_specs = st.builds(
    CustomSpec,
    name=st.just("spec"),
    annual_cost_cents=st.integers(min_value=0, max_value=10**11),
    annual_revenue_cents=st.integers(min_value=0, max_value=10**11),
    temperature_change_k=st.floats(min_value=-50, max_value=50),
    pressure_change_kpa=st.floats(min_value=-1000, max_value=1000),
    gas_change_pct=st.dictionaries(
        st.sampled_from(["O2", "N2", "CO2", "XYZ"]), st.floats(-100, 100), max_size=3
    ),
    liquid_water_change_kg=st.floats(min_value=-1e20, max_value=1e20),
    biomass_growth_rate=st.floats(min_value=0, max_value=10),
)


@st.composite
def run_inputs(draw: st.DrawFn) -> RunInputs:
    pattern = draw(st.sampled_from(list(Pattern)))
    params = draw(
        st.dictionaries(
            st.sampled_from(["failure_rate", "funding_variance", "hazard_rate"]),
            st.floats(min_value=0.0, max_value=0.5),
            max_size=3,
        )
    )
    if pattern != Pattern.CUSTOM and draw(st.booleans()):
        params["spend_scale"] = draw(st.floats(min_value=0.1, max_value=10.0))
    return RunInputs(
        state=CATALOG[draw(st.sampled_from(sorted(CATALOG)))].state,
        pattern=pattern,
        duration_years=draw(st.one_of(st.integers(1, 40), st.sampled_from([1, 150, 1000]))),
        parameters=RunParameters(
            budget_cents=draw(st.one_of(st.just(BUDGET), st.integers(0, 2**62))),
            tech_level=draw(st.integers(1, 10)),
            priority=draw(st.sampled_from(list(Priority))),
            pattern_params=params,
            custom_spec=draw(custom_specs) if pattern == Pattern.CUSTOM else None,
        ),
        seed=draw(st.integers(min_value=0, max_value=MAX_SEED)),
    )


def _finite(value: Any) -> None:
    if isinstance(value, float):
        assert math.isfinite(value), value
    elif isinstance(value, dict):
        for item in value.values():
            _finite(item)
    elif isinstance(value, list):
        for item in value:
            _finite(item)


@given(run_inputs())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_same_inputs_give_identical_results(given_inputs: RunInputs) -> None:
    first_years, first_summary = run(given_inputs)
    again = msgspec.json.decode(msgspec.json.encode(given_inputs), type=RunInputs)
    second_years, second_summary = run(again)  # from a decoded copy, as from RunQueued
    assert msgspec.json.encode(first_years) == msgspec.json.encode(second_years)
    assert msgspec.json.encode(first_summary) == msgspec.json.encode(second_summary)
    assert digest(first_years, first_summary) == digest(second_years, second_summary)


@given(run_inputs())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_results_are_bounded_finite_and_money_is_integer_cents(given_inputs: RunInputs) -> None:
    years, summary = run(given_inputs)
    assert [year.year for year in years] == list(range(1, given_inputs.duration_years + 1))
    balance = given_inputs.parameters.budget_cents
    for year in years:
        economic = year.economic
        for cents in (economic.spend_cents, economic.revenue_cents, economic.balance_cents):
            assert type(cents) is int and cents >= 0
        balance += economic.revenue_cents - economic.spend_cents
        assert economic.balance_cents == balance
        assert 0.0 <= year.environment.habitability <= 1.0
        assert all(event.year == year.year for event in year.key_events)
        _finite(msgspec.to_builtins(year))
    _finite(msgspec.to_builtins(summary))
    metrics = summary.success_metrics
    for score in (
        metrics.habitability_score,
        metrics.timeline_efficiency,
        metrics.resource_efficiency,
        metrics.cost_efficiency,
    ):
        assert 0.0 <= score <= 1.0
    assert summary.years == given_inputs.duration_years
    assert summary.final_balance_cents == balance
    assert summary.total_spend_cents == sum(year.economic.spend_cents for year in years)
    assert summary.total_revenue_cents == sum(year.economic.revenue_cents for year in years)
    assert summary.end_state == years[-1].environment
    assert summary.key_events == [event for year in years for event in year.key_events]
    names = [event.name for event in summary.key_events]
    thresholds = [
        name
        for name in names
        if name not in ("impact", "acid_storm", "methane_storm", "radiation_storm")
    ]
    assert len(thresholds) == len(set(thresholds)), "a threshold fired twice"


@pytest.mark.parametrize("pattern", list(Pattern))
def test_seeds_42_and_43_give_different_runs(pattern: Pattern) -> None:
    years_42, summary_42 = run(inputs(pattern, years=30, seed=42))
    years_43, summary_43 = run(inputs(pattern, years=30, seed=43))
    assert digest(years_42, summary_42) != digest(years_43, summary_43)
    spends_42 = [year.economic.spend_cents for year in years_42]
    spends_43 = [year.economic.spend_cents for year in years_43]
    assert spends_42 != spends_43  # funding variance comes from the seed


def test_parameters_change_results() -> None:
    base = digest(*run(inputs(years=30)))
    for parameters in (
        {"tech_level": 9},
        {"priority": Priority.HIGH},
        {"budget_cents": BUDGET // 10},
        {"pattern_params": {"share_orbital_mirrors": 1.0}},
        {"pattern_params": {"funding_variance": 0.0}},
    ):
        assert digest(*run(inputs(years=30, **parameters))) != base, parameters


def test_the_step_function_uses_only_exactly_rounded_arithmetic() -> None:
    """No exp/log/pow/trig, no non-integer powers, no float ``sum``, no ``random`` module."""
    domain = Path(__file__).parent.parent / "domain"
    files = [domain / name for name in ("engine.py", "physics.py", "prng.py", "world.py")]
    files += sorted((domain / "patterns").glob("*.py"))
    for file in files:
        tree = ast.parse(file.read_text())
        for node in ast.walk(tree):
            where = f"{file.name}:{getattr(node, 'lineno', '?')}"
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "math"
            ):
                assert node.attr in ("sqrt", "ceil", "fsum", "isfinite"), (
                    f"{where}: math.{node.attr}"
                )
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
                exponent = node.right
                assert isinstance(exponent, ast.Constant) and isinstance(exponent.value, int), (
                    f"{where}: ** with a non-integer exponent"
                )
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("sum", "pow", "round"), f"{where}: {node.func.id}()"
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [alias.name for alias in node.names]
                module = getattr(node, "module", None) or ""
                assert "random" not in names and module != "random", f"{where}: random"


# --- the model -------------------------------------------------------------------------------


def test_mars_demo_century_warms_thickens_and_runs_out_of_money() -> None:
    years, summary = run(inputs())
    start, end = summary.start_state, summary.end_state
    assert start.temperature_k == 210.0 and start.pressure_kpa == 0.636
    assert end.temperature_k > start.temperature_k + 30
    assert end.pressure_kpa > 2 * start.pressure_kpa
    assert "PFC" in end.composition_pct and "PFC" not in start.composition_pct
    assert end.liquid_water_kg > 0.0 and end.biomass_kg > 0.0
    assert end.habitability > start.habitability
    happened = events(years)
    assert list(happened) == [
        "warming_10k",
        "pressure_doubled",
        "first_liquid_water",
        "biosphere_established",
        "budget_exhausted",
    ]
    exhausted = happened["budget_exhausted"]
    after = years[exhausted:]
    assert all(year.economic.spend_cents == 0 for year in after)
    assert all(year.economic.balance_cents == 0 for year in after)
    assert summary.total_spend_cents == BUDGET
    for event in summary.key_events:  # self-contained: a reader needs nothing else
        assert event.description and event.data


def test_budget_zero_exhausts_in_year_one_and_nothing_is_spent() -> None:
    years, summary = run(inputs(years=20, budget_cents=0))
    assert events(years) == {"budget_exhausted": 1}
    assert all(year.economic.spend_cents == 0 for year in years)
    assert summary.final_balance_cents == 0
    assert summary.end_state.temperature_k == pytest.approx(210.0, abs=0.5)


def test_mars_high_priority_and_more_money_reach_stable_liquid_water() -> None:
    years, summary = run(
        inputs(years=300, budget_cents=5 * BUDGET, tech_level=8, priority=Priority.HIGH)
    )
    assert "liquid_water_stable" in events(years)
    assert summary.end_state.temperature_k > 273.16


def test_mars_stops_building_greenhouse_factories_at_its_target_temperature() -> None:
    years, summary = run(inputs(years=150, pattern_params={"target_temperature_k": 230.0}))
    assert max(year.environment.temperature_k for year in years) < 233.0
    _, free = run(inputs(years=150))
    made = summary.resource_consumption["pfc_made_kg"]
    assert made < free.resource_consumption["pfc_made_kg"] / 2


def test_venus_cools_and_pays_for_itself() -> None:
    years, summary = run(inputs(Pattern.VENUS_INDUSTRIAL, years=150))
    happened = events(years)
    assert {"first_revenue", "self_funding", "break_even", "cooling_10k"} <= set(happened)
    assert summary.end_state.temperature_k < summary.start_state.temperature_k - 10
    assert summary.end_state.pressure_kpa <= summary.start_state.pressure_kpa
    assert summary.resource_consumption["co2_processed_kg"] > 0
    assert summary.total_revenue_cents > summary.total_spend_cents


def test_titan_extracts_and_exports_fuel() -> None:
    years, summary = run(inputs(Pattern.TITAN_FUEL, years=80))
    happened = events(years)
    assert {"first_revenue", "self_funding", "exported_100_mt"} <= set(happened)
    consumption = summary.resource_consumption
    assert consumption["methane_kg"] > consumption["ethane_kg"] > 0
    assert summary.end_state.composition_pct["CH4"] >= summary.start_state.composition_pct["CH4"]


def test_europa_breaches_the_shell_before_building_ocean_habitats() -> None:
    years, summary = run(inputs(Pattern.EUROPA_OCEAN, years=80))
    happened = events(years)
    assert happened["shell_breached"] <= happened["first_ocean_habitat"]
    assert "ocean_colony" in happened
    assert summary.resource_consumption["radiation_losses_cents"] > 0
    assert summary.end_state.biomass_kg > 0  # habitat gardens


def test_custom_applies_the_spec_in_proportion_to_funding() -> None:
    _, funded = run(
        inputs(
            Pattern.CUSTOM,
            years=10,
            pattern_params={"funding_variance": 0.0, "failure_rate": 0.0, "hazard_rate": 0.0},
        )
    )
    assert funded.end_state.temperature_k == pytest.approx(288.0 + 10 * 0.2)
    assert funded.total_spend_cents == 10 * SPEC.annual_cost_cents
    assert funded.total_revenue_cents == 10 * SPEC.annual_revenue_cents
    assert funded.end_state.composition_pct["O2"] > funded.start_state.composition_pct["O2"]
    _, unfunded = run(inputs(Pattern.CUSTOM, years=10, budget_cents=0))
    assert unfunded.end_state == unfunded.start_state
    assert unfunded.total_revenue_cents == 0


def test_year_results_stay_compact() -> None:
    years, _ = run(inputs(years=60))
    quiet = [year for year in years if not year.key_events]
    assert max(len(msgspec.json.encode(year)) for year in quiet) <= 400


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({"pattern_params": {"mirrors": 2.0}}, "pattern_params.mirrors"),
        ({"pattern_params": {"funding_variance": 0.9}}, "pattern_params.funding_variance"),
        ({"pattern_params": {"share_ghg_factories": -1.0}}, "pattern_params.share_ghg_factories"),
        ({"tech_level": 11}, "tech_level"),
    ],
)
def test_bad_pattern_parameters_are_refused_naming_the_field(
    parameters: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        Simulation(inputs(**parameters))
    assert refused.value.field == field
    check_parameters(Pattern.MARS_TERRAFORM, RunParameters(budget_cents=1))  # fine


def test_custom_without_a_spec_is_refused() -> None:
    bare = RunInputs(
        state=CATALOG["earth"].state,
        pattern=Pattern.CUSTOM,
        duration_years=5,
        parameters=RunParameters(budget_cents=BUDGET),
        seed=1,
    )
    with pytest.raises(ValidationError, match="custom_spec"):
        Simulation(bare)


@pytest.mark.parametrize("pattern", list(Pattern))
def test_every_pattern_runs_a_thousand_years_within_bounds(pattern: Pattern) -> None:
    years, summary = run(inputs(pattern, years=1000, seed=7))
    assert len(years) == 1000 and summary.years == 1000
    _finite(msgspec.to_builtins(summary))
    assert all(0.0 <= year.environment.habitability <= 1.0 for year in years)
    assert all(year.economic.balance_cents >= 0 for year in years)


# --- Atmosphere.rescale: a total pressure changed in proportion ---------------------------------


@given(
    pressure=st.floats(1e-300, 1e6),
    change=st.floats(-1000.0, 1000.0),
    co2=st.floats(0.0, 100.0),
)
@settings(max_examples=200, deadline=None)
def test_rescale_is_scale_all_where_the_factor_is_finite(
    pressure: float, change: float, co2: float
) -> None:
    """Bit for bit the arithmetic of before, so no recorded run changes."""
    from domain.physics import Atmosphere

    composition = {"CO2": co2, "N2": 100.0 - co2}
    before, after = Atmosphere(pressure, composition), Atmosphere(pressure, composition)
    total = before.pressure_kpa()
    assert math.isfinite((total + change) / total)
    before.scale_all((total + change) / total)
    after.rescale(total, total + change)
    assert after.columns == before.columns and after.rest_kpa == before.rest_kpa


@pytest.mark.parametrize("pressure", [1e-320, 1e-315, 2.2250738585072014e-308, 1e-306])
def test_rescale_keeps_the_shares_where_the_factor_overflows(pressure: float) -> None:
    """1000 kPa added to a nearly empty atmosphere: the factor is inf, the result is the
    new total with the same shares (as far as a subnormal column kept them)."""
    from domain.physics import Atmosphere

    atmosphere = Atmosphere(pressure, {"CO2": 50.0, "N2": 25.0, "Ar": 0.0})
    total = atmosphere.pressure_kpa()
    assert (total + 1000.0) / total == math.inf
    atmosphere.rescale(total, total + 1000.0)
    assert atmosphere.pressure_kpa() == pytest.approx(1000.0, rel=1e-12)
    shares = atmosphere.composition_pct()
    assert shares["Ar"] == 0.0
    assert shares["CO2"] == pytest.approx(50.0, rel=1e-4)
    assert shares["N2"] == pytest.approx(25.0, rel=1e-3)
