"""A small run of the benchmark: every measurement and baseline completes with a real number.

Speed is never asserted here (docs/performance.md holds the numbers of a full run)."""

from __future__ import annotations

import math

from infrastructure.bench.runner import run_bench

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
            "append / raw COPY of the same rows",
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
