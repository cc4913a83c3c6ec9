"""Read your writes where a reader waits: keep_current catches the read tables up after each
durable write and at the end of the command, not after a run's intermediate chunks; an idle
catch-up opens no transaction; a catch-up that reaches the head commits once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import uuid4

import msgspec
import pytest

from domain.catalog import CATALOG
from domain.engine import Simulation
from domain.run import SimulationRun
from domain.values import Pattern, RunParameters
from infrastructure.application import TwinLedger, run_inputs
from infrastructure.codec import MsgspecMapper, NullTranscoder
from projections import queries
from projections.runner import PROJECTIONS, Projector, keep_current
from projections.store import Note, Store

BUDGET = 1_000_000_000_000


def _catch_ups(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Every Projector.catch_up call from now on: its ``durable`` argument."""
    calls: list[bool] = []
    original = Projector.catch_up

    def spy(self: Projector, names: Any = None, *, durable: bool = True) -> dict[str, int]:
        calls.append(durable)
        return original(self, names, durable=durable)

    monkeypatch.setattr(Projector, "catch_up", spy)
    return calls


def _transactions(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Every write transaction a Store opens from now on: its ``durable`` argument."""
    opened: list[bool] = []
    original = Store.transaction

    @contextmanager
    def spy(self: Store, *, durable: bool = True) -> Iterator[Any]:
        opened.append(durable)
        with original(self, durable=durable) as cursor:
            yield cursor

    monkeypatch.setattr(Store, "transaction", spy)
    return opened


def _progress(url: str, run_id: Any) -> tuple[int, int]:
    """(current_year, result rows) of a run as the read tables hold it, without catching up."""
    with Projector.open(url) as opened:
        store = opened.store
        (row,) = [r for r in queries.runs(store) if r["id"] == str(run_id)]
        with store.reading() as cursor:
            cursor.execute(
                store.sql("SELECT count(*) FROM {t} WHERE run_id = %s", t="simulation_results"),
                (store.uuid(run_id),),
            )
            (count,) = cursor.fetchone()
        return int(row["current_year"]), int(count)


def test_intermediate_chunks_wait_for_the_next_durable_write(
    ledger: TwinLedger, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    twin = ledger.clone_twin(name="Mars", body="mars")
    run_id = ledger.queue_run(
        twin, pattern="mars_terraform", duration_years=40, budget_cents=BUDGET
    )
    calls = _catch_ups(monkeypatch)
    seen: list[tuple[int, int]] = []
    detach = keep_current(ledger, lambda text: pytest.fail(text))
    original = ledger._save_chunk

    def save_chunk(run: Any, *, durable: bool = True) -> bool:
        saved = original(run, durable=durable)
        seen.append(_progress(database_url, run_id))  # what a reader that does not catch up sees
        return saved

    monkeypatch.setattr(ledger, "_save_chunk", save_chunk)
    try:
        ledger.execute_run(run_id, chunk_years=10)
    finally:
        detach()
    # Chunks of years 1-10, 11-20, 21-30 commit without waiting for the disk: no catch-up
    # after them. The last chunk (durable) catches the tables up over all four, once.
    assert [year for year, _ in seen] == [0, 0, 0, 40]
    assert seen[-1][1] >= 80  # economic and environmental rows of every year
    # The start (run and twin), the last chunk and the completion: each caught up after,
    # each without waiting for the WAL flush (the write before it did).
    assert calls == [False, False, False]


def test_detach_catches_up_what_a_non_durable_write_left(
    ledger: TwinLedger, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    twin = ledger.clone_twin(name="Mars", body="mars")
    run_id = ledger.queue_run(
        twin, pattern="mars_terraform", duration_years=20, budget_cents=BUDGET
    )
    with Projector.open(database_url) as opened:
        opened.catch_up()
    run = ledger.get_run(run_id)
    run.start()
    for year in range(1, 11):
        run.record_year(_year(ledger, run_id, year))
    detach = keep_current(ledger, lambda text: pytest.fail(text))
    calls = _catch_ups(monkeypatch)
    ledger._save_chunk(run, durable=False)
    assert calls == []
    assert _progress(database_url, run_id) == (0, 0)
    detach()  # the command ends: its writes are in the read tables
    assert calls == [False]
    year, rows = _progress(database_url, run_id)
    assert year == 10 and rows >= 20


def _year(ledger: TwinLedger, run_id: Any, year: int) -> Any:
    """The engine's result for ``year`` of the run (deterministic: simulated from RunQueued)."""
    simulation = Simulation(run_inputs(ledger.get_run(run_id)))
    result = simulation.step()
    while result.year < year:
        result = simulation.step()
    return result


def test_an_idle_catch_up_opens_no_transaction(
    ledger: TwinLedger, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    twin = ledger.clone_twin(name="Mars", body="mars")
    run_id = ledger.queue_run(
        twin, pattern="mars_terraform", duration_years=30, budget_cents=BUDGET
    )
    ledger.execute_run(run_id, chunk_years=10)
    with Projector.open(database_url) as opened:
        opened.prepare()
        opened_now = _transactions(monkeypatch)
        positions = opened.catch_up()
        # One batch brings every projection to the head: one transaction, durable.
        assert opened_now == [True]
        assert set(positions.values()) == {ledger.event_count()}
        opened_now.clear()
        assert opened.catch_up() == positions
        assert opened_now == []  # nothing to apply: no lock taken, nothing committed


# --- events projected from memory ----------------------------------------------------------------


def _fields(value: Any) -> dict[str, Any]:
    """A lean value's fields, Raw JSON as bytes (comparable)."""
    return {
        name: bytes(v) if isinstance(v, msgspec.Raw) else v
        for name, v in msgspec.structs.asdict(value).items()
    }


def test_a_saved_event_gives_what_decoding_its_stored_state_gives() -> None:
    """Every builder (decoding.builder_for) against the decoder, over a run's events as the
    ledger's mapper stores them: years with and without key events, the queue and start."""
    mapper = MsgspecMapper(transcoder=NullTranscoder())
    run = SimulationRun.queue(
        twin_id=uuid4(),
        source_body="mars",
        twin_state=CATALOG["mars"].state,
        pattern=Pattern.MARS_TERRAFORM,
        duration_years=300,
        parameters=RunParameters(budget_cents=BUDGET),
        seed=7,
        engine_version="test",
        initiated_by="test",
    )
    run.start()
    simulation = Simulation(run_inputs(run))
    for _ in range(300):
        run.record_year(simulation.step())
    events = run.collect_events()
    assert any(getattr(e, "key_events", None) for e in events)  # both kinds of year
    checked = 0
    for cls in PROJECTIONS:
        projection = cls()
        for position, event in enumerate(events, start=1):
            stored = mapper.to_stored_event(event)
            built = projection.builders.get(stored.topic)
            if built is None:
                continue
            note = Note(
                position,
                stored.originator_id,
                stored.originator_version,
                stored.topic,
                stored.state,
            )
            assert _fields(built[1](event)) == _fields(projection.decode(note).data)
            checked += 1
    assert checked >= 2 * 300  # runs and results, every year


def test_a_run_saved_here_is_projected_without_reading_it_back(
    ledger: TwinLedger, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    twin = ledger.clone_twin(name="Mars", body="mars")
    run_id = ledger.queue_run(
        twin, pattern="mars_terraform", duration_years=60, budget_cents=BUDGET
    )
    with Projector.open(database_url) as opened:
        opened.catch_up()  # what was written before keep_current was attached
    detach = keep_current(ledger, lambda text: pytest.fail(text))
    read: list[tuple[int, int]] = []
    original = Store.notes

    def spy(self: Store, cursor: Any, after: int, upto: int, *args: Any) -> Any:
        read.append((after, upto))
        return original(self, cursor, after, upto, *args)

    monkeypatch.setattr(Store, "notes", spy)
    try:
        ledger.execute_run(run_id, chunk_years=20)
    finally:
        detach()
    assert read == []  # every event came from the saves themselves
    with Projector.open(database_url) as opened:
        projected = opened.checksums()
        opened.rebuild()
        assert opened.checksums() == projected


def test_another_writer_in_between_is_read_from_the_log(
    open_ledger: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gap in what this process saved (another writer's events): those are read back, and
    the tables are what a clean rebuild gives."""
    ledger, other = open_ledger(), open_ledger()
    twin = ledger.clone_twin(name="Mars", body="mars")
    runs = [
        ledger.queue_run(twin, pattern="mars_terraform", duration_years=30, budget_cents=BUDGET)
        for _ in range(2)
    ]
    detach = keep_current(ledger, lambda text: pytest.fail(text))
    original = ledger._save_chunk
    interleaved: list[int] = []

    def save_chunk(run: Any, *, durable: bool = True) -> bool:
        saved = original(run, durable=durable)
        if not interleaved:  # once: another process writes between two of our chunks
            interleaved.append(1)
            other.execute_run(runs[1], chunk_years=30)
        return saved

    monkeypatch.setattr(ledger, "_save_chunk", save_chunk)
    read: list[int] = []
    notes = Store.notes

    def spy(self: Store, cursor: Any, after: int, *args: Any) -> Any:
        read.append(after)
        return notes(self, cursor, after, *args)

    monkeypatch.setattr(Store, "notes", spy)
    try:
        ledger.execute_run(runs[0], chunk_years=10)
    finally:
        detach()
    assert read  # the other writer's events (and ours before them) came from the log
    monkeypatch.undo()
    with Projector.open(database_url) as opened:
        assert {r["current_year"] for r in queries.runs(opened.store)} == {30}
        projected = opened.checksums()
        opened.rebuild()
        assert opened.checksums() == projected


@pytest.mark.parametrize("meanwhile", ["caught up", "caught up and appended"])
def test_a_catch_up_after_a_save_skips_no_check_it_needs(
    open_ledger: Any, database_url: str, monkeypatch: pytest.MonkeyPatch, meanwhile: str
) -> None:
    """The catch-up right after a save reads no positions first (what it saved is there to
    apply). If another process caught the tables up past those events before it ran (and
    maybe appended more), its batches start from the positions they lock: nothing is applied
    twice, the other writer's events are applied once, and memory is let go."""
    ledger, other = open_ledger(), open_ledger()
    twin = ledger.clone_twin(name="Mars", body="mars")
    runs = [
        ledger.queue_run(twin, pattern="mars_terraform", duration_years=20, budget_cents=BUDGET)
        for _ in range(2)
    ]
    with Projector.open(database_url) as opened:
        opened.catch_up()
    detach = keep_current(ledger, lambda text: pytest.fail(text))
    state: dict[str, Any] = {}
    remembered: list[bool] = []  # each catch-up's: events of its own saves in memory
    original = Projector.catch_up

    def spy(self: Projector, names: Any = None, *, durable: bool = True) -> dict[str, int]:
        remembered.append(bool(self._memory))
        return original(self, names, durable=durable)

    monkeypatch.setattr(Projector, "catch_up", spy)

    def elsewhere() -> None:  # before keep_current's hook: another process got there first
        if state:
            return
        state["done"] = True
        with Projector.open(database_url) as rival:
            rival.catch_up()
        if meanwhile == "caught up and appended":
            other.execute_run(runs[1], chunk_years=20)

    ledger.after_write.insert(0, elsewhere)
    try:
        ledger.execute_run(runs[0], chunk_years=20)
    finally:
        detach()
    assert state and remembered[0] is False  # the rival, first
    assert True in remembered[1:]  # then the catch-up after the save, with no check first
    monkeypatch.undo()
    with Projector.open(database_url) as opened:
        positions = opened.catch_up()
        assert set(positions.values()) == {ledger.event_count()}
        expected_years = {20} if meanwhile == "caught up and appended" else {20, 0}
        assert {r["current_year"] or 0 for r in queries.runs(opened.store)} == expected_years
        projected = opened.checksums()
        opened.rebuild()
        assert opened.checksums() == projected
