"""Domain errors. Each names the field or the object it is about, so users see what to fix."""

from __future__ import annotations


class TwinLedgerError(Exception):
    """Base class for every error the ledger reports to its users."""


class ValidationError(TwinLedgerError):
    """A value handed in by a user is not acceptable; nothing was written."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFound(TwinLedgerError):
    """An id names no twin, run or other object in the ledger."""

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind}: no {kind.replace('_id', '')} with id {ident}")
        self.field = kind
        self.ident = ident


class InvalidTransition(TwinLedgerError):
    """A command does not fit the current state of an aggregate (an ended twin, a finished run)."""


class ConcurrentWrite(TwinLedgerError):
    """Another writer changed the same aggregate first; the command was not applied."""


class RunBusy(TwinLedgerError):
    """Another process holds the run's claim: it is executing the run right now."""
