"""The library's pipelined INSERT of a small batch, with a conflict always reported as a conflict.

eventsourcing 9.5.6 (``PostgresApplicationRecorder.insert_events``) queues the table lock, the
NOTIFY and an ``executemany`` of INSERT ... RETURNING in a psycopg pipeline, catches the error
of that block and re-raises it after leaving ``conn.transaction()`` and the pipeline. It counts
on the error being raised by its ``pipeline.sync()``. But psycopg reads results whenever it
sends a command: when the server's unique violation (a concurrent write to the same aggregate)
arrives while a later statement of the batch is being queued, the error is raised there, the
sync never runs, and the statements queued after the failed one are left with PIPELINE_ABORTED
results. Leaving ``conn.transaction()`` then commits, reads those results and raises
``psycopg.errors.PipelineAborted`` (an OperationalError), which replaces the conflict: the
library retries it as a connection error (10 attempts, 0.2 s apart) and, if every attempt
meets the same timing, the caller gets OperationalError("pipeline aborted") where a
ConcurrentWrite was due, and a run start or end is reported as RunInterrupted instead of being
retried in place (measured: 1 conflict in 4 took a second attempt, tests/test_conflicts.py).

Here the first error is kept: the remaining results are drained with a second sync, whose
PipelineAborted is expected and dropped, and the error is raised inside the transaction, which
rolls back (and clears psycopg's prepared-statement cache, so no statement skipped by the
aborted pipeline is believed prepared). The lock, the NOTIFY, the statements and the retries on
connection errors are the library's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry


class ConflictReportingInsert(PostgresApplicationRecorder):
    """``insert_events`` through the library's pipeline, raising the statement's own error."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids: Sequence[int] | None
        if self.datastore.enable_db_functions or not stored_events:
            ids = super().insert_events(stored_events, **kwargs)
        else:
            ids = self._insert_pipelined(stored_events, **kwargs)
        return ids

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)  # the library's
    def _insert_pipelined(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        with (
            self.datastore.get_connection() as conn,
            conn.pipeline() as pipeline,
            conn.transaction(),
        ):
            with conn.cursor() as curs:
                self._insert_events(curs, stored_events, **kwargs)
            with conn.cursor() as curs:
                try:
                    self._insert_stored_events(curs, stored_events, **kwargs)
                    pipeline.sync()
                except psycopg.Error:
                    # the skipped statements' results ("pipeline aborted"): the error that
                    # matters is the one being raised
                    with contextlib.suppress(psycopg.Error):
                        pipeline.sync()
                    raise
                ids: Sequence[int] | None = self._fetch_ids_after_insert_events(
                    curs, stored_events, **kwargs
                )
                return ids
