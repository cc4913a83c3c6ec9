"""The ledger's event store: eventsourcing's, with the per-event objects built directly.

``EventStore.put`` returns a Recording (holding a Notification) per event saved; both are
frozen dataclasses, whose generated ``__init__`` sets each field through
``object.__setattr__``: 1.2 us an event, a tenth of the append's client time for a chunk of
simulated years (docs/performance.md, issue 13). ``frozen`` only forbids assignment after
construction; filling the instance's ``__dict__`` once is what ``__init__`` does, minus the
per-field calls. The objects are equal to the library's (tests/test_append_rows.py). Only
these, which nothing here reads field by field: an instance filled this way loses CPython's
inline attribute values, and each later attribute read costs a dict lookup.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import EventStore, Notification, Recording, StoredEvent

_new = object.__new__


def recording(
    domain_event: DomainEventProtocol[UUID], stored: StoredEvent, notification_id: int
) -> Recording[UUID]:
    """Recording(domain_event, Notification(**stored, id=notification_id)), built directly."""
    notification = _new(Notification)
    notification.__dict__.update(stored.__dict__, id=notification_id)
    made: Recording[UUID] = _new(Recording)
    made.__dict__.update(domain_event=domain_event, notification=notification)
    return made


class LeanEventStore(EventStore[UUID]):
    """The library's ``put``, step for step, with ``recording`` for its objects."""

    def put(
        self, domain_events: Sequence[DomainEventProtocol[UUID]], **kwargs: Any
    ) -> list[Recording[UUID]]:
        stored_events = list(map(self.mapper.to_stored_event, domain_events))
        notification_ids = self.recorder.insert_events(stored_events, **kwargs)
        if not notification_ids:
            return []
        assert len(notification_ids) == len(stored_events)
        return list(map(recording, domain_events, stored_events, notification_ids))
