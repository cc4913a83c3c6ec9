"""Catching up and rebuilding decode compact states inline (``CatchUp._decode``, the fast path
of ``Projection.fast``): each projection must get exactly what its own decoder gives, and an
event that does not decode must still be named, never skipped or half read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from eventsourcing.utils import get_topic
from hypothesis import HealthCheck, given, settings

from domain.run import YearResultRecorded
from domain.values import Economic, Environment, KeyEvent
from projections.decoding import UnhandledEvent
from projections.runner import Projector
from projections.store import Note
from tests.test_codec import cents, environments, key_events, mapper, mars_year

TOPIC = get_topic(YearResultRecorded)


@pytest.fixture
def projector(tmp_path: Path) -> Iterator[Projector]:
    with Projector.open(f"sqlite:///{tmp_path}/ledger.db") as opened:
        yield opened


def notes_of(event: YearResultRecorded, position: int = 1) -> list[Note]:
    """The event stored compact (version 2) and named (version 1), as notes."""
    compact = mapper.to_stored_event(event).state
    named = msgspec.json.encode(event)
    return [
        Note(position, event.originator_id, 503, TOPIC, compact),
        Note(position + 1, event.originator_id, 503, TOPIC, named),
    ]


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(environment=environments, events=key_events, spend=cents)
def test_inline_decoding_gives_what_each_projection_decodes(
    projector: Projector, environment: Environment, events: list[KeyEvent], spend: int
) -> None:
    event = msgspec.structs.replace(
        mars_year(events),
        environment=environment,
        economic=Economic(spend_cents=spend, revenue_cents=1, balance_cents=-spend),
    )
    notes = notes_of(event)
    for projection in (projector.by_name["runs"], projector.by_name["results"]):
        assert TOPIC in projection.fast
        got = projector._decode(projection, notes)
        assert got == [projection.decode(note) for note in notes]
        assert [type(d.data) for d in got] == [projection.handles[YearResultRecorded]] * 2


@pytest.mark.parametrize("damage", ["truncated", "too long", "wrong type"])
def test_a_compact_state_that_does_not_decode_is_named(projector: Projector, damage: str) -> None:
    """The inline path hands a state it cannot read to the projection's decoder, which names
    the event (its position and topic): the batch is then parked event by event as before."""
    good = notes_of(mars_year())[0]
    state = good.state
    if damage == "truncated":
        state = state[:-3]
    elif damage == "too long":
        values = msgspec.msgpack.decode(state)
        values[3].append(1)  # economic with a value too many
        state = msgspec.msgpack.encode(values)
    else:
        values = msgspec.msgpack.decode(state)
        values[2] = "five hundred and one"  # the year
        state = msgspec.msgpack.encode(values)
    bad = good._replace(position=7, state=state)
    for projection in (projector.by_name["runs"], projector.by_name["results"]):
        if damage == "too long" and projection.name == "runs":
            # runs reads no economic values: nothing to refuse
            notes = [good, bad]
            assert projector._decode(projection, notes) == list(map(projection.decode, notes))
            continue
        with pytest.raises(UnhandledEvent) as raised:
            projector._decode(projection, [good, bad])
        assert raised.value.position == 7 and raised.value.topic == TOPIC
