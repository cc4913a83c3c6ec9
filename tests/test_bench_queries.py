"""The benchmark's read queries: timed over a table grown with copies of the recorded runs.

No timing is asserted; what is checked is the data the queries are timed on."""

from __future__ import annotations

from collections import Counter

from infrastructure.application import TwinLedger
from infrastructure.bench.data import generate
from infrastructure.bench.runner import pad_results, query_latencies, record_runs, settle
from projections.runner import Projector
from projections.store import Store


def _counts(store: Store) -> tuple[Counter[str], Counter[str], int]:
    """Runs per twin, result rows per run, and twins."""
    with store.reading() as cursor:
        cursor.execute(store.sql("SELECT digital_twin_id FROM {t}", t="simulation_runs"))
        runs = Counter(str(row[0]) for row in cursor.fetchall())
        cursor.execute(store.sql("SELECT run_id FROM {t}", t="simulation_results"))
        rows = Counter(str(row[0]) for row in cursor.fetchall())
        cursor.execute(store.sql("SELECT count(*) FROM {t}", t="digital_twins"))
        twins = int(cursor.fetchone()[0])
    return runs, rows, twins


def test_padding_copies_runs_with_their_twins_and_results(database_url: str) -> None:
    ledger = TwinLedger.open(database_url)
    try:
        record_runs(ledger, generate(2, 10), 5)
    finally:
        ledger.close()
    with Projector.open(database_url) as p:
        p.catch_up()
        runs, rows, twins = _counts(p.store)
        recorded = sum(rows.values())
        assert (sorted(runs.values()), twins) == ([2], 1)

        assert pad_results(database_url, recorded * 2 + 1) == (recorded, recorded * 3)
        padded_runs, padded_rows, padded_twins = _counts(p.store)
        assert padded_twins == 3
        assert sorted(padded_runs.values()) == [2, 2, 2]  # each copy of the twin, its two runs
        assert sorted(padded_rows.values()) == sorted(list(rows.values()) * 3)
        assert pad_results(database_url, recorded) == (recorded * 3, recorded * 3)  # enough

    settle(database_url)
    latencies = query_latencies(database_url, repeats=5)
    assert {latency.rows for latency in latencies.values()} == {recorded * 3}
    series = latencies["series of one run"]
    assert 0 < series.p50 <= series.p95
    assert series.sql_p95 is not None and series.sql_p95 > 0
