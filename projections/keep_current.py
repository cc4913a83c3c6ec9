"""Read your writes: catch the read tables up after the writes an application makes.

Where a reader waits, not after every save: a save that did not wait for the disk (a run's
intermediate chunk, ``durable=False``, infrastructure/application.py) is not followed by a
catch-up; the next durable save (the run's last chunk, its completion) or the end of the
command (``detach``) catches the tables up over all of them in one pass. Nobody reads the
tables in between from this process, and every other reader catches up before it reads
(infrastructure/service.py ``catch_up_reads``; the HTTP server follows the log), so what a
reader sees is unchanged; a durable catch-up commit after each intermediate chunk would also
have forced the chunk's WAL to the disk, which the chunk's own commit was spared.

Its batches commit without waiting for the WAL flush (projections/catchup.py,
``LIVE_AFTER_DURABLE_WRITE``): the write it follows is on disk already, and a batch lost in a
server crash is applied again, exactly once, by the next catch-up, which every reader makes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from projections.parking import describe

if TYPE_CHECKING:
    from projections.runner import Projector


def keep_current(application: Any, warn: Callable[[str], None]) -> Callable[[], None]:
    """Catch the read tables up after each durable write ``application`` makes (read your
    writes), and when detached if a write since the last catch-up was not durable.

    Adds a hook to ``application.after_write``; returns a function that catches up what is
    left, removes the hook and closes the projector. A projection that cannot catch up never
    fails the write that happened: ``warn`` is told why the tables are behind.
    """
    from projections.runner import Projector  # runner re-exports this function

    state: dict[str, Projector] = {}
    warned: set[str] = set()
    pending: list[bool] = []  # a write not caught up yet

    def catch_up() -> None:
        database = getattr(application, "database", None)
        if database is None:
            return
        pending.clear()
        try:
            if "projector" not in state:
                state["projector"] = Projector(database)
            projector = state["projector"]
            projector.catch_up(durable=False)  # after a durable write: see catchup.py
            if projector.parked_now:
                warn(f"warning: {describe(projector.parked_now)}")
            projector.parked_now.clear()
        except Exception as error:  # the write is done; the tables catch up later
            message = f"warning: read tables are behind: {error}"
            if message not in warned:  # once per command, not once per chunk saved
                warned.add(message)
                warn(message)

    def hook() -> None:
        recordings = getattr(application, "last_recordings", [])
        if recordings and getattr(application, "database", None) is not None:
            try:
                if "projector" not in state:
                    state["projector"] = Projector(application.database)
                state["projector"].remember(recordings)  # projected without reading them back
            except Exception:  # an optimisation only: the catch-up reads them instead
                pass
        if getattr(application, "last_write_durable", True):
            catch_up()
        else:
            pending.append(True)

    application.after_write.append(hook)

    def detach() -> None:
        if hook in application.after_write:
            application.after_write.remove(hook)
        if pending:
            catch_up()
        if "projector" in state:
            state.pop("projector").close()

    return detach
