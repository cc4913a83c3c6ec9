"""The HTTP load benchmark, small: it completes on both back ends and only talks to loopback.

The real numbers (50 clients, 1M result rows on PostgreSQL) are in docs/performance.md; no test
asserts a time.
"""

from __future__ import annotations

import asyncio

import pytest

from infrastructure.bench.http_load import drive, run_http_load, summarise


def test_a_small_load_completes(database_url: str) -> None:
    report = run_http_load(
        database_url, clients=4, requests=40, seconds=120, runs=1, years=30, rows=300
    )
    assert report.requests == 40
    assert report.result_rows >= 300
    assert report.runs >= 2  # the recorded run and its copies
    assert {e.name for e in report.endpoints} == {"results", "runs"}
    assert report.server_cpu_ms_per_request is not None  # Linux: read from /proc
    assert report.server_cpu_ms_per_request > 0
    for endpoint in report.endpoints:
        assert endpoint.errors == 0, endpoint
        assert 0 < endpoint.p50 <= endpoint.p95 <= endpoint.max
        assert endpoint.mean_bytes > 0


def test_revalidating_clients_get_304_for_ended_runs(database_url: str) -> None:
    report = run_http_load(
        database_url,
        clients=2,
        requests=30,
        seconds=120,
        runs=2,
        years=30,
        rows=0,
        revalidate=True,
    )
    results = next(e for e in report.endpoints if e.name == "results")
    runs = next(e for e in report.endpoints if e.name == "runs")
    assert results.errors == 0 and runs.errors == 0, report
    assert results.not_modified > 0  # each client asks again for a run it holds
    assert results.not_modified < results.count  # the first answer of each run is in full
    assert runs.not_modified == 0  # list pages carry no validator


def test_the_load_goes_to_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        asyncio.run(
            drive(
                "http://192.0.2.1:8000",
                ["r"],
                ["t"],
                clients=1,
                requests=1,
                seconds=1,
                think=(0, 0),
            )
        )


def test_percentiles_per_endpoint() -> None:
    from infrastructure.bench.http_load import Sample

    samples = [Sample("runs", float(ms), True, 10) for ms in range(1, 101)]
    samples.append(Sample("results", 5.0, False, 0, "503"))
    (runs,) = (e for e in summarise(samples) if e.name == "runs")
    assert (runs.count, runs.p50, runs.p95, runs.max) == (100, 50.5, 95.0, 100.0)
    (results,) = (e for e in summarise(samples) if e.name == "results")
    assert (results.errors, results.failures) == (1, {"503": 1})
