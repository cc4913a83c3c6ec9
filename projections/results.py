"""simulation_results: a run's per-year results, one row per (run, year, result_type).

From each YearResultRecorded:
- ``economic``: ``data`` is the event's ``economic`` value as stored (spend_cents, revenue_cents,
  balance_cents, and any field the engine adds later);
- ``environmental``: ``data`` is the event's ``environment`` value as stored (temperature_k,
  pressure_kpa, composition_pct, ..., habitability);
- ``timeline``: ``data`` is ``{"key_events": [...]}``, the year's key events as stored, and the
  row exists **only for years that have key events**: most years have none, and an empty row
  per year would double the table for nothing. "No timeline row" means "no key event".

The values come from the lean decoder as canonical JSON (msgspec.Raw; projections/canonical.py:
keys sorted, numbers as the codec prints them), never re-listed field by field, so the table
follows the engine's value types without a change here; the same bytes on SQLite and
PostgreSQL, whether the event was stored compact (version 2) or named (version 1). This is the
projection that sees most events; its rows are written with COPY on PostgreSQL and one
executemany on SQLite per batch.
"""

from __future__ import annotations

from typing import Any

import msgspec

from domain.run import YearResultRecorded
from projections.base import Batch, Projection
from projections.decoding import Lean, is_empty_array, raw_is_canonical
from projections.store import iso
from projections.tables import Column, ForeignKey, Index, Table

RESULT_TYPES = ("economic", "environmental", "timeline")

SIMULATION_RESULTS = Table(
    name="simulation_results",
    doc="Per-year results of every run: economic, environmental, and timeline (key events).",
    columns=(
        Column("run_id", "uuid", doc="simulation_runs.id"),
        Column("year", "int", doc="simulated year, from 1"),
        Column("result_type", "text", doc="economic, environmental or timeline"),
        Column("data", "json", doc="the year's values as the event holds them"),
        Column("created_at", "timestamp", doc="YearResultRecorded's timestamp"),
    ),
    primary_key=("run_id", "year", "result_type"),
    foreign_keys=(ForeignKey("run_id", "simulation_runs"),),
    indexes=(
        Index(
            "timeline_gin",
            "data",
            postgres="USING gin ((data::jsonb) jsonb_path_ops)",
            where="result_type = 'timeline'",
            postgres_only=True,
        ),
    ),
    checks=("result_type IN ('economic', 'environmental', 'timeline')", "year >= 1"),
)
COLUMNS = SIMULATION_RESULTS.column_names
KINDS = tuple(column.kind for column in SIMULATION_RESULTS.columns)
COPY_KINDS = ("uuid_bytes", "int", "text", "json_bytes", "timestamp")
"""How the rows are COPYed on PostgreSQL (projections/store.py, COPY_TYPES): the run id as its
16 bytes and the JSON as it is, both by psycopg's C bytes dumper."""


class YearRecorded(Lean, kw_only=True):
    year: int
    economic: msgspec.Raw
    environment: msgspec.Raw
    key_events: msgspec.Raw


class ResultsProjection(Projection):
    name = "results"
    version = 2  # 2: canonical JSON; statuses by domain/ folds; updated_at a max
    tables = (SIMULATION_RESULTS,)
    depends_on = ("runs",)
    handles = {YearResultRecorded: YearRecorded}

    def apply(self, batch: Batch) -> None:
        store = batch.store
        rows: list[tuple[Any, ...]] = []
        add = rows.append
        # Canonical JSON (projections/canonical.py): the lean decoder gives it for this
        # versioned event (decoding.raw_is_canonical). PostgreSQL: binary COPY takes the Raw
        # values as they are (the json dumper sends their bytes, projections/store.py), no copy
        # and no call per value; SQLite stores text.
        postgres = store.postgres
        ids: dict[int, bytes] = {}  # a run id's 16 bytes, once per run (UUID.bytes is Python)
        run_id: bytes | str | None
        for _, _, data in batch.events:
            year = data.year
            if postgres:
                ident = data.originator_id
                run_id = ids.get(ident.int)
                if run_id is None:
                    run_id = ids[ident.int] = ident.bytes
                created_at = data.timestamp
                economic, environment = data.economic, data.environment
            else:
                run_id, created_at = str(data.originator_id), iso(data.timestamp)
                economic, environment = _text(data.economic), _text(data.environment)
            add((run_id, year, "economic", economic, created_at))
            add((run_id, year, "environmental", environment, created_at))
            if data.key_events != _NONE and not is_empty_array(data.key_events):
                key_events = b'{"key_events":' + bytes(data.key_events) + b"}"
                add(
                    (
                        run_id,
                        year,
                        "timeline",
                        key_events if postgres else _text(key_events),
                        created_at,
                    )
                )
        kinds = COPY_KINDS if store.postgres else None
        batch.bulk_insert(SIMULATION_RESULTS.name, COLUMNS, rows, kinds)


_NONE = msgspec.Raw(b"[]")
"""No key events, as the decoder gives it (canonical): compared in C before the general test."""


def _text(value: msgspec.Raw | bytes) -> str:
    return bytes(value).decode()


if not raw_is_canonical(YearResultRecorded):  # pragma: no cover - a guard for maintainers
    raise ImportError("ResultsProjection copies YearResultRecorded's JSON as canonical")
