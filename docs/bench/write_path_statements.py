"""Where the write path's time goes as the CLI takes it: 20 runs x 1000 years recorded through
``keep_current`` on a scratch PostgreSQL schema, every statement, COPY and commit timed in the
client, the catch-ups (the after-write hooks) timed apart (wall and client CPU), the round trips
counted, and the CPU of the server backends that did the work.

    PYTHONPATH=$TREE python3 docs/bench/write_path_statements.py SCHEMA [RUNS] [crud]

A round trip is one operation of psycopg's ``Connection.wait`` that waits to read from the
server (a statement or a statement string, a COPY's start or end, a transaction's BEGIN or
COMMIT); pushing COPY data, or a commit outside a transaction, is not one.
``crud``: the same count for the direct-CRUD baseline (infrastructure/bench/runner.py).
(docs/performance.md, "Where each target stands (third session, quiet machine)" and "Fewer
round trips on the write path (branch `trips`)").
"""

from __future__ import annotations

import collections
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import Cursor
from psycopg.waiting import Ready

from infrastructure.application import TwinLedger, default_chunk
from infrastructure.bench.data import generate
from infrastructure.bench.runner import direct_crud, record_runs
from projections.runner import keep_current

SPENT: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
TRIPS: collections.Counter[str] = collections.Counter()
BACKENDS: dict[int, float] = {}  # backend pid -> its CPU seconds when first seen
TICK = os.sysconf("SC_CLK_TCK")


def _key(cursor: Any, query: Any) -> str:
    if isinstance(query, bytes):
        query = query.decode()
    text = query.as_string(cursor.connection) if hasattr(query, "as_string") else str(query)
    return " ".join(text.split())[:90]


def backend_cpu(pid: int) -> float:
    """utime + stime of a local server process, in seconds (/proc/<pid>/stat); NaN once it
    has ended (a closed connection's backend: its CPU is then not counted)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / TICK


def _counted(gen: Any, pid: int) -> Any:
    """``gen``, counted as a round trip if it waits at least once for the server to answer
    (its socket readable: a commit outside a transaction, pushing COPY data or queueing a
    pipeline's statements only sends, or does nothing)."""
    name = getattr(gen, "__name__", type(gen).__name__)
    counted = False
    try:
        wanted = next(gen)
        while True:
            ready = yield wanted
            if not counted and ready and ready & Ready.R:
                counted = True
                TRIPS[name] += 1
                if pid not in BACKENDS:
                    BACKENDS[pid] = backend_cpu(pid)
            wanted = gen.send(ready)
    except StopIteration as done:
        return done.value


def _timed_statements() -> None:
    execute, copy, commit = Cursor.execute, Cursor.copy, psycopg.Connection.commit
    wait = psycopg.Connection.wait

    def counted_wait(self: Any, gen: Any, *args: Any, **kw: Any) -> Any:
        return wait(self, _counted(gen, self.pgconn.backend_pid), *args, **kw)

    def timed_execute(self: Any, query: Any, params: Any = None, **kw: Any) -> Any:
        began = time.perf_counter()
        try:
            return execute(self, query, params, **kw)
        finally:
            SPENT[_key(self, query)][0] += 1
            SPENT[_key(self, query)][1] += time.perf_counter() - began

    @contextmanager
    def timed_copy(self: Any, statement: Any, params: Any = None, **kw: Any) -> Iterator[Any]:
        began = time.perf_counter()
        with copy(self, statement, params, **kw) as stream:
            yield stream
        SPENT["COPY " + _key(self, statement)][0] += 1
        SPENT["COPY " + _key(self, statement)][1] += time.perf_counter() - began

    def timed_commit(self: Any) -> None:
        began = time.perf_counter()
        commit(self)
        SPENT["commit()"][0] += 1
        SPENT["commit()"][1] += time.perf_counter() - began

    psycopg.Connection.wait = counted_wait  # type: ignore[method-assign]
    Cursor.execute = timed_execute  # type: ignore[method-assign]
    Cursor.copy = timed_copy  # type: ignore[method-assign]
    psycopg.Connection.commit = timed_commit  # type: ignore[method-assign]


def _server_cpu() -> float:
    spent = [backend_cpu(pid) - first for pid, first in BACKENDS.items()]
    return sum(cpu for cpu in spent if cpu == cpu)  # (NaN: ended before or during the runs)


def main(schema: str, runs: int = 20, crud: bool = False) -> None:
    url = f"postgresql://postgres@127.0.0.1:5432/test?schema={schema}"
    data = generate(runs, 1000)
    _timed_statements()
    if crud:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as a:
            a.execute(f'CREATE SCHEMA "{schema}"')
        began = time.process_time()
        _, seconds = direct_crud(url, data, default_chunk(1000))
        cpu = time.process_time() - began
        trips = sum(TRIPS.values())
        print(f"direct CRUD: {seconds:.3f} s timed, {cpu:.3f} s CPU; {trips} round trips")
    else:
        ledger = TwinLedger.open(url)
        detach = keep_current(ledger, print)
        hooks = {"wall": 0.0, "cpu": 0.0}
        for index, hook in enumerate(list(ledger.after_write)):

            def timed(hook: Any = hook) -> None:
                wall, cpu = time.perf_counter(), time.process_time()
                hook()
                hooks["wall"] += time.perf_counter() - wall
                hooks["cpu"] += time.process_time() - cpu

            ledger.after_write[index] = timed
        record_runs(ledger, data[:1], default_chunk(1000))  # warm-up: the projector's set-up
        SPENT.clear()
        TRIPS.clear()
        BACKENDS.update({pid: backend_cpu(pid) for pid in BACKENDS})
        hooks.update(wall=0.0, cpu=0.0)
        wall, cpu = time.perf_counter(), time.process_time()
        record_runs(ledger, data, default_chunk(1000))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        server = _server_cpu()
        trips = sum(TRIPS.values())
        detach()
        ledger.close()
        print(f"in all: {wall:.3f} s wall, {cpu:.3f} s CPU, server {server:.3f} s CPU")
        print(f"catch-ups: {hooks['wall']:.3f} s wall, {hooks['cpu']:.3f} s CPU")
    print(f"round trips: {trips} ({trips / runs:.1f} a run): {dict(TRIPS.most_common())}")
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as admin:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    for key, (count, seconds) in sorted(SPENT.items(), key=lambda kv: -kv[1][1])[:20]:
        print(f"{seconds * 1000:8.1f} ms {int(count):6d}  {key}")


if __name__ == "__main__":
    main(
        sys.argv[1],
        int(sys.argv[2]) if len(sys.argv) > 2 else 20,
        len(sys.argv) > 3 and sys.argv[3] == "crud",
    )
