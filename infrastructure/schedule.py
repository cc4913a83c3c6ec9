"""Scheduled operations: expiry, retention, replay and chain verification, once across the fleet.

Any number of ``twinledger daemon`` processes may run; each tick, the one that
takes the store's schedule lock runs the operations that are due and records when, in the table
``scheduled_operations`` (one row per operation: the last start, finish and outcome) and
``scheduled_operation_runs`` (the history). "Due" is read from that table under the lock, so an
operation runs once per interval whatever the number of processes.

Verification replays the runs completed since the last verification (its log position is kept
in the operation's row), so each completed run is re-simulated once, not every tick.
Chain verification checks every stream's hash chain in one pass (infrastructure/integrity.py,
as ``twinledger verify``): a break is a failed outcome naming the first broken stream and
version; an intact log records its position and digest in the operation's state.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from eventsourcing.utils import get_topic

from domain.errors import ValidationError
from infrastructure.application import TwinLedger, utc_now
from infrastructure.locks import StoreLock
from projections.runner import Projector
from projections.store import Store

OPERATIONS_TABLE = "scheduled_operations"
HISTORY_TABLE = "scheduled_operation_runs"
DEFAULT_EVERY = {
    "expire": timedelta(minutes=5),
    "retention": timedelta(days=1),
    "verify": timedelta(hours=1),
    "verify-chain": timedelta(days=1),
}
VERIFY_BATCH = 200  # runs replayed per tick at most; the rest wait for the next tick


@dataclass(frozen=True)
class Done:
    """One operation done by this process in a tick."""

    name: str
    outcome: str
    ok: bool


class Scheduler:
    """Runs due operations on one store; ``tick()`` is safe to call from many processes."""

    def __init__(
        self,
        ledger: TwinLedger,
        every: dict[str, timedelta] | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        assert ledger.database is not None
        self.ledger = ledger
        self.database = ledger.database
        self.every = dict(DEFAULT_EVERY if every is None else every)
        unknown = set(self.every) - set(DEFAULT_EVERY)
        if unknown:
            raise ValidationError("every", f"unknown operations {sorted(unknown)}")
        self.clock = clock
        self.holder = f"{socket.gethostname()}:{os.getpid()}"

    def tick(self) -> list[Done]:
        """Run every operation that is due, if this process gets the schedule lock."""
        lock = StoreLock(self.database, "schedule")
        if not lock.try_acquire():
            return []
        try:
            with Projector(self.database) as projector:
                store = projector.store
                self._ensure(store)
                done = []
                for name, every in self.every.items():
                    if self._due(store, name, every):
                        done.append(self._run(store, projector, name))
                return done
        finally:
            lock.release()

    def run_forever(self, *, poll_seconds: float, stop: threading.Event) -> None:
        while not stop.is_set():
            self.tick()
            stop.wait(poll_seconds)

    # --- the operations ---------------------------------------------------------------------

    def _expire(self, store: Store, projector: Projector) -> str:
        from infrastructure.expiry import expire_twins

        report = expire_twins(self.ledger, projector, now=self.clock())
        return f"expired {report.expired} twins ({report.runs_cancelled} runs cancelled)"

    def _retention(self, store: Store, projector: Projector) -> str:
        from infrastructure.retention import Windows, apply_retention

        report = apply_retention(projector, self.clock(), Windows(), dry_run=False)
        return f"removed {report.results} results, {report.runs} runs, {report.twins} twins rows"

    def _verify(self, store: Store, projector: Projector) -> str:
        from domain.run import RunCompleted

        position = int(self._state(store, "verify") or 0)
        notifications = self.ledger.recorder.select_notifications(
            start=position,
            limit=VERIFY_BATCH,
            topics=[get_topic(RunCompleted)],
            inclusive_of_start=False,
        )
        diverged = []
        for notification in notifications:
            run_id = str(notification.originator_id)
            report = self.ledger.replay_run(run_id, allow_other_engine=True)
            if report.divergence is not None:
                diverged.append(run_id)
            position = notification.id
        self._set_state(store, "verify", str(position))
        text = f"verified {len(notifications)} runs up to position {position}"
        if diverged:
            raise Diverged(f"{text}; DIVERGED: {', '.join(diverged)}")
        return text

    def _verify_chain(self, store: Store, projector: Projector) -> str:
        from infrastructure.integrity import scan_log

        scan = scan_log(self.ledger.recorder)
        if scan.broken is not None:
            raise ChainBroken(f"BROKEN at {scan.broken}")
        # Every chain intact is not enough: a log rewritten with consistent new hashes scans
        # intact too. The log is append-only, so its digest at the position verified last
        # time must be the digest recorded then (a second pass, up to that position).
        earlier = (self._state(store, "verify-chain") or "").split()
        if len(earlier) == 2 and int(earlier[0]) != scan.position:
            position, digest = int(earlier[0]), earlier[1]
            then = scan_log(self.ledger.recorder, position)
            if then.digest != digest:
                raise ChainBroken(
                    f"REWRITTEN: the digest at position {position} is {then.digest}, "
                    f"it was {digest} when verified last"
                )
        self._set_state(store, "verify-chain", f"{scan.position} {scan.digest}")
        return (
            f"intact: {scan.events} events in {scan.streams} streams; "
            f"digest {scan.digest} at position {scan.position}"
        )

    # --- bookkeeping ------------------------------------------------------------------------

    def _run(self, store: Store, projector: Projector, name: str) -> Done:
        started = self.clock()
        with store.transaction() as cursor:
            cursor.execute(
                store.sql(
                    "UPDATE {t} SET last_started_at = %s, holder = %s WHERE name = %s",
                    t=OPERATIONS_TABLE,
                ),
                (store.timestamp(started), self.holder, name),
            )
        action: Callable[[Store, Projector], str] = getattr(self, "_" + name.replace("-", "_"))
        try:
            outcome, ok = action(store, projector), True
        except Exception as error:  # recorded; the next tick tries again
            outcome, ok = f"{type(error).__name__}: {error}", False
        finished = self.clock()
        with store.transaction() as cursor:
            cursor.execute(
                store.sql(
                    "UPDATE {t} SET last_finished_at = %s, last_outcome = %s, last_ok = %s "
                    "WHERE name = %s",
                    t=OPERATIONS_TABLE,
                ),
                (store.timestamp(finished), outcome[:2000], ok, name),
            )
            cursor.execute(
                store.sql(
                    "INSERT INTO {t} (name, started_at, finished_at, holder, outcome, ok) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    t=HISTORY_TABLE,
                ),
                (
                    name,
                    store.timestamp(started),
                    store.timestamp(finished),
                    self.holder,
                    outcome[:2000],
                    ok,
                ),
            )
        return Done(name, outcome, ok)

    def _due(self, store: Store, name: str, every: timedelta) -> bool:
        with store.reading() as cursor:
            cursor.execute(
                store.sql("SELECT last_started_at FROM {t} WHERE name = %s", t=OPERATIONS_TABLE),
                (name,),
            )
            row = cursor.fetchone()
        last = None if row is None else row[0]
        if last is None:
            return True
        moment = last if isinstance(last, datetime) else datetime.fromisoformat(last)
        return self.clock() >= moment + every

    def _state(self, store: Store, name: str) -> str | None:
        with store.reading() as cursor:
            cursor.execute(
                store.sql("SELECT state FROM {t} WHERE name = %s", t=OPERATIONS_TABLE), (name,)
            )
            row = cursor.fetchone()
        return None if row is None else row[0]

    def _set_state(self, store: Store, name: str, state: str) -> None:
        with store.transaction() as cursor:
            cursor.execute(
                store.sql("UPDATE {t} SET state = %s WHERE name = %s", t=OPERATIONS_TABLE),
                (state, name),
            )

    def _ensure(self, store: Store) -> None:
        """Create the two tables and one row per operation (under the schedule lock)."""
        stamp = "timestamptz" if store.postgres else "text"
        serial = "bigserial" if store.postgres else "integer"
        with store.transaction() as cursor:
            cursor.execute(
                store.sql(
                    "CREATE TABLE IF NOT EXISTS {t} (name text PRIMARY KEY, "
                    f"last_started_at {stamp}, last_finished_at {stamp}, last_outcome text, "
                    "last_ok boolean, holder text, state text)",
                    t=OPERATIONS_TABLE,
                )
            )
            cursor.execute(
                store.sql(
                    f"CREATE TABLE IF NOT EXISTS {{t}} (id {serial} PRIMARY KEY, "
                    f"name text NOT NULL, started_at {stamp} NOT NULL, "
                    f"finished_at {stamp} NOT NULL, holder text, outcome text, ok boolean)",
                    t=HISTORY_TABLE,
                )
            )
            for name in DEFAULT_EVERY:
                cursor.execute(
                    store.sql(
                        "INSERT INTO {t} (name) VALUES (%s) ON CONFLICT (name) DO NOTHING",
                        t=OPERATIONS_TABLE,
                    ),
                    (name,),
                )


class Diverged(Exception):
    """Scheduled verification found runs whose replay differs from their record."""


class ChainBroken(Exception):
    """Scheduled chain verification found a stream whose events do not match its hash chain."""


def history(ledger: TwinLedger) -> list[dict[str, Any]]:
    """Every scheduled operation done on this store, oldest first."""
    assert ledger.database is not None
    with Projector(ledger.database) as projector:
        store = projector.store
        with store.reading() as cursor:
            if not store.table_exists(cursor, HISTORY_TABLE):
                return []
            cursor.execute(
                store.sql(
                    "SELECT name, started_at, finished_at, holder, outcome, ok FROM {t} "
                    "ORDER BY id",
                    t=HISTORY_TABLE,
                )
            )
            names = ["name", "started_at", "finished_at", "holder", "outcome", "ok"]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
