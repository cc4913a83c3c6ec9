"""Where concurrent writers' time goes (`twinledger bench --writers-profile`, PostgreSQL).

N writer processes record runs as the bench's writer measurement does (``record_runs``), started
together by a barrier once all are ready (imports and data done). Each reports its window, its
CPU time and its time runnable but not running (Linux /proc/self/schedstat). Meanwhile this
process samples, every few milliseconds, what each writer's backends are doing
(pg_stat_activity: state, wait event; pg_locks: holding or awaiting the events table's
EXCLUSIVE lock), the backends' CPU and run-queue time (/proc/<pid>/schedstat: the server runs
on this machine), and the machine's CPU (/proc/stat). A writer is synchronous: at any moment
either its client or one of its backends has the turn, so a writer's wall time splits into
client CPU, client runnable, and its backend's states (docs/performance.md, "8 writers").

Linux only (/proc); the numbers are sampled, so the shares carry the sampling error of a few
hundred samples, and the sampler's own cost (one query a tick) is reported beside them.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import psycopg

from domain.errors import ValidationError
from infrastructure.settings import resolve_database

SAMPLE = """
SELECT a.application_name AS writer, a.pid, a.state, a.wait_event_type, a.wait_event,
       bool_or(l.granted) AS holds, bool_or(NOT l.granted) AS awaits
FROM pg_stat_activity a
LEFT JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'relation' AND l.relation = %s
                     AND l.mode = 'ExclusiveLock'
WHERE a.application_name LIKE %s
GROUP BY 1, 2, 3, 4, 5
"""
STATES = (
    "awaiting the table lock",
    "holding it: server working",
    "holding it: WAL flush",
    "holding it: waiting for its client",
    "holding it: other waits",
    "no lock: server working",
    "no lock: WAL flush",
    "no lock: waiting for its client",
    "no lock: other waits",
    "client side (no transaction open)",
)
WAL_WAITS = {"WALSync", "WALWrite", "WALInsert", "WALBufMapping", "WALWriteLock"}


def schedstat(pid: int | str = "self") -> tuple[float, float] | None:
    """(seconds on a CPU, seconds runnable waiting for one) of a task, from /proc; None once
    the task has exited."""
    try:
        on_cpu, waiting, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return None
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def own_schedstat() -> tuple[float, float]:
    found = schedstat()
    assert found is not None  # this process is running
    return found


def machine() -> tuple[float, float, int]:
    """(busy jiffies, total jiffies, tasks runnable now) from /proc/stat."""
    busy = total = 0.0
    running = 0
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu "):
            values = [float(v) for v in line.split()[1:]]
            total = sum(values[:8])  # guest time is already in user
            busy = total - values[3] - values[4]  # idle, iowait
        elif line.startswith("procs_running"):
            running = int(line.split()[1])
    return busy, total, running


@dataclass
class WriterTimes:
    """One writer process over its own window (time.time), with its process's CPU."""

    began: float
    ended: float
    saved: int
    cpu: float
    runnable: float
    append_cpu: float  # the client's CPU inside the recorder's insert_events (the transaction)
    append_wall: float


def _writer(url: str, name: str, runs: int, years: int, barrier: Barrier, out: Any) -> None:
    os.environ["PGAPPNAME"] = name  # libpq: how the sampler finds this writer's backends
    from infrastructure.application import TwinLedger
    from infrastructure.bench.data import generate
    from infrastructure.bench.runner import record_runs

    data = generate(runs, years)
    ledger = TwinLedger.open(url, create_tables=False)
    recorder: Any = ledger.recorder
    insert = recorder.insert_events
    inside = [0.0, 0.0]

    def timed_insert(stored_events: Any, **kwargs: Any) -> Any:
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            return insert(stored_events, **kwargs)
        finally:
            inside[0] += time.thread_time() - cpu
            inside[1] += time.perf_counter() - wall

    recorder.insert_events = timed_insert
    try:
        ledger.event_count()  # a pooled connection is open before the window starts
        barrier.wait()
        cpu, runnable = time.process_time(), own_schedstat()[1]
        began = time.time()
        saved, _ = record_runs(ledger, data)
        ended = time.time()
        times = WriterTimes(
            began,
            ended,
            saved,
            time.process_time() - cpu,
            own_schedstat()[1] - runnable,
            inside[0],
            inside[1],
        )
        out.put((name, times))
    finally:
        ledger.close()


@dataclass
class Tick:
    """One sample: when, each writer's state, whether some writer held the lock, runnable tasks."""

    at: float
    states: dict[str, str]
    lock_held: bool
    running: int


@dataclass
class Sampler:
    """Samples the writers' backends and the machine until stopped (a thread of this process)."""

    conninfo: str
    relation: int
    prefix: str
    interval: float
    ticks: list[Tick] = field(default_factory=list)
    first: dict[int, tuple[float, float]] = field(default_factory=dict)
    last: dict[int, tuple[float, float]] = field(default_factory=dict)
    cpu: float = 0.0  # the sampler's own CPU (this thread and its backend) per second sampling
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as connection:
            backend = connection.info.backend_pid
            own, began = time.thread_time(), time.time()
            backend_cpu = (schedstat(backend) or (0.0, 0.0))[0]
            while not self.stop.is_set():
                rows = connection.execute(SAMPLE, (self.relation, self.prefix + "%")).fetchall()
                by_writer: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
                for row in rows:
                    usage = schedstat(row[1])
                    if usage is not None:
                        self.first.setdefault(row[1], usage)
                        self.last[row[1]] = usage
                    by_writer[row[0]].append(row)
                states = {writer: state_of(backends) for writer, backends in by_writer.items()}
                held = any(row[5] for row in rows)
                self.ticks.append(Tick(time.time(), states, held, machine()[2]))
                time.sleep(self.interval)
            spent = time.thread_time() - own
            spent += (schedstat(backend) or (backend_cpu, 0.0))[0] - backend_cpu
            self.cpu = spent / (time.time() - began)

    def within(self, began: float, ended: float) -> list[tuple[float, Tick]]:
        """The ticks in a window, each with the seconds since the tick before it."""
        found = []
        for before, tick in zip(self.ticks, self.ticks[1:], strict=False):
            if began <= tick.at <= ended:
                found.append((tick.at - max(before.at, began), tick))
        return found


def state_of(backends: list[tuple[Any, ...]]) -> str:
    """What one writer is doing, from its backends' (state, wait, lock) rows."""
    busy = [b for b in backends if b[2] not in ("idle", None)]
    if not busy:
        return "client side (no transaction open)"
    _, _, state, kind, event, holds, awaits = busy[0]
    # Only a wait for the events table's lock counts as one; a wait for another lock (a
    # relation's extension, another session's advisory lock) is one of the "other waits".
    if awaits:
        return "awaiting the table lock"
    where = "holding it" if holds else "no lock"
    if state == "idle in transaction" or event == "ClientRead":  # e.g. awaiting COPY data
        return f"{where}: waiting for its client"
    if event in WAL_WAITS:
        return f"{where}: WAL flush"
    if kind is None:
        return f"{where}: server working"
    return f"{where}: {kind}:{event}"  # counted under "other waits", named in ``waits``


@dataclass
class WritersProfile:
    """Where N writers' time went: shares of their summed wall time, and the machine's state."""

    writers: int
    events_per_second: float
    window: float  # seconds, first writer's start to last writer's end
    start_spread: float  # seconds between the first and the last writer's start
    writer_seconds: float  # the writers' windows summed
    client_us: float  # client CPU per event, microseconds
    append_us: float  # of which inside the recorder's append (its transaction: under the lock)
    append_wall: float  # share of writer time inside the recorder's append
    backend_us: float  # the backends' CPU per event (nearly all of it under the lock)
    client_cpu: float  # shares of writer_seconds
    client_runnable: float
    backend_cpu: float
    backend_runnable: float
    states: dict[str, float]  # sampled shares of writer time, by the backend's state
    waits: dict[str, float]  # the "other waits" by wait event
    lock_held: float  # share of the window in which some writer held the table lock
    cores_busy: float  # share of all cores busy (every process on the machine)
    ours: float  # share of all cores used by the writers and their backends
    run_queue: float  # mean runnable tasks (/proc/stat procs_running), the sampler included
    cores: int
    samples: int
    sampler_cpu: float  # share of one core


def profile_writers(
    url: str, writers: int, runs_each: int, years: int, interval: float = 0.005
) -> WritersProfile:
    """Run ``writers`` processes each recording ``runs_each`` runs at once, sampled."""
    from infrastructure.application import TwinLedger

    database = resolve_database(url)
    TwinLedger.open(url).close()  # the tables, created once before the writers start
    conninfo = database.psycopg_conninfo()
    with psycopg.connect(conninfo, autocommit=True) as connection:
        row = connection.execute(
            "SELECT %s::regclass::oid", (f'"{database.schema}"."twinledger_events"',)
        ).fetchone()
        assert row is not None
    prefix = f"twl-{uuid.uuid4().hex[:8]}-"
    sampler = Sampler(conninfo, int(row[0]), prefix, interval)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(writers + 1)
    out = context.Queue()
    processes = [
        context.Process(target=_writer, args=(url, f"{prefix}{i}", runs_each, years, barrier, out))
        for i in range(writers)
    ]
    for process in processes:
        process.start()
    barrier.wait()
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    before = machine()
    times = dict(out.get(timeout=3600) for _ in processes)
    after = machine()
    sampler.stop.set()
    thread.join()
    for process in processes:
        process.join()
    first = min(t.began for t in times.values())
    last = max(t.ended for t in times.values())
    spent = sum(t.ended - t.began for t in times.values())
    shares: dict[str, float] = defaultdict(float)
    sampled = 0.0
    for name, t in times.items():
        for seconds, tick in sampler.within(t.began, t.ended):
            state = tick.states.get(name, "client side (no transaction open)")
            if state not in STATES:
                shares[state.split(":")[0] + ": other waits"] += seconds
            shares[state] += seconds
            sampled += seconds
    ticks = sampler.within(first, last)
    window = sum(seconds for seconds, _ in ticks) or 1.0
    backend_cpu = sum(sampler.last[p][0] - sampler.first[p][0] for p in sampler.last)
    backend_runnable = sum(sampler.last[p][1] - sampler.first[p][1] for p in sampler.last)
    cores = os.cpu_count() or 1
    client_cpu = sum(t.cpu for t in times.values())
    saved = sum(t.saved for t in times.values())
    return WritersProfile(
        writers=writers,
        events_per_second=saved / (last - first),
        window=last - first,
        start_spread=max(t.began for t in times.values()) - first,
        writer_seconds=spent,
        client_us=client_cpu / saved * 1e6,
        append_us=sum(t.append_cpu for t in times.values()) / saved * 1e6,
        append_wall=sum(t.append_wall for t in times.values()) / spent,
        backend_us=backend_cpu / saved * 1e6,
        client_cpu=client_cpu / spent,
        client_runnable=sum(t.runnable for t in times.values()) / spent,
        backend_cpu=backend_cpu / spent,
        backend_runnable=backend_runnable / spent,
        states={s: shares.get(s, 0.0) / (sampled or 1.0) for s in STATES},
        waits={s: v / (sampled or 1.0) for s, v in shares.items() if s not in STATES},
        lock_held=sum(seconds for seconds, tick in ticks if tick.lock_held) / window,
        cores_busy=(after[0] - before[0]) / ((after[1] - before[1]) or 1.0),
        ours=(client_cpu + backend_cpu) / (cores * (last - first)),
        run_queue=sum(tick.running for _, tick in ticks) / (len(ticks) or 1),
        cores=cores,
        samples=len(ticks),
        sampler_cpu=sampler.cpu,
    )


def profile_all(
    url: str | None,
    counts: tuple[int, ...],
    *,
    runs_each: int,
    years: int,
    progress: Callable[[str], None] = lambda _: None,
) -> list[WritersProfile]:
    """One profile per writer count, each on its own scratch schema beside ``url``."""
    from infrastructure.bench.runner import scratch

    database = resolve_database(url)
    if not database.is_postgres:
        raise ValidationError(
            "db", "--writers-profile needs PostgreSQL (it profiles its table lock)"
        )
    profiles = []
    for count in counts:
        progress(f"profiling {count} writer processes")
        with scratch(database, f"p{count}") as scratch_url:
            profiles.append(profile_writers(scratch_url, count, runs_each, years))
    return profiles


def profile_rows(profiles: list[WritersProfile]) -> list[tuple[str, list[str]]]:
    """The profiles as table rows: a name, then one cell per writer count."""

    def share(value: float) -> str:
        return f"{value:.0%}"

    rows: list[tuple[str, list[str]]] = [
        ("events/s", [f"{p.events_per_second:,.0f}" for p in profiles]),
        (
            "x one writer",
            [f"{p.events_per_second / profiles[0].events_per_second:.2f}" for p in profiles],
        ),
        ("client CPU, us/event", [f"{p.client_us:.1f}" for p in profiles]),
        ("  of which in the append (under the lock)", [f"{p.append_us:.1f}" for p in profiles]),
        ("backend CPU, us/event", [f"{p.backend_us:.1f}" for p in profiles]),
        ("client on a CPU", [share(p.client_cpu) for p in profiles]),
        ("client runnable, not running", [share(p.client_runnable) for p in profiles]),
        ("backend on a CPU", [share(p.backend_cpu) for p in profiles]),
        ("backend runnable, not running", [share(p.backend_runnable) for p in profiles]),
        ("inside the recorder's append", [share(p.append_wall) for p in profiles]),
    ]
    rows += [(state, [share(p.states[state]) for p in profiles]) for state in STATES]
    rows += [
        ("table lock held (share of the window)", [share(p.lock_held) for p in profiles]),
        ("cores busy (whole machine)", [share(p.cores_busy) for p in profiles]),
        ("cores used by the writers and backends", [share(p.ours) for p in profiles]),
        ("runnable tasks (mean procs_running)", [f"{p.run_queue:.1f}" for p in profiles]),
        ("first to last writer start, ms", [f"{p.start_spread * 1000:.0f}" for p in profiles]),
        (
            "samples; sampler CPU (share of a core)",
            [f"{p.samples}; {p.sampler_cpu:.0%}" for p in profiles],
        ),
    ]
    return rows
