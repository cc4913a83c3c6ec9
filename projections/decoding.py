"""Lean decoding: a projection reads only the fields it needs from an event's stored state.

Each projection names, per event class, a small msgspec Struct with the fields it uses; msgspec
skips the rest of the JSON without building objects for it. Fields a projection copies into a
JSON column unchanged (a year's economic and environment values, the cloned state, a summary)
are ``msgspec.Raw``: the stored bytes themselves, so whatever fields the event holds today or
later reach the table without the projection naming them.

Versioned events (``class_version`` > 1, infrastructure/codec.py) are upcast first, like the
application's mapper does, then decoded leanly. Compact states (YearResultRecorded: positional
msgpack, no field names) are decoded positionally, skipping the values the projection does not
read, as named JSON is.

What is never skipped silently: an event whose topic names no class this code knows, or whose
state does not decode, raises ``UnhandledEvent`` naming its position and topic.
"""

from __future__ import annotations

import typing
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
from domain.errors import Picklable
from infrastructure.codec import compact, is_compact, is_compact_class, version_of
from projections.store import Note


class Lean(msgspec.Struct, kw_only=True):
    """Fields every event has; lean types add the ones a projection reads."""

    originator_id: UUID
    timestamp: datetime


class Decoded(NamedTuple):
    position: int
    event: type[Event]
    data: Any  # an instance of the projection's lean type for this event


class UnhandledEvent(Picklable, Exception):
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
_sorted = msgspec.json.Encoder(order="sorted").encode


def _decoder(lean: type[Any]) -> msgspec.json.Decoder[Any]:
    if lean not in _decoders:
        _decoders[lean] = msgspec.json.Decoder(lean)
    return _decoders[lean]


def decoder_for(event: type[Event], lean: type[Any]) -> Callable[[Note], Any]:
    """A function from a notification to ``lean``, upcasting first if the class is versioned.

    The ``msgspec.Raw`` fields of a versioned event (``raw_is_canonical``) hold canonical JSON
    (projections/canonical.py) whatever the stored form: a compact state has no JSON to copy,
    so its values are encoded, and a named state is upcast through a dict and encoded again
    anyway; both with sorted keys, so the projections copy them as they are.
    """
    decode = _decoder(lean).decode
    target: int = getattr(event, "class_version", 1)
    if target == 1:
        return lambda note: decode(note.state)

    def upcast(data: dict[str, Any]) -> Any:
        version = data.pop("class_version", 1)
        while version < target:
            getattr(event, f"upcast_v{version}_v{version + 1}")(data)
            version += 1
        return decode(_sorted(data))

    if not is_compact_class(event):
        return lambda note: upcast(msgspec.json.decode(note.state))
    row_decode, build, version = compact_decoder(event, lean)
    layout = compact(event)

    def either(note: Note) -> Any:
        state = note.state
        if not is_compact(state):  # named JSON: written before the class was compact
            return upcast(msgspec.json.decode(state))
        try:  # the current version's layout, straight into the lean type
            row = row_decode(state)
        except msgspec.ValidationError:
            if version_of(state) == version:
                raise
        else:
            if row.class_version == version:
                return build(row, note.originator_id, note.originator_version)
        return upcast(layout.named(state, note.originator_id, note.originator_version))

    return either


_PLAIN = (int, str, float, bool, UUID, datetime)


def builder_for(event: type[Event], lean: type[Any]) -> Callable[[Any], Any] | None:
    """A function from an ``event`` object (one this process just saved) to ``lean``, giving
    what ``decoder_for`` gives from its stored state, without reading or decoding it; None if
    that cannot be promised for this class.

    Only for versioned classes (``raw_is_canonical``: their Raw fields hold canonical JSON,
    which encoding the value with sorted keys gives, whatever its stored form) whose lean
    fields are Raw or plain values the event holds under the same names. Tested against the
    decoder (tests/test_keep_current.py)."""
    if not raw_is_canonical(event):
        return None
    try:
        held = {f.name for f in msgspec.structs.fields(event)}
    except TypeError:
        return None
    arguments: list[str] = []
    for f in msgspec.structs.fields(lean):
        if f.name not in held:
            return None
        if f.type is msgspec.Raw:
            arguments.append(f"{f.name}=_Raw(_sorted(event.{f.name}))")
        elif f.type in _PLAIN:
            arguments.append(f"{f.name}=event.{f.name}")
        else:
            return None
    namespace: dict[str, Any] = {"_Raw": msgspec.Raw, "_sorted": _sorted, "_lean": lean}
    exec(f"def build(event):\n    return _lean({', '.join(arguments)})\n", namespace)
    build: Callable[[Any], Any] = namespace["build"]
    return build


def raw_is_canonical(event: type[Event]) -> bool:
    """True if ``decoder_for(event, ...)`` gives canonical JSON in its Raw fields."""
    return getattr(event, "class_version", 1) > 1


CompactDecoder = tuple[Callable[[bytes], Any], Callable[[Any, Any, int], Any], int]


def fast_decoder(event: type[Event], lean: type[Any]) -> CompactDecoder | None:
    """``compact_decoder`` for a class stored compact whose decoder upcasts (its fast path:
    a compact state of the current version, decoded straight into ``lean``), else None.

    For callers that decode many notes in one loop (projections/catchup.py): they call the
    row decode and ``build`` themselves and hand anything else (a named state, an older
    layout, an error) to ``decoder_for``'s function, which decodes it as always."""
    if getattr(event, "class_version", 1) == 1 or not is_compact_class(event):
        return None
    return compact_decoder(event, lean)


_compact_decoders: dict[tuple[type[Any], type[Any]], CompactDecoder] = {}


def compact_decoder(event: type[Event], lean: type[Any]) -> CompactDecoder:
    """``_compact_decoder``, made once per (event, lean type): every caller shares it."""
    key = (event, lean)
    if key not in _compact_decoders:
        _compact_decoders[key] = _compact_decoder(event, lean)
    return _compact_decoders[key]


def _compact_decoder(event: type[Event], lean: type[Any]) -> CompactDecoder:
    """How a compact state (infrastructure/codec.py) of ``event``'s current version is decoded
    straight into ``lean``: (the msgpack decode of the state into a row, the function from a
    row, originator id and version to ``lean``, the version). The values the lean type does
    not name are skipped undecoded (Raw); the ones it copies as JSON (Raw) are decoded
    untyped and encoded as canonical JSON. A row whose ``class_version`` is not the version
    is of another layout, not for ``build``."""
    layout = compact(event)
    wanted = {f.name: f.type for f in msgspec.structs.fields(lean)}
    types = {f.name: f.type for f in msgspec.structs.fields(event)}
    needed = [n for n in layout.names if n in wanted]
    last = max((layout.names.index(n) for n in needed), default=-1)
    row_fields: list[tuple[str, Any]] = [("class_version", int)]
    namespace: dict[str, Any] = {"_Raw": msgspec.Raw, "_sorted": _sorted, "_UUID": UUID}
    arguments: list[str] = []
    for name in layout.names[: last + 1]:
        if name not in wanted:
            row_fields.append((name, msgspec.Raw))
        elif wanted[name] is msgspec.Raw:  # as written, untyped (as a JSON copy would be)
            row_fields.append((name, Any))
            named = _named(types[name], f"row.{name}", namespace)
            arguments.append(f"{name}=_Raw(_sorted({named}))")
        else:
            row_fields.append((name, wanted[name]))
            arguments.append(f"{name}=row.{name}")
    if "originator_id" in wanted:
        ident = "originator_id if type(originator_id) is _UUID else _UUID(originator_id)"
        arguments.append(f"originator_id={ident}")
    if "originator_version" in wanted:
        arguments.append("originator_version=originator_version")
    namespace["_lean"] = lean
    source = "def build(row, originator_id, originator_version):\n"
    source += f"    return _lean({', '.join(arguments)})\n"
    exec(source, namespace)  # generated once per (event, lean type): no per-event walk
    row_type = msgspec.defstruct(f"{lean.__name__}Compact", row_fields, array_like=True)
    return msgspec.msgpack.Decoder(row_type).decode, namespace["build"], layout.version


def _named(tp: Any, source: str, namespace: dict[str, Any], depth: int = 0) -> str:
    """An expression of ``source`` (a compact value of type ``tp``, decoded untyped) in named
    form: each Struct's array as an object with its field names (a wrong length is an error)."""
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        fields = msgspec.structs.fields(tp)
        if not any(_holds_struct(f.type) for f in fields):
            # A Struct of the same field names, the values untyped: built from the array in
            # one call (a wrong length is a TypeError) and encoded with sorted names, the
            # bytes the named dict gives, at half its cost.
            named = f"_named{len(namespace)}"
            namespace[named] = msgspec.defstruct(
                f"{tp.__name__}Named", [(f.name, Any) for f in fields]
            )
            return f"{named}(*{source})"
        values = f"_values{depth}"
        parts = ", ".join(
            f"{f.name!r}: {_named(f.type, f'{values}[{index}]', namespace, depth + 1)}"
            for index, f in enumerate(fields)
        )
        count = len(fields)
        check = f"_check({source}, {count})"
        namespace["_check"] = _check_length
        return f"(lambda {values}: {{{parts}}})({check})"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list and _holds_struct(args[0]):
        item = f"_item{depth}"
        return f"[{_named(args[0], item, namespace, depth + 1)} for {item} in {source}]"
    if origin is dict and _holds_struct(args[1]):
        key, item = f"_key{depth}", f"_item{depth}"
        inner = _named(args[1], item, namespace, depth + 1)
        return f"{{{key}: {inner} for {key}, {item} in {source}.items()}}"
    if _holds_struct(tp):
        raise TypeError(f"a compact field of type {tp} cannot be copied as JSON")
    return source


def _holds_struct(tp: Any) -> bool:
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return True
    return any(_holds_struct(a) for a in typing.get_args(tp))


def _check_length(values: list[Any], count: int) -> list[Any]:
    if len(values) != count:
        raise ValueError(f"expected {count} values, got {len(values)}")
    return values


def raw_text(raw: msgspec.Raw) -> str:
    """A Raw JSON value as text."""
    return bytes(raw).decode()


def is_empty_array(raw: msgspec.Raw) -> bool:
    return bytes(raw).strip() in (b"[]", b"")
