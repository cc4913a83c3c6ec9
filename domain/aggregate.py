"""Aggregate and event base classes whose events are immutable msgspec Structs.

eventsourcing 9.5.6 builds events as dataclasses by default; ours are msgspec Structs so that
they are typed, frozen and encoded by msgspec (see infrastructure/codec.py). Only the hooks
``BaseAggregate`` needs are implemented here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import msgspec
from eventsourcing.domain import BaseAggregate, CanInitAggregate, CanMutateAggregate


class Event(msgspec.Struct, CanMutateAggregate[UUID], frozen=True, kw_only=True):
    """Base of every stored event: who it belongs to, its position in that stream, and when."""

    originator_id: UUID
    originator_version: int
    timestamp: datetime

    def _as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__struct_fields__}


class Created(Event, CanInitAggregate[UUID], frozen=True, kw_only=True):
    """Base of the first event of every aggregate."""

    originator_topic: str


class Aggregate(BaseAggregate[UUID]):
    """Base of the ledger's aggregates. Ids are random UUIDs unless given."""

    @staticmethod
    def create_id() -> UUID:
        return uuid4()
