"""Baseline: eventsourcing's stock configuration on the same data.

Dataclass events through the library's default Mapper and JSON transcoder, saved like ours (one
save per chunk), and projected by its per-event Projection path: each event is decoded and
written, with its tracking record, in its own transaction.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import InfrastructureFactory, Tracking, TrackingRecorder
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.projection import Projection
from eventsourcing.sqlite import SQLiteTrackingRecorder
from eventsourcing.utils import Environment, get_topic
from psycopg.sql import SQL, Identifier


class StockRun(Aggregate):
    @event("Queued")
    def __init__(self, pattern: str, duration_years: int, seed: int) -> None:
        self.pattern = pattern
        self.duration_years = duration_years
        self.seed = seed
        self.years = 0

    @event("YearRecorded")
    def record_year(
        self,
        year: int,
        economic: dict[str, Any],
        environment: dict[str, Any],
        key_events: list[Any],
    ) -> None:
        self.years = year


class StockLedger(Application[UUID]):
    name = "StockLedger"


class StockView(ABC):
    """Writes one result row per event, with its tracking record, in one transaction."""

    @abstractmethod
    def put_result(self, run_id: UUID, year: int, data: str, tracking: Tracking) -> None:
        """One back end's statement (PostgresStockView, SQLiteStockView below)."""


class PostgresStockView(PostgresTrackingRecorder, StockView):
    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        schema = Identifier(self.datastore.schema)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {}.stock_results (run_id uuid, year int, data jsonb, "
                "PRIMARY KEY (run_id, year))"
            ).format(schema)
        )
        self.insert = SQL("INSERT INTO {}.stock_results VALUES (%s, %s, %s)").format(schema)

    def put_result(self, run_id: UUID, year: int, data: str, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as curs:
            self._insert_tracking(curs, tracking)
            curs.execute(self.insert, (run_id, year, data))


class SQLiteStockView(SQLiteTrackingRecorder, StockView):
    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            "CREATE TABLE IF NOT EXISTS stock_results (run_id TEXT, year INTEGER, data TEXT, "
            "PRIMARY KEY (run_id, year))",
        ]

    def put_result(self, run_id: UUID, year: int, data: str, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as curs:
            self._insert_tracking(curs, tracking)
            curs.execute("INSERT INTO stock_results VALUES (?, ?, ?)", (run_id.hex, year, data))


class StockProjection(Projection[Any]):
    name = "stockresults"
    topics = (get_topic(StockRun.YearRecorded),)  # type: ignore[attr-defined]

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.insert_tracking(tracking)

    @process_event.register
    def _(self, domain_event: StockRun.YearRecorded, tracking: Tracking) -> None:  # type: ignore[name-defined]
        data = json.dumps(
            {"economic": domain_event.economic, "environment": domain_event.environment}
        )
        self.view.put_result(domain_event.originator_id, domain_event.year, data, tracking)


def open_stock(env: dict[str, str]) -> tuple[StockLedger, StockProjection]:
    application = StockLedger(env)
    view_class = (
        PostgresStockView if env["PERSISTENCE_MODULE"].endswith("postgres") else SQLiteStockView
    )
    view: TrackingRecorder = InfrastructureFactory.construct(
        Environment(StockProjection.name, env)
    ).tracking_recorder(view_class)
    return application, StockProjection(view=view)


def project_all(
    application: StockLedger, projection: StockProjection, *, limit: int, batch: int = 500
) -> int:
    """The library's per-event path: decode each event, process it in its own transaction.
    Stops after ``limit`` events (the path is slow; its rate is what is measured)."""
    count = 0
    position = projection.view.max_tracking_id(application.name) or 0
    while True:
        notes = application.recorder.select_notifications(
            start=position, limit=batch, topics=projection.topics, inclusive_of_start=False
        )
        if not notes:
            return count
        for note in notes:
            projection.process_event(
                application.mapper.to_domain_event(note), Tracking(application.name, note.id)
            )
            count += 1
            if count >= limit:
                return count
        position = notes[-1].id
