"""Domain errors. Each names the field or the object it is about, so users see what to fix."""

from __future__ import annotations

from typing import Any


def _restore(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    """An exception rebuilt from its pickle: its args and attributes as they were, without
    calling ``__init__`` (whose parameters are not its args)."""
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class Picklable:
    """Mixin for an exception class: it survives pickling (process pools, spawned workers, Dask).

    Python pickles an exception as ``type(error)(*error.args)``, which fails (or rebuilds it
    wrong) for a class whose ``__init__`` takes other parameters than the message it passes
    up, as ours do (``ValidationError(field, message)``). This pickles the args and the
    attributes instead, so the copy is equal in type, message and every attribute
    (tests/test_pickling.py checks every exception class the project defines)."""

    def __reduce__(self) -> tuple[Any, ...]:
        assert isinstance(self, BaseException)
        return _restore, (type(self), self.args, dict(self.__dict__))


class TwinLedgerError(Picklable, Exception):
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


class EngineError(TwinLedgerError):
    """An error of the simulation itself, a function of the run's inputs alone: the run
    fails for good (RunFailed) and replay reproduces it. Infrastructure errors are not."""


class SimulationDiverged(EngineError):
    """A simulated quantity left the finite range (inf, NaN) or money outgrew a BIGINT.

    Raised by the engine at the end of the year it happened (year 0: the start state), naming
    the field, so the run fails instead of recording a value no reader can decode. It depends
    on the run's inputs alone, so replay reproduces it: same year, same message.
    """

    def __init__(self, year: int, field: str, value: str) -> None:
        super().__init__(f"{field}: the simulation diverged in year {year} ({value})")
        self.year = year
        self.field = field
        self.value = value


class NothingToVerify(TwinLedgerError):
    """Replay was asked to verify a run that has recorded nothing yet (queued, or ended
    before its first year was saved): there is nothing to compare."""

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(f"run_id: run {run_id} has no recorded years to verify (status {status})")
        self.field = "run_id"


class RunBusy(TwinLedgerError):
    """Another process holds the run's claim: it is executing the run right now."""


class ExperimentBusy(TwinLedgerError):
    """Another process holds the experiment's claim: it is evaluating the experiment now."""
