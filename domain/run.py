"""The SimulationRun aggregate: one execution of a pattern on a copy of a twin.

RunQueued is self-contained: it holds the twin's state at queue time, the pattern, the
parameters, the seed, the scheduled interventions and, for a fork, its lineage (the fork points,
each with its parent and changes) and the engine version, so the run can be executed again from
that one event (domain/engine.py). Status: queued -> running -> completed | failed | cancelled.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar
from uuid import UUID

import msgspec

from domain.aggregate import Aggregate, Created, Event
from domain.errors import InvalidTransition
from domain.interventions import ForkPoint, Intervention
from domain.values import (
    BodyState,
    Economic,
    Environment,
    KeyEvent,
    Pattern,
    RunParameters,
    RunStatus,
    RunSummary,
    YearResult,
)


class Provenance(msgspec.Struct, frozen=True, kw_only=True):
    """Where and with what a run was queued: what could make its results differ elsewhere.

    ``packages`` maps the names of the packages that shape results (msgspec encodes the
    digest's canonical JSON) to their versions; ``python`` is the implementation and version;
    ``git_commit`` the project's commit when it runs from a git checkout (None otherwise).
    """

    engine_version: str
    python: str
    packages: dict[str, str]
    git_commit: str | None
    host: str


def next_run_status(current: RunStatus, event: type[Event]) -> RunStatus:
    """The run's status after ``event``: the status rules in one place, used by SimulationRun
    and by the simulation_runs projection (projections/runs.py).

    queued (RunQueued) -> running (RunStarted, also on resume) -> completed | failed |
    cancelled; YearResultRecorded leaves the status as it is. Which transitions are allowed is
    checked by SimulationRun's commands before an event is recorded, not here.
    """
    return _STATUS_AFTER.get(event, current)


class Persistence(StrEnum):
    """What a run keeps in the log: every year (full), or only RunQueued..RunCompleted with the
    digest (summary: its years are re-derived by re-simulating, which the digest checks)."""

    FULL = "full"
    SUMMARY = "summary"


class RunQueued(Created, frozen=True, kw_only=True):
    """A run was asked for. Everything needed to execute it again is here.

    Version 2 added ``interventions``, ``forks`` (the lineage of a fork, oldest first: the
    parent's inputs are this event's other fields) and ``provenance``; version 1 events are
    upcast with none of them.
    """

    class_version: ClassVar[int] = 2

    twin_id: UUID
    source_body: str
    twin_state: BodyState
    pattern: Pattern
    duration_years: int
    parameters: RunParameters
    seed: int
    engine_version: str
    initiated_by: str
    experiment_id: UUID | None = None
    iteration: int | None = None
    sample_index: int | None = None
    run_purpose: str | None = None
    interventions: list[Intervention] = msgspec.field(default_factory=list)
    forks: list[ForkPoint] = msgspec.field(default_factory=list)
    provenance: Provenance | None = None
    persistence: Persistence = Persistence.FULL

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["interventions"] = []
        state["forks"] = []
        state["provenance"] = None

    def apply(self, run: SimulationRun) -> None:
        run.twin_id = self.twin_id
        run.source_body = self.source_body
        run.twin_state = self.twin_state
        run.pattern = self.pattern
        run.duration_years = self.duration_years
        run.parameters = self.parameters
        run.seed = self.seed
        run.engine_version = self.engine_version
        run.initiated_by = self.initiated_by
        run.experiment_id = self.experiment_id
        run.iteration = self.iteration
        run.sample_index = self.sample_index
        run.run_purpose = self.run_purpose
        run.interventions = self.interventions
        run.forks = self.forks
        run.provenance = self.provenance
        run.persistence = self.persistence


class RunStarted(Event, frozen=True, kw_only=True):
    """The engine began (or resumed) executing the run."""

    resumed_from_year: int = 0

    def apply(self, run: SimulationRun) -> None:
        run.status = next_run_status(run.status, RunStarted)


class YearResultRecorded(Event, frozen=True, kw_only=True):
    """One simulated year's results: economic (cents), environmental, and key events.

    Version 2 is stored compactly (positional msgpack, infrastructure/codec.py): it is the
    event written once per simulated year, and field names were most of its bytes. The
    fields did not change; version 1 states (named JSON) still read back.
    """

    class_version: ClassVar[int] = 2
    compact_storage: ClassVar[bool] = True

    year: int
    economic: Economic
    environment: Environment
    key_events: list[KeyEvent]

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 2 changed only how the event is stored, not its fields."""

    def apply(self, run: SimulationRun) -> None:
        run.years_recorded = self.year

    def to_result(self) -> YearResult:
        return YearResult(
            year=self.year,
            economic=self.economic,
            environment=self.environment,
            key_events=self.key_events,
        )


class RunCompleted(Event, frozen=True, kw_only=True):
    """All years were recorded; carries the summary and the SHA-256 digest of the results."""

    summary: RunSummary
    result_digest: str

    def apply(self, run: SimulationRun) -> None:
        run.status = next_run_status(run.status, RunCompleted)
        run.summary = self.summary
        run.result_digest = self.result_digest


class RunFailed(Event, frozen=True, kw_only=True):
    """The run stopped on an error; years recorded before it stay recorded."""

    error_message: str
    at_year: int

    def apply(self, run: SimulationRun) -> None:
        run.status = next_run_status(run.status, RunFailed)
        run.error_message = self.error_message


class RunCancelled(Event, frozen=True, kw_only=True):
    """The run was stopped on request, at a chunk boundary."""

    reason: str
    cancelled_by: str
    at_year: int

    def apply(self, run: SimulationRun) -> None:
        run.status = next_run_status(run.status, RunCancelled)
        run.error_message = self.reason


class SimulationRun(Aggregate):
    def __init__(self) -> None:
        self.status = RunStatus.QUEUED
        self.years_recorded = 0
        self.summary: RunSummary | None = None
        self.result_digest: str | None = None
        self.error_message: str | None = None

    # Set by RunQueued.apply; declared for type checkers.
    twin_id: UUID
    source_body: str
    twin_state: BodyState
    pattern: Pattern
    duration_years: int
    parameters: RunParameters
    seed: int
    engine_version: str
    initiated_by: str
    experiment_id: UUID | None
    iteration: int | None
    sample_index: int | None
    run_purpose: str | None
    interventions: list[Intervention]
    forks: list[ForkPoint]
    provenance: Provenance | None

    @property
    def fork(self) -> ForkPoint | None:
        """The fork point that made this run (the last of its lineage), None if not a fork."""
        return self.forks[-1] if self.forks else None

    persistence: Persistence

    @classmethod
    def queue(
        cls,
        *,
        twin_id: UUID,
        source_body: str,
        twin_state: BodyState,
        pattern: Pattern,
        duration_years: int,
        parameters: RunParameters,
        seed: int,
        engine_version: str,
        initiated_by: str,
        experiment_id: UUID | None = None,
        iteration: int | None = None,
        sample_index: int | None = None,
        run_purpose: str | None = None,
        interventions: list[Intervention] | None = None,
        forks: list[ForkPoint] | None = None,
        provenance: Provenance | None = None,
        run_id: UUID | None = None,
        persistence: Persistence = Persistence.FULL,
    ) -> SimulationRun:
        return cls._create(
            RunQueued,
            id=run_id,
            twin_id=twin_id,
            source_body=source_body,
            twin_state=twin_state,
            pattern=pattern,
            duration_years=duration_years,
            parameters=parameters,
            seed=seed,
            engine_version=engine_version,
            initiated_by=initiated_by,
            experiment_id=experiment_id,
            iteration=iteration,
            sample_index=sample_index,
            run_purpose=run_purpose,
            interventions=interventions or [],
            forks=forks or [],
            provenance=provenance,
            persistence=persistence,
        )

    @property
    def progress(self) -> float:
        return self.years_recorded / self.duration_years

    @property
    def ended(self) -> bool:
        return self.status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)

    def start(self) -> None:
        if self.status != RunStatus.QUEUED and self.status != RunStatus.RUNNING:
            raise InvalidTransition(f"run_id: run {self.id} is {self.status} and cannot start")
        self.trigger_event(RunStarted, resumed_from_year=self.years_recorded)

    def record_year(self, result: YearResult) -> None:
        if self.persistence == Persistence.SUMMARY:
            raise InvalidTransition(f"run_id: run {self.id} keeps a summary only, not its years")
        if self.status != RunStatus.RUNNING:
            raise InvalidTransition(f"run_id: run {self.id} is {self.status}, not running")
        if result.year != self.years_recorded + 1:
            raise InvalidTransition(
                f"year: expected year {self.years_recorded + 1} of run {self.id}, got {result.year}"
            )
        # Built and applied as BaseAggregate.trigger_event builds and applies any event, minus
        # its generic keyword handling, which cost 1.4 us of 2.2 per simulated year
        # (docs/performance.md, issue 13). The same event, field for field. What mutate does
        # after its two checks (the event's id is this run's and its version the next, true
        # by construction here): apply, then version and modified_on.
        version = self.version + 1
        timestamp = YearResultRecorded.create_timestamp()
        event = YearResultRecorded(
            originator_id=self.id,
            originator_version=version,
            timestamp=timestamp,
            year=result.year,
            economic=result.economic,
            environment=result.environment,
            key_events=result.key_events,
        )
        event.apply(self)
        self.version = version
        self.modified_on = timestamp
        self._pending_events.append(event)

    def complete(self, summary: RunSummary, result_digest: str) -> None:
        years = self.duration_years if self.persistence == Persistence.FULL else 0
        if self.status != RunStatus.RUNNING or self.years_recorded != years:
            raise InvalidTransition(
                f"run_id: run {self.id} cannot complete at year {self.years_recorded} "
                f"of {self.duration_years} ({self.status})"
            )
        self.trigger_event(RunCompleted, summary=summary, result_digest=result_digest)

    def fail(self, error_message: str) -> None:
        if self.ended:
            raise InvalidTransition(f"run_id: run {self.id} has already ended ({self.status})")
        self.trigger_event(RunFailed, error_message=error_message, at_year=self.years_recorded)

    def cancel(self, reason: str, cancelled_by: str) -> None:
        if self.ended:
            raise InvalidTransition(f"run_id: run {self.id} has already ended ({self.status})")
        self.trigger_event(
            RunCancelled, reason=reason, cancelled_by=cancelled_by, at_year=self.years_recorded
        )


_STATUS_AFTER: dict[type[Event], RunStatus] = {
    RunQueued: RunStatus.QUEUED,
    RunStarted: RunStatus.RUNNING,
    RunCompleted: RunStatus.COMPLETED,
    RunFailed: RunStatus.FAILED,
    RunCancelled: RunStatus.CANCELLED,
}
