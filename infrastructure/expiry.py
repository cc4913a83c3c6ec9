"""Ending twins past their expiry: the cleanup job of the seed design, event-sourced.

``expire_twins`` finds candidates through the indexed digital_twins table (expires_at), in
batches with keyset pagination, so memory stays bounded whatever the number of twins and a
lagging table cannot make it loop. The event log decides: each candidate is loaded, and only a
twin that has really expired and not ended gets TwinExpired. A second call emits nothing.

A run still queued or under way on an expiring twin is cancelled first, in the same atomic
write as the twin's TwinExpired (reason "twin expired"); an executor in another process sees
the cancel at its next chunk and stops. Waiting for runs instead could keep an expired twin
alive indefinitely, which is what expiry exists to prevent (docs/lifecycle.md).

One twin (or one of its runs) whose events cannot be read (a missing version, an event that no
longer decodes) is skipped and reported in ``ExpiryReport.unreadable``; the others expire all
the same. A projection that cannot catch up is reported in ``behind``: candidates then come
from the tables as they are, and the log still decides each one (docs/operations.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.utils import retry

from domain.aggregate import Aggregate
from domain.errors import ConcurrentWrite
from domain.run import SimulationRun
from infrastructure.application import TwinLedger
from infrastructure.errors import UnreadableStream
from projections.runner import ProjectionsStopped, Projector
from projections.store import Store

DEFAULT_BATCH = 500
EXPIRED_REASON = "twin expired"


@dataclass
class ExpiryReport:
    examined: int = 0
    expired: int = 0
    runs_cancelled: int = 0
    retried: int = 0
    unreadable: list[str] = field(default_factory=list)  # one line per twin skipped
    behind: str | None = None  # why the read tables could not catch up first


def _candidates(
    store: Store, now: datetime, after: tuple[Any, Any] | None, limit: int
) -> list[tuple[Any, Any]]:
    """Up to ``limit`` (expires_at, id) of live twins expired at ``now``, past ``after``."""
    params: list[Any] = [store.timestamp(now)]
    keyset = ""
    if after is not None:
        keyset = " AND (expires_at > %s OR (expires_at = %s AND id > %s))"
        params += [after[0], after[0], after[1]]
    statement = store.sql(
        "SELECT expires_at, id FROM {t} WHERE status <> 'deleted' AND expires_at <= %s"
        + keyset
        + " ORDER BY expires_at, id LIMIT %s",
        t="digital_twins",
    )
    with store.reading() as cursor:
        cursor.execute(statement, [*params, limit])
        return [(row[0], row[1]) for row in cursor.fetchall()]


def _open_runs(store: Store, twin_ids: list[Any]) -> dict[str, list[UUID]]:
    """Queued or running runs of the given twins, by twin id (as text)."""
    if not twin_ids:
        return {}
    marks = ", ".join(["%s"] * len(twin_ids))
    statement = store.sql(
        "SELECT digital_twin_id, id FROM {t} WHERE status IN ('queued', 'running') "
        f"AND digital_twin_id IN ({marks})",
        t="simulation_runs",
    )
    found: dict[str, list[UUID]] = {}
    with store.reading() as cursor:
        cursor.execute(statement, twin_ids)
        for twin_id, run_id in cursor.fetchall():
            found.setdefault(str(twin_id), []).append(UUID(str(run_id)))
    return found


def expire_twins(
    ledger: TwinLedger,
    projector: Projector,
    *,
    now: datetime | None = None,
    batch: int = DEFAULT_BATCH,
) -> ExpiryReport:
    """Emit TwinExpired for every twin past expires_at that has not ended; see module doc."""
    moment = now if now is not None else ledger.clock()
    report = ExpiryReport()
    try:
        projector.catch_up()
    except ProjectionsStopped as stopped:
        report.behind = str(stopped)
    store = projector.store
    after: tuple[Any, Any] | None = None
    while True:
        page = _candidates(store, moment, after, batch)
        if not page:
            return report
        after = page[-1]
        report.examined += len(page)
        open_runs = _open_runs(store, [twin_id for _, twin_id in page])
        changed: list[Aggregate] = []
        unreadable: set[UUID] = set()
        for _, twin_id in page:
            try:
                expired, cancelled = _expire_one(
                    ledger, UUID(str(twin_id)), moment, open_runs.get(str(twin_id), [])
                )
            except UnreadableStream as error:
                unreadable.add(UUID(str(twin_id)))
                report.unreadable.append(f"twin {twin_id} not expired: {error}")
                continue
            if expired is not None:
                changed.extend(expired)
                report.expired += 1
                report.runs_cancelled += cancelled
        if not changed:
            continue
        try:
            ledger.save_and_notify(*changed)
        except ConcurrentWrite:
            # Someone changed one of these aggregates meanwhile: redo this page twin by twin.
            report.retried += 1
            report.expired -= sum(1 for a in changed if not isinstance(a, SimulationRun))
            report.runs_cancelled -= sum(1 for a in changed if isinstance(a, SimulationRun))
            for _, twin_id in page:
                if UUID(str(twin_id)) in unreadable:
                    continue
                expired, cancelled = _expire_alone(
                    ledger, UUID(str(twin_id)), moment, open_runs.get(str(twin_id), [])
                )
                report.expired += expired
                report.runs_cancelled += cancelled


def _expire_one(
    ledger: TwinLedger, twin_id: UUID, now: datetime, open_runs: list[UUID]
) -> tuple[list[Aggregate] | None, int]:
    """The twin and its cancelled runs, changed but not saved; None if there is nothing to do."""
    twin = ledger.get_twin(twin_id)
    if twin.ended or not twin.is_expired(now):
        return None, 0
    changed: list[Aggregate] = []
    run_ids = set(open_runs) | set(twin.active_runs)
    for run_id in sorted(run_ids, key=str):
        run: SimulationRun = ledger.get_run(run_id)
        if not run.ended:
            run.cancel(EXPIRED_REASON, "twinledger expire")
            twin.end_run(run.id, run.status)
            changed.append(run)
    twin.expire(now)
    return [*changed, twin], len(changed)


@retry(ConcurrentWrite, max_attempts=5, wait=0.01)
def _expire_alone(
    ledger: TwinLedger, twin_id: UUID, now: datetime, open_runs: list[UUID]
) -> tuple[int, int]:
    """Expire one twin in its own write (reloading it on a conflict); (expired, cancelled)."""
    changed, cancelled = _expire_one(ledger, twin_id, now, open_runs)
    if changed is None:
        return 0, 0
    ledger.save_and_notify(*changed)
    return 1, cancelled
