"""The server's watch for orphans: runs and experiments resumed while it runs, not only at start.

A run or an experiment is orphaned when it is ``running`` and nobody holds its claim: the
process executing or evaluating it died (an ``execute`` or ``experiment run`` on the command
line, a Dask worker, another server, a process of this server's). Every ``every`` seconds the
watch hands them to the server's executor (executor.py ``resume_orphans``), which keeps each
in hand once at a time and leaves alone one refused for good or whose process died too often.
With several servers on one store, each may hand over the same orphan; its task takes the
claim at once or not at all and reads it again, so one resumes it and the others are refused
(RunBusy, ExperimentBusy) or find it ended: resumed once, never twice (docs/http.md, "A
running server resumes orphaned runs and experiments").
"""

from __future__ import annotations

import logging
import threading

from infrastructure.http.executor import Executor, resume_orphans
from infrastructure.settings import Database

log = logging.getLogger("twinledger.http")


class OrphanWatch:
    """A thread that resumes orphaned runs and experiments every ``every`` seconds until stopped."""

    def __init__(self, database: Database, executor: Executor, *, every: float) -> None:
        self.database = database
        self.executor = executor
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="twinledger-orphans", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                # The read tables as the log follower keeps them: a row a moment behind only
                # delays an orphan to the next look, or hands over one that its task then
                # finds ended (it reads the log itself).
                resume_orphans(self.database, self.executor)
            except Exception as error:  # a database gone for a moment: look again next time
                log.warning("looking for orphaned runs and experiments failed: %r", error)
