"""Moving positions (projections/tracking.py): ``advance`` refuses a position that did not move
forward or that moved under the transaction, alone or inside ``advancing_together``, where a
shared batch's moves go as one statement (PostgreSQL) and are refused by projection name."""

from __future__ import annotations

from typing import Any

import pytest

from projections import tracking
from projections.runner import Projector


def positions(projector: Projector) -> dict[str, int]:
    return {row.name: row.position for row in projector.status()}


@pytest.fixture
def projector(ledger: Any, database_url: str) -> Any:
    with Projector.open(database_url) as opened:
        opened.prepare()  # every projection's row, at 0 (the ledger made the log)
        yield opened


class Counting:
    """A cursor whose statements are counted."""

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor
        self.executed: list[Any] = []

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.executed.append(args[0])
        return self.cursor.execute(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cursor, name)


def test_moves_together_are_one_statement_on_postgresql(projector: Projector) -> None:
    store = projector.store
    names = sorted(positions(projector))
    with store.transaction() as plain:
        cursor = Counting(plain)
        with tracking.advancing_together(store, cursor):
            for name in names:
                tracking.advance(store, cursor, name, 0, 5)
            assert cursor.executed == []  # nothing sent before the block ends
        assert len(cursor.executed) == (1 if store.postgres else len(names))
    assert positions(projector) == dict.fromkeys(names, 5)


@pytest.mark.parametrize("together", [True, False])
def test_a_position_moved_under_the_transaction_is_refused_by_name(
    projector: Projector, together: bool
) -> None:
    store = projector.store
    names = sorted(positions(projector))
    moved = names[1]
    with store.transaction() as cursor:
        tracking.advance(store, cursor, moved, 0, 3)  # as another process would have
    refused = pytest.raises(tracking.TrackingConflict, match=f"projection {moved}: position moved")
    with refused, store.transaction() as cursor:
        if together:
            with tracking.advancing_together(store, cursor):
                for name in names:
                    tracking.advance(store, cursor, name, 0, 7)
        else:
            for name in names:
                tracking.advance(store, cursor, name, 0, 7)
    assert positions(projector) == {name: 3 if name == moved else 0 for name in names}


def test_a_position_that_does_not_advance_is_refused_at_once(projector: Projector) -> None:
    store = projector.store
    name = sorted(positions(projector))[0]
    refused = pytest.raises(tracking.TrackingConflict, match="does not advance")
    with store.transaction() as cursor, tracking.advancing_together(store, cursor), refused:
        tracking.advance(store, cursor, name, 4, 4)
    assert positions(projector)[name] == 0


def test_an_error_in_the_block_moves_nothing(projector: Projector) -> None:
    store = projector.store
    names = sorted(positions(projector))
    failed = pytest.raises(RuntimeError)
    with failed, store.transaction() as cursor, tracking.advancing_together(store, cursor):
        tracking.advance(store, cursor, names[0], 0, 2)
        raise RuntimeError("the batch failed after its moves were asked for")
    with store.transaction() as cursor:
        tracking.advance(store, cursor, names[0], 0, 1)  # moves at once again, outside a block
        assert tracking.position(store, cursor, names[0]) == 1
