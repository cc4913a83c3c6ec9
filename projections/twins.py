"""digital_twins: one row per twin, folded from the twin's events (and RunQueued, for counts).

The status columns (``status``, ``last_run_outcome``, ``active_run_ids``/``active_run_count``,
``completed_run_count``, ``failed_run_count``) are a TwinLife (domain/twin.py) folded by the
same methods the DigitalTwin aggregate uses: the status rules live there only. ``run_count``
is runs queued on the twin (RunQueued, from the runs' streams).

The row is a function of the events' content, not of their order across streams: a twin's
RunQueued may land after the twin's later events (an imported archive writes the twin's
stream first), so RunQueued only adds to ``run_count``, and ``updated_at`` is the latest
timestamp of the events applied to the row (a max), not the last one applied.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from domain.run import RunQueued
from domain.twin import (
    TwinCloned,
    TwinDeleted,
    TwinExpired,
    TwinExpiryExtended,
    TwinLife,
    TwinRunEnded,
    TwinRunStarted,
)
from domain.values import RunStatus, TwinStatus
from projections.base import Batch, Fold, Projection, ProjectionDataError
from projections.decoding import Lean
from projections.tables import Column, Index, Table

DIGITAL_TWINS = Table(
    name="digital_twins",
    doc="One row per twin: what was cloned, its status, expiry and counts of its runs.",
    columns=(
        Column("id", "uuid", doc="the twin's id (its aggregate id)"),
        Column("name", "text"),
        Column("description", "text"),
        Column("source_body", "text", doc="catalog key of the cloned body"),
        Column("solar_system", "text"),
        Column("created_by", "text"),
        Column("simulation_type", "text"),
        Column("status", "text", doc="ready, running_simulation, completed, failed, deleted"),
        Column("state", "json", doc="the cloned BodyState: atmosphere, hydrosphere, ..."),
        Column("simulation_parameters", "json"),
        Column("created_at", "timestamp", doc="TwinCloned's timestamp"),
        Column("updated_at", "timestamp", doc="timestamp of the latest event that changed the row"),
        Column("expires_at", "timestamp"),
        Column("deleted_at", "timestamp", nullable=True, doc="when it expired or was deleted"),
        Column("ended_reason", "text", nullable=True, doc="expired or deleted"),
        Column("run_count", "int", doc="runs queued on the twin"),
        Column("active_run_count", "int", doc="runs under way"),
        Column("completed_run_count", "int"),
        Column("failed_run_count", "int"),
        Column("last_run_outcome", "text", nullable=True, doc="completed or failed"),
        Column("active_run_ids", "json", doc="ids of the runs under way, sorted"),
    ),
    primary_key=("id",),
    indexes=(
        Index("status_idx", "status"),
        Index("expires_at_idx", "expires_at"),
    ),
    checks=("run_count >= 0 AND active_run_count >= 0",),
)


class Cloned(Lean, kw_only=True):
    name: str
    description: str
    source_body: str
    solar_system: str
    created_by: str
    simulation_type: str
    state: msgspec.Raw
    simulation_parameters: msgspec.Raw
    expires_at: datetime


class RunStartedOnTwin(Lean, kw_only=True):
    run_id: UUID


class RunEndedOnTwin(Lean, kw_only=True):
    run_id: UUID
    outcome: str


class ExpiryExtended(Lean, kw_only=True):
    expires_at: datetime


class Expired(Lean, kw_only=True):
    expired_at: datetime


class Deleted(Lean, kw_only=True):
    deleted_at: datetime


class Queued(Lean, kw_only=True):
    twin_id: UUID


class TwinsProjection(Projection):
    name = "twins"
    version = 2  # 2: canonical JSON; statuses by domain/ folds; updated_at a max
    tables = (DIGITAL_TWINS,)
    handles = {
        TwinCloned: Cloned,
        TwinRunStarted: RunStartedOnTwin,
        TwinRunEnded: RunEndedOnTwin,
        TwinExpiryExtended: ExpiryExtended,
        TwinExpired: Expired,
        TwinDeleted: Deleted,
        RunQueued: Queued,
    }

    def apply(self, batch: Batch) -> None:
        fold = Fold(
            batch,
            DIGITAL_TWINS,
            mutable=(
                "status",
                "updated_at",
                "expires_at",
                "deleted_at",
                "ended_reason",
                "run_count",
                "active_run_count",
                "completed_run_count",
                "failed_run_count",
                "last_run_outcome",
                "active_run_ids",
            ),
        )
        fold.load(
            data.twin_id if isinstance(data, Queued) else data.originator_id
            for _, _, data in batch.events
        )
        changed: set[UUID] = set()
        for _, _, data in batch.events:
            if isinstance(data, Cloned):
                fold.create(data.originator_id, _cloned(data))
                changed.add(data.originator_id)
                continue
            twin_id = data.twin_id if isinstance(data, Queued) else data.originator_id
            row = fold.get(twin_id)
            if row is None:
                raise ProjectionDataError(f"twin {twin_id} is not in digital_twins")
            _apply(row, data)
            row["updated_at"] = max(row["updated_at"], data.timestamp)
            changed.add(twin_id)
        fold.flush(changed)


def _cloned(data: Cloned) -> dict[str, Any]:
    return {
        "name": data.name,
        "description": data.description,
        "source_body": data.source_body,
        "solar_system": data.solar_system,
        "created_by": data.created_by,
        "simulation_type": data.simulation_type,
        "status": str(TwinStatus.READY),
        "state": data.state,
        "simulation_parameters": data.simulation_parameters,
        "created_at": data.timestamp,
        "updated_at": data.timestamp,
        "expires_at": data.expires_at,
        "deleted_at": None,
        "ended_reason": None,
        "run_count": 0,
        "active_run_count": 0,
        "completed_run_count": 0,
        "failed_run_count": 0,
        "last_run_outcome": None,
        "active_run_ids": [],
    }


def _apply(row: dict[str, Any], data: Any) -> None:
    """One event's effect on a twin's row: the status through TwinLife (domain/twin.py), the
    same fold the aggregate uses."""
    if isinstance(data, Queued):
        row["run_count"] += 1
    elif isinstance(data, RunStartedOnTwin):
        _store_life(row, _life(row).run_started(data.run_id))
    elif isinstance(data, RunEndedOnTwin):
        _store_life(row, _life(row).run_ended(data.run_id, RunStatus(data.outcome)))
    elif isinstance(data, ExpiryExtended):
        row["expires_at"] = data.expires_at
    elif isinstance(data, Expired):
        _store_life(row, _life(row).end())
        row["deleted_at"] = data.expired_at
        row["ended_reason"] = "expired"
    elif isinstance(data, Deleted):
        _store_life(row, _life(row).end())
        row["deleted_at"] = data.deleted_at
        row["ended_reason"] = "deleted"
    else:  # pragma: no cover - every handled type is listed above
        raise ProjectionDataError(f"no twin handler for {type(data).__name__}")


def _life(row: dict[str, Any]) -> TwinLife:
    outcome = row["last_run_outcome"]
    return TwinLife(
        status=TwinStatus(row["status"]),
        last_outcome=None if outcome is None else TwinStatus(outcome),
        active_runs=frozenset(UUID(run_id) for run_id in row["active_run_ids"]),
        completed_runs=row["completed_run_count"],
        failed_runs=row["failed_run_count"],
    )


def _store_life(row: dict[str, Any], life: TwinLife) -> None:
    row["status"] = str(life.status)
    row["last_run_outcome"] = None if life.last_outcome is None else str(life.last_outcome)
    row["active_run_ids"] = sorted(str(run_id) for run_id in life.active_runs)
    row["active_run_count"] = len(life.active_runs)
    row["completed_run_count"] = life.completed_runs
    row["failed_run_count"] = life.failed_runs
