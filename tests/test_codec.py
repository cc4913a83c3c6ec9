"""Stored events are msgspec JSON: they round-trip exactly, refuse float money, and upcast."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID, uuid4

import msgspec
import pytest
from eventsourcing.persistence import MapperDeserialisationError, StoredEvent
from eventsourcing.utils import get_topic
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.aggregate import Event
from domain.run import RunQueued, YearResultRecorded
from domain.values import (
    Atmosphere,
    Biosphere,
    BodyState,
    Economic,
    Environment,
    Geosphere,
    Hydrosphere,
    KeyEvent,
    Pattern,
    RunParameters,
)
from infrastructure.codec import MsgspecMapper, NonFiniteNumber, NullTranscoder, named_state
from projections.canonical import canonical
from projections.decoding import decoder_for
from projections.results import YearRecorded as ResultsYear
from projections.runs import YearRecorded as RunsYear
from projections.store import Note

mapper = MsgspecMapper(transcoder=NullTranscoder())
floats = st.floats(allow_nan=False, allow_infinity=False, width=64)
cents = st.integers(min_value=-(2**62), max_value=2**62)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
gases = st.dictionaries(st.sampled_from(["CO2", "N2", "O2", "Ar", "CH4"]), floats, max_size=5)


environments = st.builds(
    Environment,
    temperature_k=floats,
    pressure_kpa=floats,
    composition_pct=gases,
    liquid_water_kg=floats,
    water_ice_kg=floats,
    biomass_kg=floats,
    habitability=floats,
)
key_events = st.lists(
    st.builds(
        KeyEvent, year=st.integers(1, 1000), name=st.text(), description=st.text(), data=gases
    ),
    max_size=3,
)


def round_trip(event: Any) -> Any:
    return mapper.to_domain_event(mapper.to_stored_event(event))


@settings(max_examples=200)
@given(
    originator=st.uuids(),
    version=st.integers(1, 2000),
    moment=moments,
    year=st.integers(1, 1000),
    spend=cents,
    revenue=cents,
    balance=cents,
    environment=environments,
    events=key_events,
)
def test_year_results_round_trip_exactly(
    originator: UUID,
    version: int,
    moment: datetime,
    year: int,
    spend: int,
    revenue: int,
    balance: int,
    environment: Environment,
    events: list[KeyEvent],
) -> None:
    event = YearResultRecorded(
        originator_id=originator,
        originator_version=version,
        timestamp=moment,
        year=year,
        economic=Economic(spend_cents=spend, revenue_cents=revenue, balance_cents=balance),
        environment=environment,
        key_events=events,
    )
    assert round_trip(event) == event


def make_queued(budget: int = 10**12) -> RunQueued:
    state = BodyState(
        atmosphere=Atmosphere(
            surface_pressure_kpa=0.6, mean_temperature_k=210.0, composition_pct={"CO2": 95.0}
        ),
        hydrosphere=Hydrosphere(water_ice_kg=1e18, liquid_water_kg=0.0),
        geosphere=Geosphere(
            mass_kg=6.4e23,
            mean_radius_km=3389.5,
            surface_gravity_m_s2=3.71,
            bond_albedo=0.25,
            solar_flux_w_m2=586.0,
        ),
        biosphere=Biosphere(),
    )
    return RunQueued(
        originator_id=uuid4(),
        originator_version=1,
        timestamp=datetime(2030, 1, 1, tzinfo=UTC),
        originator_topic="domain.run:SimulationRun",
        twin_id=uuid4(),
        source_body="mars",
        twin_state=state,
        pattern=Pattern.MARS_TERRAFORM,
        duration_years=100,
        parameters=RunParameters(budget_cents=budget, pattern_params={"mirrors": 2.0}),
        seed=2**63 - 1,
        engine_version="1.0.0",
        initiated_by="test",
    )


def test_run_queued_round_trips_with_its_full_inputs() -> None:
    event = make_queued()
    decoded = round_trip(event)
    assert decoded == event
    assert type(decoded.parameters.budget_cents) is int
    assert decoded.seed == 2**63 - 1


def test_a_stored_float_budget_is_refused_on_decode() -> None:
    stored = mapper.to_stored_event(make_queued())
    tampered = stored.state.replace(
        b'"budget_cents":1000000000000', b'"budget_cents":1000000000000.5'
    )
    assert tampered != stored.state
    with pytest.raises(MapperDeserialisationError, match=r"budget_cents"):
        mapper.to_domain_event(
            StoredEvent(stored.originator_id, stored.originator_version, stored.topic, tampered)
        )


# --- upcasting --------------------------------------------------------------------------------


class ProbeRecorded(Event, frozen=True, kw_only=True):
    """Version 1 of an event: only a reading in kelvin."""

    reading_k: float


class ProbeRecordedV3(Event, frozen=True, kw_only=True):
    """The same event two versions later: a unit was added, then an instrument name."""

    class_version: ClassVar[int] = 3
    reading_k: float
    unit: str
    instrument: str

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["unit"] = "K"

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        state["instrument"] = "unknown"


def test_an_old_version_is_upcast_on_decode() -> None:
    old = ProbeRecorded(
        originator_id=uuid4(), originator_version=1, timestamp=datetime.now(UTC), reading_k=210.5
    )
    stored_v1 = mapper.to_stored_event(old)
    assert b"class_version" not in stored_v1.state
    # The class evolved: the stored v1 state is now read as the v3 class.
    as_v3 = StoredEvent(stored_v1.originator_id, 1, get_topic(ProbeRecordedV3), stored_v1.state)
    decoded = mapper.to_domain_event(as_v3)
    assert isinstance(decoded, ProbeRecordedV3)
    assert (decoded.reading_k, decoded.unit, decoded.instrument) == (210.5, "K", "unknown")


def test_a_new_version_records_its_class_version_and_reads_back() -> None:
    event = ProbeRecordedV3(
        originator_id=uuid4(),
        originator_version=1,
        timestamp=datetime.now(UTC),
        reading_k=1.0,
        unit="K",
        instrument="x",
    )
    stored = mapper.to_stored_event(event)
    assert msgspec.json.decode(stored.state)["class_version"] == 3
    assert mapper.to_domain_event(stored) == event


def test_an_unknown_topic_is_a_clear_error() -> None:
    stored = StoredEvent(uuid4(), 1, "domain.run:NoSuchEvent", b"{}")
    with pytest.raises(MapperDeserialisationError, match="NoSuchEvent"):
        mapper.to_domain_event(stored)


def year_with(temperature: float, gas: float = 95.0, data: float = 1.0) -> YearResultRecorded:
    return YearResultRecorded(
        originator_id=uuid4(),
        originator_version=2,
        timestamp=datetime(2030, 1, 1, tzinfo=UTC),
        year=1,
        economic=Economic(spend_cents=1, revenue_cents=0, balance_cents=1),
        environment=Environment(
            temperature_k=temperature,
            pressure_kpa=0.6,
            composition_pct={"CO2": gas},
            liquid_water_kg=0.0,
            water_ice_kg=0.0,
            biomass_kg=0.0,
            habitability=0.0,
        ),
        key_events=[KeyEvent(year=1, name="x", description="y", data={"k": data})],
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize(
    ("where", "field"),
    [
        ("temperature", "environment.temperature_k"),
        ("gas", "environment.composition_pct.CO2"),
        ("data", "key_events[0].data.k"),
    ],
)
def test_a_non_finite_float_is_refused_not_stored_as_null(
    bad: float, where: str, field: str
) -> None:
    """msgspec writes NaN and infinities as null, which then cannot be decoded: refuse."""
    event = year_with(**{"temperature": 210.0, where: bad})
    with pytest.raises(NonFiniteNumber, match=rf"{re.escape(field)} is not a finite number"):
        mapper.to_stored_event(event)


def test_a_text_null_or_an_optional_none_is_still_encoded() -> None:
    """The refusal looks only at floats: the word null in a text or a None field passes."""
    event = year_with(210.0)
    event = msgspec.structs.replace(
        event, key_events=[KeyEvent(year=1, name="null", description="null", data={})]
    )
    assert round_trip(event) == event
    queued = make_queued()
    assert queued.parameters.custom_spec is None
    assert round_trip(queued) == queued


# --- the compact encoding of YearResultRecorded (version 2) ----------------------------------


def mars_year(key_events: list[KeyEvent] | None = None) -> YearResultRecorded:
    """A year as mars_terraform records it (values with the engine's 6 significant digits)."""
    return YearResultRecorded(
        originator_id=uuid4(),
        originator_version=503,
        timestamp=datetime(2026, 11, 29, 17, 23, 20, 281466, tzinfo=UTC),
        year=501,
        economic=Economic(spend_cents=10065000000, revenue_cents=0, balance_cents=94489682000000),
        environment=Environment(
            temperature_k=275.393,
            pressure_kpa=3.91674,
            composition_pct={
                "Ar": 0.3042,
                "CO": 0.009408,
                "CO2": 88.93,
                "H2O": 8.878,
                "N2": 0.4061,
                "O2": 1.109,
                "PFC": 0.3426,
            },
            liquid_water_kg=3.64764e18,
            water_ice_kg=9.46561e17,
            biomass_kg=142498000000000.0,
            habitability=0.660631,
        ),
        key_events=key_events or [],
    )


def test_a_year_is_stored_compact_in_at_most_200_bytes() -> None:
    event = mars_year()
    stored = mapper.to_stored_event(event)
    named = msgspec.json.encode(event)  # version 1: named JSON
    assert len(stored.state) <= 200 < len(named)
    assert stored.state[:1] != b"{"
    values = msgspec.msgpack.decode(stored.state)
    assert values[0] == YearResultRecorded.class_version == 2  # the version is in the state
    assert values[2] == 501 and values[3] == [10065000000, 0, 94489682000000]
    assert mapper.to_domain_event(stored) == event


def test_a_stored_version_1_year_still_decodes() -> None:
    """A store written before the compact encoding: named JSON, no class_version."""
    event = mars_year([KeyEvent(year=501, name="x", description="y", data={"k": 1.5})])
    v1 = StoredEvent(
        event.originator_id,
        event.originator_version,
        get_topic(YearResultRecorded),
        msgspec.json.encode(event),
    )
    assert b"class_version" not in v1.state and b'"economic":{"spend_cents"' in v1.state
    assert mapper.to_domain_event(v1) == event


def test_a_compact_state_names_every_value() -> None:
    """Self-contained: the stored event (state and its id and version columns) holds every
    value of the event; named_state gives them back by name."""
    event = mars_year([KeyEvent(year=501, name="x", description="y", data={"k": 1})])
    stored = mapper.to_stored_event(event)
    named = named_state(stored.topic, stored.state, stored.originator_id, 503)
    assert named.pop("class_version") == 2
    assert named == msgspec.to_builtins(event)


def test_a_compact_state_of_the_wrong_type_is_refused_naming_the_field() -> None:
    stored = mapper.to_stored_event(mars_year())
    values = msgspec.msgpack.decode(stored.state)
    values[3][0] = 1.5  # float money
    tampered = StoredEvent(stored.originator_id, 1, stored.topic, msgspec.msgpack.encode(values))
    with pytest.raises(MapperDeserialisationError, match=r"\$\[3\]\[0\]"):
        mapper.to_domain_event(tampered)


@settings(max_examples=100)
@given(environment=environments, events=key_events, spend=cents)
def test_lean_decoders_read_both_versions_alike(
    environment: Environment, events: list[KeyEvent], spend: int
) -> None:
    """The projections' lean decoders give the same values, as canonical JSON, from a
    version 1 (named) and a version 2 (compact) state of the same event."""
    event = msgspec.structs.replace(
        mars_year(events),
        environment=environment,
        economic=Economic(spend_cents=spend, revenue_cents=1, balance_cents=-spend),
    )
    compact_state = mapper.to_stored_event(event).state
    topic = get_topic(YearResultRecorded)
    for lean in (ResultsYear, RunsYear):
        decode = decoder_for(YearResultRecorded, lean)
        got = [
            decode(Note(1, event.originator_id, 503, topic, state))
            for state in (compact_state, msgspec.json.encode(event))
        ]
        assert got[0] == got[1]
    results = decoder_for(YearResultRecorded, ResultsYear)(
        Note(1, event.originator_id.hex, 503, topic, compact_state)
    )
    assert results.originator_id == event.originator_id
    assert bytes(results.environment) == canonical(event.environment)
    assert bytes(results.key_events) == canonical(event.key_events)


@pytest.mark.parametrize("change", ["longer", "shorter"])
def test_a_compact_value_of_the_wrong_length_is_refused_by_the_projections(change: str) -> None:
    """A compact Struct value with a value too many or too few is an error for the lean
    decoder that copies it as JSON, never a row with a value dropped or missing."""
    stored = mapper.to_stored_event(mars_year())
    values = msgspec.msgpack.decode(stored.state)
    if change == "longer":
        values[3].append(1)  # economic: four values for three fields
    else:
        values[4].pop()  # environment: six values for seven fields
    state = msgspec.msgpack.encode(values)
    note = Note(1, stored.originator_id, 503, stored.topic, state)
    with pytest.raises((TypeError, msgspec.ValidationError)):
        decoder_for(YearResultRecorded, ResultsYear)(note)
