"""msgspec encoding of stored events, in place of eventsourcing's JSON transcoder.

The event classes are msgspec Structs (domain/aggregate.py), so msgspec encodes and decodes
them directly, typed and validated: a float where the class says int (money) fails to decode.
Upcasting keeps the library's contract: a class with ``class_version = N`` stores that
number, and older stored states are lifted by ``upcast_vK_vK+1(state: dict)`` methods.

Two stored forms (docs/architecture.md, Storage):

- named: a JSON object with every field by name (and ``class_version`` when above 1);
- compact, for a class that sets ``compact_storage = True`` (YearResultRecorded, the event
  written once per simulated year): a msgpack array, ``[class_version, field1, field2, ...]``
  in the class's field order, nested Structs as arrays in their field order too, UUIDs as 16
  bytes, the top-level ``timestamp`` as integer microseconds since 1970-01-01 UTC. Every value
  is there; only the names are left out, which the class (at that version) supplies.

A compact state starts with a msgpack array byte, a named one with ``{``, so both read back
whatever a store holds: named states of a compact class (written before it was compact) are
upcast as usual. A compact state of an older version than the class's needs
``named_vN(values: list) -> dict`` on the class (the names at version N), then the upcasters.
"""

from __future__ import annotations

import functools
import math
import operator
import re
import types
import typing
from collections.abc import Callable
from functools import cache
from typing import Any, cast
from uuid import UUID

import msgspec
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    Mapper,
    MapperDeserialisationError,
    StoredEvent,
    Transcoder,
)
from eventsourcing.utils import get_topic, resolve_topic

_encoder = msgspec.json.Encoder()
_packer = msgspec.msgpack.Encoder(uuid_format="bytes")
_NON_FINITE_FLOAT64 = re.compile(rb"\xcb[\x7f\xff][\xf0-\xff]")
"""A msgpack float64 whose exponent bits are all ones (NaN or an infinity), or bytes that
look like one (inside a string or an integer): those are then checked exactly."""


class NonFiniteNumber(ValueError):
    """An event holds NaN or an infinity: JSON cannot hold it (msgspec would write null, and
    the stored event would then not decode), so nothing is written."""


def _non_finite_path(value: Any) -> str | None:
    """The path of the first NaN or infinity in ``value`` (builtins), or None; iterative."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return path or "(the value)"
        if isinstance(item, dict):
            stack.extend((v, f"{path}.{k}" if path else str(k)) for k, v in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))
    return None


def encode_finite(value: Any) -> bytes:
    """msgspec JSON of ``value``; raises NonFiniteNumber naming the field instead of writing
    null for a NaN or an infinity. msgspec writes both as null, so only an output holding
    null is walked: the common case costs one bytes search."""
    encoded = _encoder.encode(value)
    if b"null" in encoded:
        path = _non_finite_path(msgspec.to_builtins(value))
        if path is not None:
            raise NonFiniteNumber(
                f"{type(value).__name__}: {path} is not a finite number; nothing was written"
            )
    return encoded


@cache
def _decoder(cls: type[Any]) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(cls)


KEYS = ("originator_id", "originator_version")
"""Left out of compact states: the stored event's own columns hold them (as eventsourcing's
default mapper leaves them out of every state)."""


def is_compact(state: bytes) -> bool:
    """True if a stored state is in the compact form (a msgpack array), not named JSON."""
    return state[:1] != b"{"


def is_compact_class(cls: type[Any]) -> bool:
    return bool(getattr(cls, "compact_storage", False))


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


@cache
def mirror(tp: Any) -> Any:
    """The type of ``tp``'s compact form: each Struct as an array_like Struct with the same
    fields in the same order (no defaults: every value is written), recursively."""
    if _is_struct(tp):
        fields = [(f.name, mirror(f.type)) for f in msgspec.structs.fields(tp)]
        return msgspec.defstruct(f"{tp.__name__}Compact", fields, array_like=True)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        return list.__class_getitem__(mirror(args[0]))
    if origin is dict:
        return dict.__class_getitem__((args[0], mirror(args[1])))
    if args and origin in (typing.Union, types.UnionType):
        return functools.reduce(operator.or_, (mirror(a) for a in args))
    return tp


class _Code:
    """Generated Python for one compact class: an expression per field turning the event's
    value into its compact form (lists in field order) and one turning the decoded compact
    value (typed and validated by its msgspec decode) back into the domain's Structs. Generated
    once per class, as dataclasses generates ``__init__``: a walk over the type per event costs
    several times more."""

    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {"_convert": msgspec.convert}
        self._names: dict[Any, str] = {}
        self._depth = 0

    def name(self, value: Any) -> str:
        if value not in self._names:
            self._names[value] = f"_t{len(self._names)}"
            self.namespace[self._names[value]] = value
        return self._names[value]

    def _variable(self) -> str:
        self._depth += 1
        return f"_v{self._depth}"

    def out(self, tp: Any, source: str) -> str:
        """An expression of ``source`` (a value of type ``tp``) in compact form."""
        if _is_struct(tp):
            parts = (self.out(f.type, f"{source}.{f.name}") for f in msgspec.structs.fields(tp))
            return "[" + ", ".join(parts) + "]"
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is list and _has_struct(args[0]):
            item = self._variable()
            return f"[{self.out(args[0], item)} for {item} in {source}]"
        if origin is dict and _has_struct(args[1]):
            key, item = self._variable(), self._variable()
            return f"{{{key}: {self.out(args[1], item)} for {key}, {item} in {source}.items()}}"
        if _has_struct(tp):  # rare shapes (an optional Struct, say): msgspec converts
            return f"_convert({source}, {self.name(mirror(tp))}, from_attributes=True)"
        return source

    def back(self, tp: Any, source: str) -> str:
        """An expression of ``source`` (a decoded compact value of ``tp``) as ``tp``."""
        if _is_struct(tp):
            parts = (
                f"{f.name}={self.back(f.type, f'{source}.{f.name}')}"
                for f in msgspec.structs.fields(tp)
            )
            return f"{self.name(tp)}(" + ", ".join(parts) + ")"
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is list and _has_struct(args[0]):
            item = self._variable()
            return f"[{self.back(args[0], item)} for {item} in {source}]"
        if origin is dict and _has_struct(args[1]):
            key, item = self._variable(), self._variable()
            return f"{{{key}: {self.back(args[1], item)} for {key}, {item} in {source}.items()}}"
        if _has_struct(tp):
            return f"_convert({source}, {self.name(tp)}, from_attributes=True)"
        return source

    def function(self, name: str, arguments: str, body: str) -> Callable[..., Any]:
        exec(f"def {name}({arguments}):\n    return {body}\n", self.namespace)
        return cast(Callable[..., Any], self.namespace[name])


def _has_struct(tp: Any) -> bool:
    return _is_struct(tp) or any(_has_struct(a) for a in typing.get_args(tp))


class Compact:
    """How one compact class is stored: ``[class_version, field, ...]`` in its field order,
    ``originator_id`` and ``originator_version`` left to the stored event's columns."""

    def __init__(self, cls: type[Any]) -> None:
        self.cls = cls
        self.version: int = getattr(cls, "class_version", 1)
        fields = [f for f in msgspec.structs.fields(cls) if f.name not in KEYS]
        self.names = tuple(f.name for f in fields)
        self.row = msgspec.defstruct(
            f"{cls.__name__}Compact",
            [("class_version", int), *((f.name, mirror(f.type)) for f in fields)],
            array_like=True,
        )
        self._decoder = msgspec.msgpack.Decoder(self.row)
        code = _Code()
        values = ", ".join(code.out(f.type, f"event.{f.name}") for f in fields)
        self._values = code.function("values", "event", f"[{self.version}, {values}]")
        kwargs = ", ".join(f"{f.name}={code.back(f.type, f'row.{f.name}')}" for f in fields)
        build = f"{code.name(cls)}(originator_id=originator_id, "
        build += f"originator_version=originator_version, {kwargs})"
        self._build = code.function("build", "row, originator_id, originator_version", build)

    def encode(self, event: Any) -> bytes:
        state = _packer.encode(self._values(event))
        # One regex pass (0.2 us): two ``in`` pre-checks before it cost three times that.
        if _NON_FINITE_FLOAT64.search(state) is not None:
            path = _non_finite_path(msgspec.to_builtins(event))
            if path is not None:
                raise NonFiniteNumber(
                    f"{type(event).__name__}: {path} is not a finite number; nothing was written"
                )
        return state

    def decode(self, state: bytes, originator_id: UUID | str, originator_version: int) -> Any:
        """A compact state at the class's version, typed and validated, as the event; None if
        the state is of another version."""
        try:
            row = self._decoder.decode(state)
        except msgspec.ValidationError:
            if version_of(state) != self.version:  # another layout: not for this decoder
                return None
            raise
        if row.class_version != self.version:  # type: ignore[attr-defined]
            return None
        if not isinstance(originator_id, UUID):
            originator_id = UUID(originator_id)
        return self._build(row, originator_id, originator_version)

    def named(
        self, state: bytes, originator_id: UUID | str, originator_version: int
    ) -> dict[str, Any]:
        """A compact state of any version as named builtins (with ``class_version``), the
        form the upcasters take."""
        version = version_of(state)
        if version == self.version:
            event = self.decode(state, originator_id, originator_version)
            named = msgspec.to_builtins(event)
        else:
            names = getattr(self.cls, f"named_v{version}", None)
            if names is None:
                raise ValueError(f"no names for compact version {version} of {self.cls}")
            named = names(msgspec.msgpack.decode(state)[1:])
            named["originator_id"] = str(originator_id)
            named["originator_version"] = originator_version
        named["class_version"] = version
        return cast(dict[str, Any], named)


class _Version(msgspec.Struct, array_like=True):
    class_version: int


_version_decoder = msgspec.msgpack.Decoder(_Version)


def version_of(state: bytes) -> int:
    """The class_version a compact state was written at (its first value)."""
    return _version_decoder.decode(state).class_version


@cache
def compact(cls: type[Any]) -> Compact:
    return Compact(cls)


def named_state(
    topic: str, state: bytes, originator_id: UUID | str, originator_version: int
) -> dict[str, Any]:
    """Any stored state of an event class as a dict of named builtins (``class_version``
    included when above 1), compact or not: for tools that inspect or repair stored events."""
    if not is_compact(state):
        return cast(dict[str, Any], msgspec.json.decode(state))
    return compact(resolve_topic(topic)).named(state, originator_id, originator_version)


def _named_with_version(event: Any) -> bytes:
    state_dict = msgspec.to_builtins(event)
    state_dict["class_version"] = type(event).class_version
    return encode_finite(state_dict)


@cache
def writer(cls: Any) -> tuple[str, Callable[[Any], bytes]]:
    """(topic, state encoder) of an event class: decided once per class, not per event."""
    if is_compact_class(cls):
        encode: Callable[[Any], bytes] = compact(cls).encode
    elif getattr(cls, "class_version", 1) > 1:
        encode = _named_with_version
    else:
        encode = encode_finite
    return get_topic(cls), encode


class MsgspecMapper(Mapper[UUID]):
    """Maps msgspec Struct events to stored events and back."""

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        topic, encode = writer(type(domain_event))
        state = encode(domain_event)
        if self.compressor:
            state = self.compressor.compress(state)
        if self.cipher:
            state = self.cipher.encrypt(state)
        # StoredEvent's own __init__: its instances are read field by field downstream
        # (hashing, COPY rows), which a dict-filled instance makes slower than it saves.
        return StoredEvent(
            domain_event.originator_id, domain_event.originator_version, topic, state
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        state = stored_event.state
        try:
            if self.cipher:
                state = self.cipher.decrypt(state)
            if self.compressor:
                state = self.compressor.decompress(state)
            cls = resolve_topic(stored_event.topic)
            target: int = getattr(cls, "class_version", 1)
            if target == 1:
                return cast(DomainEventProtocol[UUID], _decoder(cls).decode(state))
            if is_compact(state):
                layout = compact(cls)
                keys = (stored_event.originator_id, stored_event.originator_version)
                event = layout.decode(state, *keys)
                if event is not None:  # stored at the class's version: the usual case
                    return cast(DomainEventProtocol[UUID], event)
                state_dict = layout.named(state, *keys)
            else:
                state_dict = msgspec.json.decode(state)
            version = state_dict.pop("class_version", 1)
            while version < target:
                getattr(cls, f"upcast_v{version}_v{version + 1}")(state_dict)
                version += 1
            return cast(DomainEventProtocol[UUID], msgspec.convert(state_dict, type=cls))
        except Exception as error:
            msg = (
                f"cannot decode stored event {stored_event.topic!r} of "
                f"{stored_event.originator_id} version {stored_event.originator_version}: {error}"
            )
            raise MapperDeserialisationError(msg) from error


class NullTranscoder(Transcoder):
    """The library insists on a transcoder; MsgspecMapper does not use it."""

    def encode(self, obj: Any) -> bytes:
        raise NotImplementedError("events are encoded by MsgspecMapper")

    def decode(self, data: bytes) -> Any:
        raise NotImplementedError("events are decoded by MsgspecMapper")
