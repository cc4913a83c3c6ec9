"""Errors of the store, as opposed to errors of the user's input (domain/errors.py).

``UnusableDatabase`` is a ValidationError: the ``--db`` a user gave cannot be used (exit 2).
``StoreError`` and its kinds are not the user's fault and leave nothing half-done; the CLI prints
them as one line and exits 1 (docs/operations.md).
"""

from __future__ import annotations

import sys
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


# SQLSTATE classes of a database that refuses this user, as opposed to one that failed: the
# user fixes the --db they gave, or the role's grants (docs/operations.md).
_REFUSED_CLASSES = ("28", "3D", "3F")  # authorization, unknown database, unknown schema
_REFUSED_STATES = ("42501",)  # insufficient privilege
_SQLITE_REFUSED = ("readonly database", "unable to open database", "file is not a database")


def database_failure(error: BaseException, where: str, doing: str) -> tuple[str, int] | None:
    """A database's error met while ``doing`` something on ``where`` (password masked), as one
    line and an exit code; None if ``error`` is not a database's. 2: the database refuses this
    user (privileges, authentication, a database or schema that does not exist, a read-only
    SQLite file): the user can fix it. 1: the database failed (anything else).

    Drivers' modules are looked up, never imported: an error of one means it is loaded."""
    kinds = tuple(
        kind
        for module, name in (
            ("psycopg", "Error"),
            ("sqlite3", "Error"),
            ("eventsourcing.persistence", "PersistenceError"),
        )
        if (kind := getattr(sys.modules.get(module), name, None)) is not None
    )
    chain: list[BaseException] = []
    seen: BaseException | None = error
    while seen is not None and seen not in chain and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    found = [link for link in chain if kinds and isinstance(link, kinds)]
    if not found:
        return None
    state = next((s for link in found if (s := getattr(link, "sqlstate", None))), None)
    text = " ".join(first_line(link) for link in found[-1:])
    refused = (
        state is not None and (state[:2] in _REFUSED_CLASSES or state in _REFUSED_STATES)
    ) or (state is None and any(words in text.lower() for words in _SQLITE_REFUSED))
    verb = "was refused" if refused else "failed"
    return f"db: {where}: {doing} {verb}: {text}", 2 if refused else 1
