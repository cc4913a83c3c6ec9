"""msgspec encoding of stored events, in place of eventsourcing's JSON transcoder.

The event classes are msgspec Structs (domain/aggregate.py), so msgspec encodes and decodes
them directly, typed and validated: a float where the class says int (money) fails to decode.
Upcasting keeps the library's contract: a class with ``class_version = N`` stores that
number, and older stored states are lifted by ``upcast_vK_vK+1(state: dict)`` methods.
"""

from __future__ import annotations

import math
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


class MsgspecMapper(Mapper[UUID]):
    """Maps msgspec Struct events to stored events and back."""

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        cls = type(domain_event)
        class_version: int = getattr(cls, "class_version", 1)
        if class_version > 1:
            state_dict = msgspec.to_builtins(domain_event)
            state_dict["class_version"] = class_version
            state = encode_finite(state_dict)
        else:
            state = encode_finite(domain_event)
        if self.compressor:
            state = self.compressor.compress(state)
        if self.cipher:
            state = self.cipher.encrypt(state)
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=get_topic(cls),
            state=state,
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
            state_dict: dict[str, Any] = msgspec.json.decode(state)
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
