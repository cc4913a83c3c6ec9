"""The server's watch for orphaned experiments: resumed while it runs, not only when it starts.

An experiment is orphaned when it is ``running`` and nobody holds its claim (the process that
evaluated it died: the server's own experiment process, an `experiment run` on the command
line, another server). Every ``every`` seconds the watch hands such experiments to the server's
executor, as the server's start does (executor.py ``resume_experiments``). With several servers
on one store, each may hand over the same orphan; the evaluation takes the claim and reads the
experiment again, so one evaluates it and the others are refused (ExperimentBusy) or find it
ended: resumed once, never twice (docs/http.md, "A running server resumes orphaned
experiments").
"""

from __future__ import annotations

import logging
import threading

from infrastructure.http.executor import Executor, resume_experiments
from infrastructure.settings import Database

log = logging.getLogger("twinledger.http")


class OrphanWatch:
    """A thread that resumes orphaned experiments every ``every`` seconds until stopped."""

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
                # delays an orphan to the next look, or hands over one that the evaluation
                # then finds ended (it reads the log itself).
                resume_experiments(self.database, self.executor, catch_up=False)
            except Exception as error:  # a database gone for a moment: look again next time
                log.warning("looking for orphaned experiments failed: %r", error)
