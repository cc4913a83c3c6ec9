"""Bad input gets a clear error naming the field, and nothing is written (counted in events)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.errors import NotFound, TwinLedgerError, ValidationError
from infrastructure.application import TwinLedger
from infrastructure.inputs import MAX_BODY_FILE_BYTES

BUDGET = 1_000_000_000_000
fixture_settings = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def refused(ledger: TwinLedger, field: str, command: Callable[[], Any]) -> TwinLedgerError:
    """Run a command that must be refused naming ``field``, and check nothing was written."""
    before = ledger.event_count()
    with pytest.raises(TwinLedgerError) as caught:
        command()
    assert str(caught.value).startswith(f"{field}:"), str(caught.value)
    assert "\n" not in str(caught.value)
    assert ledger.event_count() == before
    return caught.value


@pytest.fixture
def twin_id(ledger: TwinLedger) -> str:
    return str(ledger.clone_twin(name="Mars A", body="mars"))


def valid_body() -> dict[str, Any]:
    return {
        "key": "kepler-22b",
        "name": "Kepler-22b",
        "state": {
            "atmosphere": {
                "surface_pressure_kpa": 120.0,
                "mean_temperature_k": 262.0,
                "composition_pct": {"N2": 80.0, "CO2": 20.0},
            },
            "hydrosphere": {"water_ice_kg": 1e20, "liquid_water_kg": 1e21},
            "geosphere": {
                "mass_kg": 2e25,
                "mean_radius_km": 15000.0,
                "surface_gravity_m_s2": 12.0,
                "bond_albedo": 0.3,
                "solar_flux_w_m2": 1100.0,
            },
        },
    }


# --- cloning ----------------------------------------------------------------------------------


def test_unknown_body(ledger: TwinLedger) -> None:
    error = refused(ledger, "body", lambda: ledger.clone_twin(name="X", body="pluto"))
    assert "pluto" in str(error) and "mars" in str(error)


@pytest.mark.parametrize("name", ["", "Mars\x00A", "Mars\nA", "Mars\x1b[31m", "M" * 201])
def test_bad_names(ledger: TwinLedger, name: str) -> None:
    refused(ledger, "name", lambda: ledger.clone_twin(name=name, body="mars"))


def test_expiry_in_the_past(ledger: TwinLedger) -> None:
    past = ledger.clock() - timedelta(seconds=1)
    refused(ledger, "expires_at", lambda: ledger.clone_twin(name="X", body="mars", expires_at=past))


def test_a_body_file_clones_a_described_body(ledger: TwinLedger, tmp_path: Path) -> None:
    path = tmp_path / "body.json"
    path.write_text(json.dumps(valid_body()))
    twin = ledger.get_twin(ledger.clone_twin(name="K", body_file=str(path)))
    assert twin.source_body == "kepler-22b"
    assert twin.state.atmosphere.composition_pct == {"N2": 80.0, "CO2": 20.0}


def test_malformed_body_file(ledger: TwinLedger, tmp_path: Path) -> None:
    path = tmp_path / "body.json"
    path.write_text('{"key": "x", "name": ')
    error = refused(ledger, "from_file", lambda: ledger.clone_twin(name="X", body_file=str(path)))
    assert "not valid JSON" in str(error)


def test_oversized_body_file(ledger: TwinLedger, tmp_path: Path) -> None:
    path = tmp_path / "body.json"
    body = valid_body()
    body["description"] = "x" * (MAX_BODY_FILE_BYTES + 1)
    path.write_text(json.dumps(body))
    error = refused(ledger, "from_file", lambda: ledger.clone_twin(name="X", body_file=str(path)))
    assert "limit" in str(error)


def test_missing_body_file(ledger: TwinLedger, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.json")
    refused(ledger, "from_file", lambda: ledger.clone_twin(name="X", body_file=missing))


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (
            ("state", "atmosphere", "mean_temperature_k"),
            -5.0,
            "state.atmosphere.mean_temperature_k",
        ),
        (("state", "geosphere", "bond_albedo"), 1.5, "state.geosphere.bond_albedo"),
        (("state", "hydrosphere", "liquid_water_kg"), "lots", "state.hydrosphere.liquid_water_kg"),
        (
            ("state", "atmosphere", "composition_pct"),
            {"N2": 90.0, "O2": 40.0},
            "state.atmosphere.composition_pct",
        ),
        (("key",), "Has Spaces", "key"),
        (("state", "geosphere", "unknown_field"), 1.0, "state.geosphere.unknown_field"),
    ],
)
def test_invalid_body_file_fields(
    ledger: TwinLedger, tmp_path: Path, path: tuple[str, ...], value: Any, field: str
) -> None:
    body = valid_body()
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    file = tmp_path / "body.json"
    file.write_text(json.dumps(body))
    refused(ledger, field, lambda: ledger.clone_twin(name="X", body_file=str(file)))


# --- queueing runs ----------------------------------------------------------------------------


def queue(ledger: TwinLedger, twin_id: str, **overrides: Any) -> Any:
    arguments: dict[str, Any] = {
        "pattern": "mars_terraform",
        "duration_years": 10,
        "budget_cents": BUDGET,
        "seed": 1,
    }
    arguments.update(overrides)
    return ledger.queue_run(twin_id, **arguments)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"pattern": "jupiter_mining"}, "pattern"),
        ({"duration_years": 0}, "duration_years"),
        ({"duration_years": 1001}, "duration_years"),
        ({"duration_years": 10.0}, "duration_years"),
        ({"budget_cents": -1}, "budget_cents"),
        ({"budget_cents": 1000.5}, "budget_cents"),
        ({"budget_cents": 1000.0}, "budget_cents"),
        ({"budget_cents": "1000"}, "budget_cents"),
        ({"budget_cents": True}, "budget_cents"),
        ({"tech_level": 11}, "tech_level"),
        ({"priority": "urgent"}, "priority"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**63}, "seed"),
        ({"pattern_params": {"mirrors": float("nan")}}, "pattern_params.mirrors"),
        ({"pattern": "custom"}, "custom_spec"),
        ({"initiated_by": "bob\x07"}, "initiated_by"),
    ],
)
def test_bad_run_inputs(
    ledger: TwinLedger, twin_id: str, overrides: dict[str, Any], field: str
) -> None:
    refused(ledger, field, lambda: queue(ledger, twin_id, **overrides))


def test_money_errors_say_cents(ledger: TwinLedger, twin_id: str) -> None:
    error = refused(ledger, "budget_cents", lambda: queue(ledger, twin_id, budget_cents=99.99))
    assert "integer number of GCC cents" in str(error)


def test_a_bad_custom_spec(ledger: TwinLedger, twin_id: str) -> None:
    spec = {"name": "x", "annual_cost_cents": 10.5}
    refused(
        ledger,
        "custom_spec.annual_cost_cents",
        lambda: queue(ledger, twin_id, pattern="custom", custom_spec=spec),
    )


def test_unknown_ids(ledger: TwinLedger, twin_id: str) -> None:
    missing = str(uuid4())
    assert isinstance(refused(ledger, "twin_id", lambda: queue(ledger, missing)), NotFound)
    assert isinstance(refused(ledger, "run_id", lambda: ledger.execute_run(missing)), NotFound)
    assert isinstance(refused(ledger, "run_id", lambda: ledger.cancel_run(missing)), NotFound)
    assert isinstance(refused(ledger, "twin_id", lambda: ledger.delete_twin(missing)), NotFound)
    assert isinstance(
        refused(ledger, "twin_id", lambda: queue(ledger, "not-an-id")), ValidationError
    )
    # A run id is not a twin id.
    run_id = str(queue(ledger, twin_id))
    refused(ledger, "twin_id", lambda: queue(ledger, run_id))


# --- properties -------------------------------------------------------------------------------


@fixture_settings
@given(
    budget=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=12),
        st.integers(max_value=-1),
        st.booleans(),
        st.decimals(allow_nan=False, allow_infinity=False),
    )
)
def test_any_budget_that_is_not_non_negative_integer_cents_is_refused(
    ledger: TwinLedger, twin_id: str, budget: Any
) -> None:
    refused(ledger, "budget_cents", lambda: queue(ledger, twin_id, budget_cents=budget))


@fixture_settings
@given(
    name=st.text(min_size=1, max_size=40).filter(
        lambda s: any(ord(c) < 32 or 127 <= ord(c) < 160 for c in s)
    )
)
def test_any_name_with_control_characters_is_refused(ledger: TwinLedger, name: str) -> None:
    refused(ledger, "name", lambda: ledger.clone_twin(name=name, body="mars"))


@fixture_settings
@given(years=st.one_of(st.integers(max_value=0), st.integers(min_value=1001)))
def test_any_duration_outside_1_to_1000_is_refused(
    ledger: TwinLedger, twin_id: str, years: int
) -> None:
    refused(ledger, "duration_years", lambda: queue(ledger, twin_id, duration_years=years))


@given(
    margin=st.one_of(
        st.integers(min_value=2**62 + 1),
        st.floats(min_value=2.0**62, exclude_min=True, allow_infinity=False),
    ),
    at_or_below=st.one_of(st.integers(0, 2**62), st.floats(0, 2.0**62)),
)
@settings(max_examples=50, deadline=None)
def test_a_search_threshold_is_refused_beyond_the_bound_of_cents_and_kept_within(
    margin: int | float, at_or_below: int | float
) -> None:
    """early_stop.margin and objective.min_improvement: amounts of cents for a cost objective,
    bounded as every amount of cents is (domain.world.MAX_GIVEN_CENTS), whatever their size."""
    from domain.world import MAX_GIVEN_CENTS
    from tests.test_experiments import small_spec

    assert MAX_GIVEN_CENTS == 2**62
    for overrides, field in [
        ({"early_stop": {"at_year": 5, "margin": margin}}, "early_stop.margin"),
        (
            {"objective": {"kind": "maximize_habitability", "min_improvement": margin}},
            "objective.min_improvement",
        ),
    ]:
        with pytest.raises(ValidationError, match=rf"^{field}: "):
            small_spec(**overrides)
    kept = small_spec(early_stop={"at_year": 5, "margin": at_or_below}).spec()
    assert kept.early_stop_margin == at_or_below
    objective = {"kind": "maximize_habitability", "min_improvement": at_or_below}
    assert small_spec(objective=objective).spec().min_improvement == float(at_or_below)


PRINTABLE = st.text(st.characters(categories=("L", "N", "P", "Zs")), max_size=5)
"""Text without control characters (those are refused first, by the input's whole-tree check)."""


@given(
    value=st.one_of(
        PRINTABLE,
        st.booleans(),
        st.none(),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(PRINTABLE, st.integers(), max_size=2),
    )
)
@settings(max_examples=50, deadline=None)
def test_a_value_no_member_of_a_union_accepts_is_named_by_its_field(value: Any) -> None:
    """early_stop.margin is an integer or a number: anything else is refused at the field,
    never at pydantic's name for a member of the union ('early_stop.margin.int')."""
    from tests.test_experiments import small_spec

    with pytest.raises(ValidationError) as caught:
        small_spec(early_stop={"at_year": 5, "margin": value})
    assert str(caught.value) == "early_stop.margin: Input should be a valid integer or number"


def test_a_parameter_of_no_accepted_type_is_named_by_its_key(ledger: TwinLedger) -> None:
    """A twin's simulation parameter is text, an integer, a number or a boolean; a list is
    refused naming the parameter, with the types it may have, and nothing is written."""
    error = refused(
        ledger,
        "simulation_parameters.albedo",
        lambda: ledger.clone_twin(
            name="Mars A", body="mars", simulation_parameters={"albedo": [0.25]}
        ),
    )
    assert str(error).endswith("a valid string or integer or number or boolean")
    long = refused(
        ledger,
        "simulation_parameters.note",
        lambda: ledger.clone_twin(
            name="Mars A", body="mars", simulation_parameters={"note": "x" * 201}
        ),
    )
    assert "200 characters" in str(long)
