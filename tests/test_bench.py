"""A small run of the benchmark: every measurement and baseline completes with a real number.

Speed is never asserted here (docs/performance.md holds the numbers of a full run)."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime

import pytest

from infrastructure.application import TwinLedger
from infrastructure.bench.data import generate
from infrastructure.bench.runner import (
    queued_state,
    raw_copy_rebuild_like_for_like,
    read_tables,
    record_runs,
    run_bench,
    started_run,
    started_state,
    year_state,
)
from infrastructure.codec import MsgspecMapper, NullTranscoder
from infrastructure.settings import resolve_database
from projections.checksum import table_checksum
from projections.runner import Projector
from projections.store import Store
from tests.conftest import fresh_postgres_url

EXPECTED = {
    "append",
    "project (catch up)",
    "rebuild from 0",
    "write path vs direct CRUD, bulk",
    "write path vs direct CRUD, as the CLI and API do it",
    "end to end, one 1000-year run",
    "bytes per YearResultRecorded (state)",
    "bytes per stored event (table and indexes)",
    "query p50: series of one run",
    "query p95: series of one run",
    "query p50: one year across a twin's runs",
    "query p95: one year across a twin's runs",
    "query p50: runs counted by status",
    "query p95: runs counted by status",
}


def test_a_small_benchmark_completes_every_measurement(database_url: str) -> None:
    report = run_bench(database_url, runs=3, years=20, writers=(1, 2), repeats=5)
    names = {m.name for m in report.measurements}
    expected = set(EXPECTED)
    if report.backend == "postgresql":
        expected |= {
            "1 concurrent writers",
            "2 concurrent writers",
            "append / raw COPY like for like",
            "append / raw COPY ceiling",
            "rebuild / raw COPY like for like",
            "rebuild / raw COPY ceiling",
        }
        assert (
            "raw COPY"
            in next(m for m in report.measurements if m.name == "rebuild from 0").baseline
        )
    assert names == expected
    for measurement in report.measurements:
        assert measurement.value is not None and math.isfinite(measurement.value), measurement
        assert measurement.value >= 0, measurement
    append = next(m for m in report.measurements if m.name == "append")
    assert "stock eventsourcing" in append.baseline
    assert report.events == 3 * 22
    for measurement in report.measurements:
        if "concurrent writers" in measurement.name:
            assert "every event exactly once: yes" in measurement.note


def test_the_like_for_like_baseline_encodes_the_rows_the_ledger_stores() -> None:
    """The raw-COPY baseline writes the append's very rows: each state byte for byte what the
    ledger's mapper stores for the same values and timestamp (so the ratio compares the work
    of writing the same rows, not smaller ones)."""
    generated = generate(1, 30)[0]
    twin_id = uuid.uuid4()
    run = started_run(generated, twin_id)
    for year in generated.years:
        run.record_year(year)
    mapper = MsgspecMapper(transcoder=NullTranscoder())
    events = run.collect_events()
    stored = [mapper.to_stored_event(event) for event in events]
    assert len(stored) == 32
    queued, started, *years = events
    assert stored[0].state == queued_state(run.id, twin_id, generated.seed, 30, queued.timestamp)
    assert stored[1].state == started_state(run.id, started.timestamp)
    assert any(year.key_events for year in generated.years)  # the nested list is compared too
    for event, row, result in zip(years, stored[2:], generated.years, strict=True):
        assert row.state == year_state(result, event.timestamp)
    assert year_state(generated.years[0], datetime.now(UTC)) != stored[2].state  # time counts


@pytest.mark.postgres
def test_the_rebuilds_baseline_writes_the_tables_the_rebuild_writes() -> None:
    """The rebuild's like-for-like raw COPY leaves every table a full rebuild writes with the
    same rows (the same checksums), the same primary keys, indexes and foreign keys."""
    with fresh_postgres_url() as source, fresh_postgres_url() as copy:
        data = generate(3, 20)
        ledger = TwinLedger.open(source)
        try:
            record_runs(ledger, data, 10)
        finally:
            ledger.close()
        with Projector.open(source) as projector:
            projector.rebuild(None)
        tables = read_tables(source)
        rows, seconds = raw_copy_rebuild_like_for_like(copy, tables)
        assert rows == sum(len(g.result_rows()) for g in data) and seconds > 0
        assert {table.name for table, _ in tables} == {
            "digital_twins",
            "simulation_runs",
            "simulation_results",
            "experiments",
            "experiment_iterations",
        }
        sums = {}
        for url in (source, copy):
            store = Store(resolve_database(url))
            try:
                with store.reading() as cursor:
                    sums[url] = [table_checksum(store, cursor, t) for t, _ in tables]
                    cursor.execute(
                        "SELECT conname, contype FROM pg_constraint c JOIN pg_namespace n"
                        " ON n.oid = c.connamespace WHERE n.nspname = %s ORDER BY 1",
                        (store.schema,),
                    )
                    constraints = [r for r in cursor.fetchall() if "events" not in r[0]]
                    cursor.execute(
                        "SELECT indexname FROM pg_indexes WHERE schemaname = %s ORDER BY 1",
                        (store.schema,),
                    )
                    indexes = [r[0] for r in cursor.fetchall()]
            finally:
                store.close()
            sums[url + "constraints"] = constraints
            sums[url + "indexes"] = indexes
        assert sums[source] == sums[copy]
        assert sums[source][2][0] == rows  # simulation_results: (row count, digest)
        wanted = {t.name + "_pkey" for t, _ in tables}
        wanted |= {f"{t.name}_{fk.column}_fkey" for t, _ in tables for fk in t.foreign_keys}
        assert wanted <= {name for name, _ in sums[copy + "constraints"]}
        assert set(sums[copy + "indexes"]) <= set(sums[source + "indexes"])
        assert "simulation_results_timeline_gin" in sums[copy + "indexes"]
