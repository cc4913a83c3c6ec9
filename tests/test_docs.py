"""The docs stay true: every event class and each of its fields is in the event catalogue."""

from __future__ import annotations

from pathlib import Path

import pytest

import domain.experiment
import domain.run
import domain.twin
from domain.aggregate import Event

CATALOGUE = (Path(__file__).parent.parent / "docs" / "architecture.md").read_text()
COMMON = {"originator_id", "originator_version", "timestamp", "originator_topic"}


def events() -> list[type[Event]]:
    found: list[type[Event]] = []
    for module in (domain.twin, domain.run, domain.experiment):
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Event)
                and value.__module__ == module.__name__
            ):
                found.append(value)
    return found


@pytest.mark.parametrize("event", events(), ids=lambda e: e.__name__)
def test_every_event_and_field_is_catalogued(event: type[Event]) -> None:
    row = next(
        (line for line in CATALOGUE.splitlines() if line.startswith(f"| {event.__name__} |")), None
    )
    assert row is not None, f"{event.__name__} is missing from docs/architecture.md"
    for field in set(event.__struct_fields__) - COMMON:
        assert field in row, f"{event.__name__}.{field} is missing from its catalogue row"
