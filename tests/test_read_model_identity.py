"""The same events give the same read tables and the same output, byte for byte: on SQLite and
PostgreSQL, after an archive and an import, and whatever the order of the streams in the log.

- canonical JSON (projections/canonical.py) in the tables and in `twins|runs|results --format
  json|csv`: keys sorted, floats as the event codec prints them (4.6e18 stays a float);
- read tables are a function of the events' content, not of their order across streams
  (digital_twins.updated_at is the latest timestamp, not the last applied).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import pytest
from eventsourcing.persistence import StoredEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.run import RunQueued
from domain.values import KeyEvent, RunStatus
from infrastructure.application import TwinLedger
from infrastructure.archive import export, import_archive
from infrastructure.settings import resolve_database
from projections.canonical import canonical_text
from projections.runner import PROJECTIONS, Projector
from projections.store import Store
from tests.conftest import fresh_postgres_url
from tests.projection_scenario import BUDGET, build, copy_events
from tests.test_read_cli import ok

AWKWARD = {
    "liquid_water_kg": 4.6e18,  # a float jsonb would print as an integer
    "spend_cents": 4_600_000_000_000_000_000,  # an integer of the same size
    "tiny": 1e-7,
    "tenth": 0.1,
    "one": 1.0,
    "Zeta": 2,
    "aa": {"b": 1, "a": [3.0, 2]},
}


def awkward_run(ledger: TwinLedger, twin: UUID, pattern: str = "mars_terraform") -> UUID:
    """A run whose year 1 has a key event holding numbers and keys jsonb would reprint."""
    run_id = ledger.queue_run(twin, pattern=pattern, duration_years=3, budget_cents=BUDGET, seed=7)
    done = ledger.execute_run(
        ledger.queue_run(twin, pattern=pattern, duration_years=3, budget_cents=BUDGET, seed=7)
    )
    year = next(iter(ledger.recorded_years(done.id)))
    run, twin_aggregate = ledger.get_run(run_id), ledger.get_twin(twin)
    run.start()
    twin_aggregate.start_run(run.id, ledger.clock())
    event = KeyEvent(year=1, name="odd_numbers", description="numbers", data=AWKWARD)
    run.record_year(msgspec.structs.replace(year, key_events=[event]))
    run.fail("stopped by the test")
    twin_aggregate.end_run(run.id, RunStatus.FAILED)
    ledger.save(run, twin_aggregate)
    return run_id


def table_text(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every read table, canonicalised: ids and timestamps as text, JSON as the
    stored text itself (it must be the same bytes on both back ends), sorted."""
    store = Store(resolve_database(url))
    tables: dict[str, list[tuple[Any, ...]]] = {}
    try:
        with store.reading() as cursor:
            for projection in PROJECTIONS:
                for table in projection.tables:
                    names = ", ".join(
                        f'"{c.name}"::text'
                        if store.postgres and c.kind == "json"
                        else f'"{c.name}"'
                        for c in table.columns
                    )
                    cursor.execute(store.sql(f"SELECT {names} FROM {{t}}", t=table.name))
                    kinds = [c.kind for c in table.columns]
                    tables[table.name] = sorted(
                        (
                            tuple(_plain(k, v) for k, v in zip(kinds, row, strict=True))
                            for row in cursor.fetchall()
                        ),
                        key=repr,
                    )
    finally:
        store.close()
    return tables


def _plain(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "uuid":
        return str(UUID(str(value)))
    if kind == "timestamp":
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
        return moment.astimezone(UTC).isoformat(timespec="microseconds")
    if kind == "json":
        text = value.encode() if isinstance(value, str) else bytes(value)
        assert canonical_text(text) == text, f"not canonical: {text[:200]!r}"
        return text
    return value


def caught_up(url: str) -> dict[str, tuple[int, str]]:
    with Projector(resolve_database(url)) as p:
        p.catch_up()
        return p.checksums()


def cli_outputs(url: str, run_ids: list[UUID]) -> dict[str, str]:
    out = {}
    for output in ("json", "csv"):
        out[f"twins {output}"] = ok(url, "twins", "--format", output)
        out[f"runs {output}"] = ok(url, "runs", "--format", output)
        for run_id in run_ids:
            out[f"results {run_id} {output}"] = ok(url, "results", str(run_id), "--format", output)
    return out


def test_the_same_events_print_the_same_bytes_on_both_back_ends(
    ledger: TwinLedger, other_database_url: str, database_url: str
) -> None:
    s = build(ledger)
    odd = awkward_run(ledger, s.mars)
    other = TwinLedger.open(other_database_url)
    try:
        copy_events(ledger, other)
    finally:
        other.close()
    runs = [s.completed, s.failed, s.running, odd]

    assert caught_up(database_url) == caught_up(other_database_url)
    here, there = table_text(database_url), table_text(other_database_url)
    for name in here:
        assert here[name] == there[name], name
    mine, theirs = cli_outputs(database_url, runs), cli_outputs(other_database_url, runs)
    for name in mine:
        assert mine[name] == theirs[name], name

    results = mine[f"results {odd} json"]
    assert (
        '"liquid_water_kg": 4.6e18' in results and '"spend_cents": 4600000000000000000' in results
    )
    timeline = [r for r in here["simulation_results"] if r[0] == str(odd) and r[2] == "timeline"]
    assert b'"data":{"Zeta":2,"aa":{"a":[3.0,2],"b":1},"liquid_water_kg":4.6e18' in timeline[0][3]
    assert "4.6e18" in mine[f"results {odd} csv"]


# --- order across streams ---------------------------------------------------------------------


def _stored(ledger: TwinLedger) -> list[StoredEvent]:
    events, position = [], 0
    while True:
        page = ledger.recorder.select_notifications(
            start=position, limit=500, inclusive_of_start=False
        )
        if not page:
            return events
        events += [
            StoredEvent(n.originator_id, n.originator_version, n.topic, n.state) for n in page
        ]
        position = page[-1].id


def test_an_archived_twin_imported_anywhere_gives_the_same_tables(
    ledger: TwinLedger, other_database_url: str, database_url: str, tmp_path: Path
) -> None:
    twin = ledger.clone_twin(name="Mars A", body="mars")
    ledger.cancel_run(
        ledger.queue_run(twin, pattern="mars_terraform", duration_years=4, budget_cents=BUDGET)
    )
    for seed in (1, 2):  # the twin's last event is a TwinRunEnded, after its RunQueued
        ledger.execute_run(
            ledger.queue_run(
                twin, pattern="mars_terraform", duration_years=4, budget_cents=BUDGET, seed=seed
            ),
            chunk_years=2,
        )
    path = tmp_path / "twin.jsonl"
    with path.open("wb") as out:
        export(ledger, out, twin_id=str(twin))
    expected = caught_up(database_url)
    rows = table_text(database_url)

    same_back_end = f"sqlite:///{tmp_path}/same.db"
    with fresh_postgres_url() as postgres:
        targets = [other_database_url, same_back_end if "sqlite" in database_url else postgres]
        for url in targets:
            target = TwinLedger.open(url)
            try:
                import_archive(target, path)
            finally:
                target.close()
            assert caught_up(url) == expected, url
            assert table_text(url) == rows, url
            with Projector(resolve_database(url)) as p:
                p.rebuild()
                assert p.checksums() == expected


@contextmanager
def fresh_url(postgres: bool) -> Iterator[str]:
    if postgres:
        with fresh_postgres_url() as url:
            yield url
        return
    with tempfile.TemporaryDirectory() as directory:
        yield f"sqlite:///{directory}/ledger.db"


def interleavings(events: list[StoredEvent]) -> st.SearchStrategy[list[StoredEvent]]:
    """Orders of ``events`` that keep each stream's own order and put a run's stream after its
    twin's first event (a run cannot be queued on a twin that does not exist)."""
    streams: dict[Any, list[StoredEvent]] = {}
    for event in events:
        streams.setdefault(event.originator_id, []).append(event)
    queued = RunQueued.__module__ + ":" + RunQueued.__qualname__
    parent = {
        stream_id: UUID(str(msgspec.json.decode(stream[0].state)["twin_id"]))
        for stream_id, stream in streams.items()
        if stream[0].topic == queued
    }

    @st.composite
    def order(draw: Callable[[st.SearchStrategy[int]], int]) -> list[StoredEvent]:
        taken = {stream_id: 0 for stream_id in streams}
        result: list[StoredEvent] = []
        while len(result) < len(events):
            ready = [
                stream_id
                for stream_id, stream in streams.items()
                if taken[stream_id] < len(stream)
                and (
                    taken[stream_id] > 0
                    or stream_id not in parent
                    or taken[_key(streams, parent[stream_id])] > 0
                )
            ]
            chosen = ready[draw(st.integers(0, len(ready) - 1))]
            result.append(streams[chosen][taken[chosen]])
            taken[chosen] += 1
        return result

    return order()


def _key(streams: dict[Any, list[StoredEvent]], twin: UUID) -> Any:
    return next(k for k in streams if UUID(str(k)) == twin)


@pytest.mark.parametrize("postgres", [False, pytest.param(True, marks=pytest.mark.postgres)])
def test_tables_do_not_depend_on_the_order_of_streams(postgres: bool, tmp_path: Path) -> None:
    source_url = f"sqlite:///{tmp_path}/source.db"
    source = TwinLedger.open(source_url)
    try:
        s = build(source, years=4)
        awkward_run(source, s.venus, "venus_industrial")
        events = _stored(source)
    finally:
        source.close()
    expected = caught_up(source_url)
    rows = table_text(source_url)

    @settings(
        max_examples=8,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(order=interleavings(events))
    def check(order: list[StoredEvent]) -> None:
        with fresh_url(postgres) as url:
            target = TwinLedger.open(url)
            try:
                target.recorder.insert_events(order)
            finally:
                target.close()
            assert caught_up(url) == expected
            assert table_text(url) == rows

    check()
