"""Test helper: count the round trips psycopg makes, as the waits that ended with the server's
answer (a wait for the socket to accept more data is not one)."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

import psycopg
from psycopg.waiting import Ready

T = TypeVar("T")


def round_trips(action: Callable[[], T]) -> tuple[int, T]:
    """Run ``action``; return how many times it waited for a server's answer, and its result."""
    count = 0
    wait = psycopg.Connection.wait

    def counted(self: Any, gen: Any, *args: Any, **kw: Any) -> Any:
        def watch() -> Generator[Any, Any, Any]:
            nonlocal count
            answered = False
            try:
                wanted = next(gen)
                while True:
                    ready = yield wanted
                    answered = answered or bool(ready and ready & Ready.R)
                    wanted = gen.send(ready)
            except StopIteration as done:
                count += answered
                return done.value

        return wait(self, watch(), *args, **kw)

    psycopg.Connection.wait = counted  # type: ignore[method-assign]
    try:
        result = action()
    finally:
        psycopg.Connection.wait = wait  # type: ignore[method-assign]
    return count, result
