"""Lean decoding: a projection reads only the fields it needs from an event's stored state.

Each projection names, per event class, a small msgspec Struct with the fields it uses; msgspec
skips the rest of the JSON without building objects for it. Fields a projection copies into a
JSON column unchanged (a year's economic and environment values, the cloned state, a summary)
are ``msgspec.Raw``: the stored bytes themselves, so whatever fields the event holds today or
later reach the table without the projection naming them.

Versioned events (``class_version`` > 1, infrastructure/codec.py) are upcast first, like the
application's mapper does, then decoded leanly.

What is never skipped silently: an event whose topic names no class this code knows, or whose
state does not decode, raises ``UnhandledEvent`` naming its position and topic.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

import msgspec
from eventsourcing.utils import get_topic, resolve_topic

import domain.experiment
import domain.run
import domain.twin
from domain.aggregate import Event
from projections.store import Note


class Lean(msgspec.Struct, kw_only=True):
    """Fields every event has; lean types add the ones a projection reads."""

    originator_id: UUID
    timestamp: datetime


class Decoded(NamedTuple):
    position: int
    event: type[Event]
    data: Any  # an instance of the projection's lean type for this event


class UnhandledEvent(Exception):
    """An event a projection cannot handle. Names the event and its position in the log."""

    def __init__(self, note: Note, reason: str) -> None:
        self.position = note.position
        self.topic = note.topic
        self.reason = reason
        super().__init__(
            f"event {note.position} ({note.topic}, {note.originator_id} "
            f"version {note.originator_version}): {reason}"
        )


def known_events() -> dict[str, type[Event]]:
    """Every event class of the ledger's aggregates, by topic."""
    _ = (domain.experiment, domain.run, domain.twin)  # imported: their events are registered
    found: dict[str, type[Event]] = {}
    pending: list[type[Any]] = [Event]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls is not Event and not cls.__name__.startswith("_"):
            found[get_topic(cls)] = cls
    return found


def is_event_topic(topic: str) -> bool:
    """True if ``topic`` names an event class this code can import."""
    try:
        cls = resolve_topic(topic)
    except Exception:
        return False
    return isinstance(cls, type) and issubclass(cls, Event)


_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def _decoder(lean: type[Any]) -> msgspec.json.Decoder[Any]:
    if lean not in _decoders:
        _decoders[lean] = msgspec.json.Decoder(lean)
    return _decoders[lean]


def decoder_for(event: type[Event], lean: type[Any]) -> Callable[[bytes], Any]:
    """A function from stored state to ``lean``, upcasting first if the class is versioned."""
    decode = _decoder(lean).decode
    target: int = getattr(event, "class_version", 1)
    if target == 1:
        return decode
    encode = msgspec.json.encode

    def upcast_then_decode(state: bytes) -> Any:
        data: dict[str, Any] = msgspec.json.decode(state)
        version = data.pop("class_version", 1)
        while version < target:
            getattr(event, f"upcast_v{version}_v{version + 1}")(data)
            version += 1
        return decode(encode(data))

    return upcast_then_decode


def raw_text(raw: msgspec.Raw) -> str:
    """A Raw JSON value as text."""
    return bytes(raw).decode()


def is_empty_array(raw: msgspec.Raw) -> bool:
    return bytes(raw).strip() in (b"[]", b"")
