"""Read your writes: catch the read tables up after each write an application makes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from projections.parking import describe

if TYPE_CHECKING:
    from projections.runner import Projector


def keep_current(application: Any, warn: Callable[[str], None]) -> Callable[[], None]:
    """Catch the read tables up after each write ``application`` makes (read your writes).

    Adds a hook to ``application.after_write``; returns a function that removes it and closes
    the projector. A projection that cannot catch up never fails the write that happened:
    ``warn`` is told why the tables are behind.
    """
    from projections.runner import Projector  # runner re-exports this function

    state: dict[str, Projector] = {}
    warned: set[str] = set()

    def hook() -> None:
        database = getattr(application, "database", None)
        if database is None:
            return
        try:
            if "projector" not in state:
                state["projector"] = Projector(database)
            projector = state["projector"]
            projector.catch_up()
            if projector.parked_now:
                warn(f"warning: {describe(projector.parked_now)}")
            projector.parked_now.clear()
        except Exception as error:  # the write is done; the tables catch up later
            message = f"warning: read tables are behind: {error}"
            if message not in warned:  # once per command, not once per chunk saved
                warned.add(message)
                warn(message)

    application.after_write.append(hook)

    def detach() -> None:
        if hook in application.after_write:
            application.after_write.remove(hook)
        if "projector" in state:
            state.pop("projector").close()

    return detach
