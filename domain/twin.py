"""The DigitalTwin aggregate: a cloned celestial body that simulations run on.

A twin is born ``ready`` from a full copy of a body (TwinCloned), follows its runs
(``running_simulation`` while any is active, then ``completed`` or ``failed``), and ends
``deleted`` when it expires (TwinExpired) or is soft-deleted (TwinDeleted). An ended twin
refuses new runs. There is no ``creating`` status: the clone is one atomic event, so no
reader can ever see a half-created twin (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from uuid import UUID

from domain.aggregate import Aggregate, Created, Event
from domain.errors import InvalidTransition
from domain.values import BodyState, RunStatus, SimulationType, TwinStatus

ParameterValue = str | int | float | bool


@dataclass(frozen=True)
class TwinLife:
    """The twin's status rules, in one place: a pure fold over the twin's own events.

    Both the DigitalTwin aggregate and the digital_twins projection (projections/twins.py)
    compute a twin's status with these methods, from the previous TwinLife and the event's
    fields, so the two cannot disagree. It needs nothing but the twin's own stream.

    - ``ready`` until a run starts; ``running_simulation`` while any run is active;
    - when the last active run ends: the outcome of the last run that completed or failed
      (``last_outcome``; a cancelled run leaves it), else ``ready``;
    - ``deleted`` once expired or deleted, for good: runs may still end in the record
      (active runs, counts and last_outcome follow them) but the status stays ``deleted``.
    """

    status: TwinStatus = TwinStatus.READY
    last_outcome: TwinStatus | None = None  # COMPLETED or FAILED
    active_runs: frozenset[UUID] = frozenset()
    completed_runs: int = 0
    failed_runs: int = 0

    @property
    def ended(self) -> bool:
        return self.status == TwinStatus.DELETED

    def run_started(self, run_id: UUID) -> TwinLife:
        status = self.status if self.ended else TwinStatus.RUNNING_SIMULATION
        return replace(self, status=status, active_runs=self.active_runs | {run_id})

    def run_ended(self, run_id: UUID, outcome: RunStatus) -> TwinLife:
        active = self.active_runs - {run_id}
        last, completed, failed = self.last_outcome, self.completed_runs, self.failed_runs
        if outcome == RunStatus.COMPLETED:
            last, completed = TwinStatus.COMPLETED, completed + 1
        elif outcome == RunStatus.FAILED:
            last, failed = TwinStatus.FAILED, failed + 1
        if self.ended:
            status = self.status
        elif active:
            status = TwinStatus.RUNNING_SIMULATION
        else:
            status = last or TwinStatus.READY
        return TwinLife(status, last, active, completed, failed)

    def end(self) -> TwinLife:
        """Expired or deleted."""
        return replace(self, status=TwinStatus.DELETED)


class TwinCloned(Created, frozen=True, kw_only=True):
    """A body was cloned into a new twin; carries the body's full state."""

    name: str
    description: str
    source_body: str
    solar_system: str
    created_by: str
    simulation_type: SimulationType
    state: BodyState
    simulation_parameters: dict[str, ParameterValue]
    expires_at: datetime

    def apply(self, twin: DigitalTwin) -> None:
        twin.name = self.name
        twin.description = self.description
        twin.source_body = self.source_body
        twin.solar_system = self.solar_system
        twin.created_by = self.created_by
        twin.simulation_type = self.simulation_type
        twin.state = self.state
        twin.simulation_parameters = dict(self.simulation_parameters)
        twin.expires_at = self.expires_at


class TwinRunStarted(Event, frozen=True, kw_only=True):
    """A run on this twin started; recorded in the same write as the run's RunStarted."""

    run_id: UUID

    def apply(self, twin: DigitalTwin) -> None:
        twin.life = twin.life.run_started(self.run_id)


class TwinRunEnded(Event, frozen=True, kw_only=True):
    """A run on this twin ended (completed, failed or cancelled), written with the run's end."""

    run_id: UUID
    outcome: RunStatus

    def apply(self, twin: DigitalTwin) -> None:
        twin.life = twin.life.run_ended(self.run_id, self.outcome)


class TwinExpiryExtended(Event, frozen=True, kw_only=True):
    """The twin's expiry was moved later."""

    expires_at: datetime

    def apply(self, twin: DigitalTwin) -> None:
        twin.expires_at = self.expires_at


class TwinExpired(Event, frozen=True, kw_only=True):
    """The twin passed its expires_at and was ended by the cleanup job."""

    expired_at: datetime

    def apply(self, twin: DigitalTwin) -> None:
        twin.life = twin.life.end()
        twin.ended_at = self.expired_at
        twin.ended_reason = "expired"


class TwinDeleted(Event, frozen=True, kw_only=True):
    """The twin was soft-deleted by a user: its events stay, it accepts nothing more."""

    deleted_at: datetime
    deleted_by: str
    reason: str

    def apply(self, twin: DigitalTwin) -> None:
        twin.life = twin.life.end()
        twin.ended_at = self.deleted_at
        twin.ended_reason = "deleted"


class DigitalTwin(Aggregate):
    def __init__(self) -> None:
        self.name = ""
        self.description = ""
        self.source_body = ""
        self.solar_system = ""
        self.created_by = ""
        self.simulation_type = SimulationType.CUSTOM
        self.simulation_parameters: dict[str, ParameterValue] = {}
        self.expires_at: datetime | None = None
        self.life = TwinLife()
        self.ended_at: datetime | None = None
        self.ended_reason: str | None = None

    # Set by TwinCloned.apply; declared for type checkers.
    state: BodyState

    @classmethod
    def clone(
        cls,
        *,
        name: str,
        description: str,
        source_body: str,
        solar_system: str,
        created_by: str,
        simulation_type: SimulationType,
        state: BodyState,
        simulation_parameters: dict[str, ParameterValue],
        expires_at: datetime,
    ) -> DigitalTwin:
        return cls._create(
            TwinCloned,
            name=name,
            description=description,
            source_body=source_body,
            solar_system=solar_system,
            created_by=created_by,
            simulation_type=simulation_type,
            state=state,
            simulation_parameters=simulation_parameters,
            expires_at=expires_at,
        )

    @property
    def status(self) -> TwinStatus:
        return self.life.status

    @property
    def active_runs(self) -> frozenset[UUID]:
        return self.life.active_runs

    @property
    def ended(self) -> bool:
        return self.life.ended

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def check_accepts_runs(self, now: datetime) -> None:
        """Raise unless a new run may be queued or started on this twin at ``now``."""
        if self.ended:
            raise InvalidTransition(
                f"twin_id: twin {self.id} has ended ({self.ended_reason} at "
                f"{_iso(self.ended_at)}) and accepts no new runs"
            )
        if self.is_expired(now):
            raise InvalidTransition(
                f"twin_id: twin {self.id} expired at {_iso(self.expires_at)} "
                "and accepts no new runs (extend it first)"
            )

    def start_run(self, run_id: UUID, now: datetime) -> None:
        self.check_accepts_runs(now)
        self.trigger_event(TwinRunStarted, run_id=run_id)

    def end_run(self, run_id: UUID, outcome: RunStatus) -> None:
        if run_id in self.active_runs:
            self.trigger_event(TwinRunEnded, run_id=run_id, outcome=outcome)

    def extend_expiry(self, expires_at: datetime, now: datetime) -> None:
        if self.ended:
            raise InvalidTransition(f"twin_id: twin {self.id} has ended and cannot be extended")
        if self.expires_at is not None and expires_at <= self.expires_at:
            raise InvalidTransition(
                f"expires_at: {_iso(expires_at)} is not later than the current expiry "
                f"{_iso(self.expires_at)}"
            )
        if expires_at <= now:
            raise InvalidTransition(f"expires_at: {_iso(expires_at)} is in the past")
        self.trigger_event(TwinExpiryExtended, expires_at=expires_at)

    def expire(self, now: datetime) -> None:
        if self.ended or not self.is_expired(now):
            return
        self.trigger_event(TwinExpired, expired_at=now)

    def delete(self, now: datetime, deleted_by: str, reason: str) -> None:
        if self.ended:
            raise InvalidTransition(
                f"twin_id: twin {self.id} has already ended ({self.ended_reason})"
            )
        self.trigger_event(TwinDeleted, deleted_at=now, deleted_by=deleted_by, reason=reason)


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else "?"
