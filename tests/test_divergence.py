"""The engine never emits a non-finite value: inputs that are valid but extreme (built as domain
values directly, past the input validation) end the run with SimulationDiverged naming the
year and the field; the run is failed, not stuck; replay reproduces the failure; and every
command still works on it (docs/simulation.md, Determinism)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import msgspec
import pytest
from conftest import Clock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engine import HOME, SPEC, inputs
from test_replay import twinledger

from domain.catalog import CATALOG
from domain.engine import ENGINE_VERSION, RunInputs, Simulation
from domain.errors import InvalidTransition, SimulationDiverged
from domain.run import SimulationRun, YearResultRecorded
from domain.twin import DigitalTwin
from domain.values import (
    BodyState,
    CustomSpec,
    Pattern,
    RunParameters,
    RunStatus,
    SimulationType,
    TwinStatus,
    YearResult,
)
from domain.world import MAX_CENTS
from infrastructure.application import TwinLedger
from infrastructure.expiry import expire_twins
from projections.runner import Projector

BUDGET = 1_000_000_000_000


def with_value(value: Any, path: tuple[str, ...], new: Any) -> Any:
    """A copy of a msgspec Struct with the field at ``path`` replaced (no validation)."""
    data = msgspec.to_builtins(value)
    holder = data
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = new
    return msgspec.convert(data, type=type(value))


def huge_pressure(pattern: Pattern) -> BodyState:
    state = CATALOG[HOME[pattern]].state
    return with_value(state, ("atmosphere", "surface_pressure_kpa"), 1e308)  # type: ignore[no-any-return]


def outcome(run_inputs: RunInputs) -> tuple[list[YearResult], str | None]:
    """The years a run produces, and the failure that ended it (None if it completed)."""
    simulation = Simulation(run_inputs)
    years: list[YearResult] = []
    try:
        while simulation.year < run_inputs.duration_years:
            years.append(simulation.step())
        simulation.summary()
    except SimulationDiverged as error:
        return years, str(error)
    return years, None


def assert_finite(value: Any, path: str = "") -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            assert_finite(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            assert_finite(item, f"{path}[{index}]")
    elif isinstance(value, float):
        assert math.isfinite(value), path
    elif isinstance(value, int):
        assert abs(value) <= MAX_CENTS, path


# --- the engine, pure --------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", list(Pattern))
def test_a_surface_pressure_of_1e308_fails_at_year_0_naming_the_field(pattern: Pattern) -> None:
    run_inputs = msgspec.structs.replace(inputs(pattern, years=20), state=huge_pressure(pattern))
    years, failure = outcome(run_inputs)
    assert years == []
    assert failure is not None
    assert failure.startswith("start_state.composition_pct.")
    assert "diverged in year 0 (inf)" in failure
    assert outcome(run_inputs) == (years, failure)  # deterministic


@pytest.mark.parametrize(
    ("field", "year", "where"),
    [
        ("temperature_change_k", 2, "environment.temperature_k"),
        ("pressure_change_kpa", 1, "environment.composition_pct.N2"),
        ("liquid_water_change_kg", 2, "environment.liquid_water_kg"),
    ],
)
def test_a_custom_spec_change_of_1_7e308_fails_in_the_year_it_overflows(
    field: str, year: int, where: str
) -> None:
    spec = msgspec.structs.replace(SPEC, **{field: 1.7e308})
    run_inputs = inputs(Pattern.CUSTOM, years=20, custom_spec=spec)
    years, failure = outcome(run_inputs)
    assert failure == f"{where}: the simulation diverged in year {year} (inf)"
    assert [result.year for result in years] == list(range(1, year))
    assert_finite(msgspec.to_builtins(years))


def test_money_beyond_a_bigint_fails_the_run() -> None:
    spec = CustomSpec(name="mint", annual_cost_cents=1, annual_revenue_cents=2**62)
    years, failure = outcome(inputs(Pattern.CUSTOM, years=10, custom_spec=spec))
    assert failure is not None
    assert failure.startswith("economic.balance_cents: the simulation diverged in year 7 (")
    assert failure.endswith(" cents, beyond the 9223372036854775807 a BIGINT holds)")
    assert [year.year for year in years] == list(range(1, 7))
    assert_finite(msgspec.to_builtins(years))


STATE_FIELDS = [
    ("atmosphere", "surface_pressure_kpa"),
    ("atmosphere", "mean_temperature_k"),
    ("hydrosphere", "water_ice_kg"),
    ("hydrosphere", "liquid_water_kg"),
    ("hydrosphere", "other_liquids_kg"),
    ("geosphere", "mean_radius_km"),
    ("geosphere", "surface_gravity_m_s2"),
    ("geosphere", "solar_flux_w_m2"),
    ("geosphere", "regolith_co2_kg"),
    ("biosphere", "biomass_kg"),
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pattern=st.sampled_from(list(Pattern)),
    field=st.sampled_from(STATE_FIELDS),
    value=st.one_of(
        st.floats(min_value=1e250, max_value=1.7976931348623157e308),
        st.floats(min_value=0.0, max_value=1e-300),
        st.sampled_from([1e308, 1.7e308, 5e-324, 0.0]),
    ),
)
def test_extreme_start_states_complete_finite_or_diverge_by_name(
    pattern: Pattern, field: tuple[str, str], value: float
) -> None:
    state = with_value(CATALOG[HOME[pattern]].state, field, value)
    run_inputs = msgspec.structs.replace(inputs(pattern, years=25), state=state)
    years, failure = outcome(run_inputs)  # no other exception escapes
    assert_finite(msgspec.to_builtins(years))
    if failure is not None:
        assert " the simulation diverged in year " in failure
    assert outcome(run_inputs) == (years, failure)


# --- through the ledger (SQLite and PostgreSQL) ------------------------------------------------


def extreme_run(
    ledger: TwinLedger,
    pattern: Pattern,
    *,
    state: BodyState | None = None,
    spec: CustomSpec | None = None,
    years: int = 20,
) -> UUID:
    """A twin and a queued run built from domain values directly, past the input checks."""
    now = ledger.clock()
    body = CATALOG[HOME[pattern]]
    twin = DigitalTwin.clone(
        name=f"extreme {pattern}",
        description="",
        source_body=body.key,
        solar_system=body.solar_system,
        created_by="test",
        simulation_type=SimulationType.CUSTOM,
        state=state or body.state,
        simulation_parameters={},
        expires_at=now + timedelta(days=1),
    )
    custom = spec if spec is not None else SPEC if pattern == Pattern.CUSTOM else None
    run = SimulationRun.queue(
        twin_id=twin.id,
        source_body=body.key,
        twin_state=twin.state,
        pattern=pattern,
        duration_years=years,
        parameters=RunParameters(budget_cents=BUDGET, custom_spec=custom),
        seed=42,
        engine_version=ENGINE_VERSION,
        initiated_by="test",
    )
    ledger.save_and_notify(twin, run)
    return run.id


def recorded_years(ledger: TwinLedger, run_id: UUID) -> list[dict[str, Any]]:
    events = ledger.repository.event_store.get(run_id)
    return [msgspec.to_builtins(e.to_result()) for e in events if isinstance(e, YearResultRecorded)]


@pytest.fixture
def projector(ledger: TwinLedger) -> Iterator[Projector]:
    assert ledger.database is not None
    with Projector(ledger.database) as running:
        yield running


@pytest.mark.parametrize("pattern", list(Pattern))
def test_an_extreme_run_fails_and_every_command_still_works(
    ledger: TwinLedger,
    database_url: str,
    projector: Projector,
    clock: Clock,
    pattern: Pattern,
) -> None:
    run_id = extreme_run(ledger, pattern, state=huge_pressure(pattern))
    run = ledger.execute_run(run_id, chunk_years=1)
    assert run.status == RunStatus.FAILED
    assert run.error_message is not None
    assert run.error_message.startswith("SimulationDiverged: start_state.composition_pct.")
    assert "diverged in year 0 (inf)" in run.error_message
    assert recorded_years(ledger, run_id) == []
    twin_id = run.twin_id
    assert ledger.get_twin(twin_id).status != TwinStatus.RUNNING_SIMULATION

    code, out, _ = twinledger(database_url, "show-run", str(run_id))
    assert code == 0 and "failed" in out
    report = ledger.replay_run(run_id)  # the same failure, word for word
    assert report.identical and report.failure == run.error_message
    code, out, _ = twinledger(database_url, "replay", str(run_id))
    assert code == 0 and "then the same failure: SimulationDiverged" in out
    with pytest.raises(InvalidTransition, match="already ended"):
        ledger.cancel_run(run_id)
    code, _, err = twinledger(database_url, "cancel", str(run_id))
    assert code == 2 and "already ended" in err
    code, _, err = twinledger(database_url, "execute", str(run_id))
    assert code == 2 and "already ended" in err

    # expire still works for the whole store, this twin and a twin with a run queued on
    # an extreme custom spec included.
    other = extreme_run(
        ledger, Pattern.CUSTOM, spec=msgspec.structs.replace(SPEC, pressure_change_kpa=1.7e308)
    )
    clock.advance(days=2)
    projector.catch_up()
    report_expiry = expire_twins(ledger, projector)
    assert report_expiry.expired == 2 and report_expiry.runs_cancelled == 1
    assert ledger.get_run(other).status == RunStatus.CANCELLED


def test_years_before_the_divergence_are_recorded_finite_and_replay_matches(
    ledger: TwinLedger, database_url: str
) -> None:
    spec = msgspec.structs.replace(SPEC, temperature_change_k=1.7e308)
    run_id = extreme_run(ledger, Pattern.CUSTOM, spec=spec)
    run = ledger.execute_run(run_id, chunk_years=1)
    assert run.status == RunStatus.FAILED
    assert run.error_message == (
        "SimulationDiverged: environment.temperature_k: the simulation diverged in year 2 (inf)"
    )
    years = recorded_years(ledger, run_id)
    assert [year["year"] for year in years] == [1]
    assert_finite(years)
    report = ledger.replay_run(run_id)
    assert report.identical and report.years == 1 and report.failure == run.error_message

    ledger.delete_twin(run.twin_id, reason="cleanup")
    assert ledger.get_twin(run.twin_id).status == TwinStatus.DELETED


def test_replay_names_a_different_failure(ledger: TwinLedger, database_url: str) -> None:
    """Tampering with the recorded failure (or a changed engine) is a divergence."""
    from storage import rewrite_stored_event

    spec = msgspec.structs.replace(SPEC, temperature_change_k=1.7e308)
    run_id = extreme_run(ledger, Pattern.CUSTOM, spec=spec)
    run = ledger.execute_run(run_id, chunk_years=1)

    def change(state: dict[str, Any]) -> None:
        state["error_message"] = state["error_message"].replace("year 2", "year 3")

    rewrite_stored_event(database_url, run_id, run.version, change)
    report = ledger.replay_run(run_id)
    assert not report.identical
    assert report.divergence is not None and report.divergence.field == "failure"
    assert "year 3" in report.divergence.recorded and "year 2" in report.divergence.replayed
    code, out, _ = twinledger(database_url, "replay", str(run_id))
    assert code == 1 and "field failure" in out


def test_a_run_queued_on_extreme_inputs_can_be_cancelled_and_its_twin_deleted(
    ledger: TwinLedger,
) -> None:
    run_id = extreme_run(
        ledger, Pattern.MARS_TERRAFORM, state=huge_pressure(Pattern.MARS_TERRAFORM)
    )
    ledger.cancel_run(run_id, reason="no")
    run = ledger.get_run(run_id)
    assert run.status == RunStatus.CANCELLED
    ledger.delete_twin(run.twin_id)
    assert ledger.get_twin(run.twin_id).status == TwinStatus.DELETED


def test_a_summary_is_checked_too() -> None:
    """The summary is published in RunCompleted: a non-finite metric there fails the run."""
    simulation = Simulation(inputs(Pattern.CUSTOM, years=2))
    simulation.step()
    simulation.step()
    simulation.valued_potential = math.inf  # as if a sum of the year had overflowed
    simulation.valued_output = math.inf
    with pytest.raises(SimulationDiverged, match=r"^summary\.success_metrics\.resource_efficiency"):
        simulation.summary()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    field=st.sampled_from(
        [
            "temperature_change_k",
            "pressure_change_kpa",
            "liquid_water_change_kg",
            "biomass_growth_rate",
        ]
    ),
    value=st.floats(min_value=-1.7976931348623157e308, max_value=1.7976931348623157e308),
    revenue=st.integers(min_value=0, max_value=2**63 - 1),
    gas=st.floats(min_value=-1.7e308, max_value=1.7e308),
)
def test_extreme_custom_specs_complete_finite_or_diverge_by_name(
    field: str, value: float, revenue: int, gas: float
) -> None:
    spec = msgspec.structs.replace(
        SPEC, annual_revenue_cents=revenue, gas_change_pct={"O2": gas}, **{field: value}
    )
    run_inputs = inputs(Pattern.CUSTOM, years=25, custom_spec=spec)
    years, failure = outcome(run_inputs)
    assert_finite(msgspec.to_builtins(years))
    if failure is not None:
        assert " the simulation diverged in year " in failure
    assert outcome(run_inputs) == (years, failure)


def test_a_non_finite_internal_value_is_named_even_when_nothing_published_shows_it() -> None:
    """Europa's physics never reads regolith CO2: a NaN there changes no published number,
    yet the run must not carry it on."""
    simulation = Simulation(inputs(Pattern.EUROPA_OCEAN, years=5))
    simulation.step()
    simulation.world.regolith_co2_kg = math.nan
    with pytest.raises(SimulationDiverged) as raised:
        simulation.step()
    assert str(raised.value) == "world.regolith_co2_kg: the simulation diverged in year 2 (nan)"
    assert (raised.value.year, raised.value.field) == (2, "world.regolith_co2_kg")


def test_money_beyond_a_bigint_in_a_key_event_fails_the_run() -> None:
    spec = CustomSpec(name="megaproject", annual_cost_cents=2**70)
    years, failure = outcome(inputs(Pattern.CUSTOM, years=3, custom_spec=spec))
    assert years == []
    assert failure is not None
    assert failure.startswith("key_events[0].data.program_cents: the simulation diverged in year 1")
