"""Two writers changing the same aggregate: the second gets a clear error, no event is lost."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from domain.errors import ConcurrentWrite
from domain.values import TwinStatus
from infrastructure.application import TwinLedger


def test_a_concurrent_write_to_the_same_twin_is_refused_clearly(
    open_ledger: Callable[[], TwinLedger],
) -> None:
    first, second = open_ledger(), open_ledger()
    twin_id = first.clone_twin(name="Mars A", body="mars")
    stale = second.get_twin(twin_id)  # second writer reads...
    first.delete_twin(twin_id, reason="first")  # ...first writer writes...
    before = first.event_count()
    stale.delete(second.clock(), "second", "second")
    with pytest.raises(ConcurrentWrite, match="another writer changed DigitalTwin"):
        second._save(stale)  # ...second writer's stale write is refused
    assert first.event_count() == before
    twin = second.get_twin(twin_id)
    assert twin.status == TwinStatus.DELETED
    assert twin.version == 2
