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
projection that sees most events; its rows are written with COPY on PostgreSQL (a binary
stream built here, ``copy_stream``) and one executemany on SQLite per batch.
"""

from __future__ import annotations

import struct
from typing import Any
from uuid import UUID

import msgspec

from domain.run import YearResultRecorded
from projections.base import Batch, Projection
from projections.decoding import Lean, is_empty_array, raw_is_canonical
from projections.store import COPY_SIGNATURE, COPY_TRAILER, iso, pg_microseconds
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
        if batch.store.postgres and batch.background is None:  # catch-up: one binary stream
            batch.copy_binary(SIMULATION_RESULTS.name, COLUMNS, copy_stream(batch.events))
            return
        rows = result_rows(batch.events, postgres=batch.store.postgres)
        kinds = COPY_KINDS if batch.store.postgres else None
        batch.bulk_insert(SIMULATION_RESULTS.name, COLUMNS, rows, kinds)


def result_rows(events: list[Any], *, postgres: bool) -> list[tuple[Any, ...]]:
    """The rows of the batch's events, as SQLite's executemany or a PostgreSQL rebuild's
    background writer (binary COPY through psycopg, ``COPY_KINDS``) takes them."""
    rows: list[tuple[Any, ...]] = []
    add = rows.append
    # Canonical JSON (projections/canonical.py): the lean decoder gives it for this
    # versioned event (decoding.raw_is_canonical). PostgreSQL: binary COPY takes the Raw
    # values as they are (the json dumper sends their bytes, projections/store.py), no copy
    # and no call per value; SQLite stores text.
    ids: dict[int, bytes] = {}  # a run id's 16 bytes, once per run (UUID.bytes is Python)
    run_id: bytes | str | None
    for _, _, data in events:
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
            timeline = key_events if postgres else _text(key_events)
            add((run_id, year, "timeline", timeline, created_at))
    return rows


_FIELDS_AND_ID = struct.Struct(">hi16s")  # 5 fields; the run id: uuid, 16 bytes
_YEAR = struct.Struct(">ii")  # int4
_LENGTH = struct.Struct(">i")
_MOMENT = struct.Struct(">iq")  # timestamptz: microseconds since 2000-01-01 UTC
_KIND = {kind: _LENGTH.pack(len(kind)) + kind.encode() for kind in RESULT_TYPES}
_TIMELINE_OPEN, _TIMELINE_CLOSE = b'{"key_events":', b"}"


def copy_stream(events: list[Any]) -> bytes:
    """The binary COPY stream of the batch's simulation_results rows (run_id uuid, year int4,
    result_type text, data json, created_at timestamptz), in the order ``apply`` lists them:
    the bytes psycopg's ``write_row`` sends for those rows (json's binary form is its text),
    without its per-value dumper calls (docs/performance.md, issue 13, branch ``hotpath``).
    Tested equal to the rows path (tests/test_keep_current.py)."""
    parts: list[Any] = [COPY_SIGNATURE]
    extend = parts.extend
    pack_length, pack_year, pack_moment = _LENGTH.pack, _YEAR.pack, _MOMENT.pack
    economic_kind, environmental_kind = _KIND["economic"], _KIND["environmental"]
    timeline_kind = _KIND["timeline"]
    ident: Any = None
    head = b""
    for _, _, data in events:
        if data.originator_id is not ident and data.originator_id != ident:
            ident = data.originator_id  # a batch is runs of one run's years: once per run
            head = _FIELDS_AND_ID.pack(5, 16, _uuid(ident).bytes)
        year = pack_year(4, data.year)
        moment = pack_moment(8, pg_microseconds(data.timestamp))
        economic, environment = data.economic, data.environment
        extend(
            (
                head, year, economic_kind, pack_length(len(economic)), economic, moment,
                head, year, environmental_kind, pack_length(len(environment)), environment, moment,
            )
        )  # fmt: skip
        key_events = data.key_events
        if key_events != _NONE and not is_empty_array(key_events):
            size = len(key_events) + len(_TIMELINE_OPEN) + len(_TIMELINE_CLOSE)
            extend(
                (
                    head, year, timeline_kind, pack_length(size),
                    _TIMELINE_OPEN, key_events, _TIMELINE_CLOSE, moment,
                )
            )  # fmt: skip
    parts.append(COPY_TRAILER)
    return b"".join(parts)


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


_NONE = msgspec.Raw(b"[]")
"""No key events, as the decoder gives it (canonical): compared in C before the general test."""


def _text(value: msgspec.Raw | bytes) -> str:
    return bytes(value).decode()


if not raw_is_canonical(YearResultRecorded):  # pragma: no cover - a guard for maintainers
    raise ImportError("ResultsProjection copies YearResultRecorded's JSON as canonical")
