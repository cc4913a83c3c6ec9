"""A small run of the benchmark: every measurement and baseline completes with a real number.

Speed is never asserted here (docs/performance.md holds the numbers of a full run)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import fresh_postgres_url

from domain.errors import ValidationError
from infrastructure.bench.runner import run_bench
from infrastructure.bench.writers_profile import profile_all, profile_rows

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


@pytest.mark.postgres
def test_the_writers_profile_accounts_for_the_writers_time() -> None:
    """`bench --writers-profile`, small: every share is a share, the states of a writer's
    backends cover its sampled time, and the one-writer run never waits for the lock."""
    with fresh_postgres_url() as url:
        profiles = profile_all(url, (1, 2), runs_each=2, years=250)
    one = profiles[0]
    for profile in profiles:
        assert profile.events_per_second > 0 and profile.samples > 0
        assert math.isclose(sum(profile.states.values()), 1.0, abs_tol=0.01)
        assert profile.client_us > 0 and profile.backend_us > 0
        assert profile.append_us <= profile.client_us
        for share in (profile.client_cpu, profile.lock_held, profile.cores_busy, profile.ours):
            assert 0 <= share <= 1.01
    assert one.states["awaiting the table lock"] == 0
    assert len(profile_rows(profiles)) == 26 and all(len(v) == 2 for _, v in profile_rows(profiles))


def test_the_writers_profile_needs_postgresql(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="db: --writers-profile needs PostgreSQL"):
        profile_all(f"sqlite:///{tmp_path}/x.db", (1,), runs_each=1, years=5)
