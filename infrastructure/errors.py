"""Errors of the store, as opposed to errors of the user's input (domain/errors.py).

``UnusableDatabase`` is a ValidationError: the ``--db`` a user gave cannot be used (exit 2).
``StoreError`` and its kinds are not the user's fault and leave nothing half-done; the CLI prints
them as one line and exits 1 (docs/operations.md).
"""

from __future__ import annotations

from uuid import UUID

from domain.errors import Picklable, ValidationError


class UnusableDatabase(ValidationError):
    """The database a URL names cannot be opened; ``where`` has its password masked."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__("db", f"{where}: {problem}")
        self.where = where
        self.problem = problem


class StoreError(Picklable, Exception):
    """The store could not do what was asked; nothing was written by the failed step."""


class RunInterrupted(StoreError):
    """A transient database error stopped a run (starting it, between chunks, or ending it);
    the run stays queued or running, and resumable."""

    def __init__(self, run_id: UUID, cause: str) -> None:
        super().__init__(
            f"run {run_id} interrupted by a database error ({cause}); the years it saved "
            f"are kept and `twinledger execute {run_id}` resumes it"
        )
        self.run_id = run_id
        self.cause = cause


class UnreadableStream(StoreError):
    """An aggregate's stored events cannot be folded: a missing version or an undecodable event."""

    def __init__(self, kind: str, ident: UUID, problem: str) -> None:
        super().__init__(f"{kind} {ident} cannot be read: {problem}")
        self.kind = kind
        self.ident = ident
        self.problem = problem


class UndecodableStream(UnreadableStream):
    """One of an aggregate's stored events no longer decodes (edited or written by a bug)."""


def first_line(error: BaseException) -> str:
    """An error's message on one line (drivers add hints on further lines)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
