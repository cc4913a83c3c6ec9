"""Where a rebuild's main thread spends its wall time: waiting in psycopg or running Python.

``Projector.rebuild(None)`` on an existing PostgreSQL schema (one warm-up rebuild, then N timed):
psycopg's ``Connection.wait`` (every statement, fetch, COPY, BEGIN and COMMIT goes through it)
timed on the main thread, wall and thread CPU, by statement; "blocked" is wall minus CPU (the
server, the network, the scheduler and the GIL). The rebuild's phases timed apart. With
``--round-trips``, run under strace instead: round trips per thread (a run of sends followed by a
receive) during one rebuild.

    PYTHONPATH=$TREE python3 docs/bench/rebuild_waits.py URL [N]
    strace -f -qq -e trace=sendto,recvfrom -o trace.txt \\
        env PYTHONPATH=$TREE python3 docs/bench/rebuild_waits.py URL --traced
    python3 docs/bench/rebuild_waits.py --round-trips trace.txt

(docs/performance.md, "Rebuild with the log read ahead (branch `prefetch`)").
"""

from __future__ import annotations

import collections
import os
import re
import sys
import threading
import time
from typing import Any

import psycopg
from psycopg import Cursor

from projections import rebuild
from projections.background import BackgroundWriter
from projections.runner import Projector

MAIN = threading.main_thread()
WAITS: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])
PHASES: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
_label = threading.local()
_on = [False]
_STATEMENT_GENS = ("_execute_gen", "_executemany_gen_pipeline", "_start_copy_gen", "copy_to")


def _key(query: Any) -> str:
    text = query.as_string(None) if hasattr(query, "as_string") else str(query)
    return " ".join(text.split())[:70]


def _instrument() -> None:
    wait = psycopg.Connection.wait

    def timed_wait(self: Any, gen: Any, *args: Any, **kwargs: Any) -> Any:
        if not _on[0] or threading.current_thread() is not MAIN:
            return wait(self, gen, *args, **kwargs)
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return wait(self, gen, *args, **kwargs)
        finally:
            name = getattr(gen, "__qualname__", "?")
            label = getattr(_label, "value", "") if name.endswith(_STATEMENT_GENS) else ""
            entry = WAITS[f"{name} {label}".strip()]
            entry[0] += 1
            entry[1] += time.perf_counter() - wall
            entry[2] += time.thread_time() - cpu

    psycopg.Connection.wait = timed_wait  # type: ignore[method-assign]
    for method in ("execute", "executemany", "copy"):
        original = getattr(Cursor, method)

        def labelled(
            self: Any, query: Any, *args: Any, _original: Any = original, **kw: Any
        ) -> Any:
            _label.value = _key(query)
            return _original(self, query, *args, **kw)

        setattr(Cursor, method, labelled)

    def phase(owner: Any, method: str, name: str) -> None:
        original = getattr(owner, method)

        def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is not MAIN:
                return original(self, *args, **kwargs)
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(self, *args, **kwargs)
            finally:
                PHASES[name][0] += time.perf_counter() - wall
                PHASES[name][1] += time.thread_time() - cpu

        setattr(owner, method, timed)

    phase(rebuild.Rebuild, "_together", "shared passes (the load, the swap's catch-up)")
    phase(BackgroundWriter, "finish", "waiting for the background COPY")
    phase(rebuild.Rebuild, "_add_foreign_keys", "foreign keys")
    phase(rebuild.Rebuild, "_swap", "swap")


def timed(url: str, rebuilds: int) -> None:
    _instrument()
    with Projector.open(url) as projector:
        projector.rebuild(None)
        wall = cpu = 0.0
        for _ in range(rebuilds):
            _on[0] = True
            began, began_cpu = time.perf_counter(), time.thread_time()
            projector.rebuild(None)
            wall += time.perf_counter() - began
            cpu += time.thread_time() - began_cpu
            _on[0] = False
    n = rebuilds
    waited = sum(v[1] for v in WAITS.values()) / n
    waited_cpu = sum(v[2] for v in WAITS.values()) / n
    print(f"per rebuild: {wall / n * 1000:.1f} ms wall, main thread CPU {cpu / n * 1000:.1f} ms")
    print(
        f"in psycopg waits: {waited * 1000:.1f} ms wall, {waited_cpu * 1000:.1f} ms CPU,"
        f" blocked {(waited - waited_cpu) * 1000:.1f} ms;"
        f" {sum(v[0] for v in WAITS.values()) / n:.0f} waits"
    )
    for name, (seconds, seconds_cpu) in PHASES.items():
        print(f"  {name:48s} {seconds / n * 1000:7.1f} ms wall {seconds_cpu / n * 1000:6.1f} CPU")
    for name, (count, seconds, seconds_cpu) in sorted(WAITS.items(), key=lambda kv: -kv[1][1])[:20]:
        blocked = (seconds - seconds_cpu) / n * 1000
        print(f"{seconds / n * 1000:7.2f} ms {blocked:7.2f} blocked {count / n:5.0f}x  {name}")


def traced(url: str) -> None:
    """One warm-up rebuild, then one between markers strace shows (writes to stderr)."""
    with Projector.open(url) as projector:
        projector.rebuild(None)
        os.write(2, b"MARK-START\n")
        projector.rebuild(None)
        os.write(2, b"MARK-END\n")


def round_trips(trace: str) -> None:
    """Round trips per thread between the markers of an ``strace -f`` of ``traced``."""
    with open(trace) as handle:
        lines = handle.read().splitlines()
    main = lines[0].split()[0]
    inside, last = False, dict[str, str]()
    found: collections.Counter[str] = collections.Counter()
    for line in lines:
        if "MARK-START" in line:
            inside = True
        elif "MARK-END" in line:
            break
        elif inside:
            pid, rest = line.split(None, 1)
            call = re.match(r"(\w+)", rest)
            if call is None:  # a "<... resumed>" line: counted where the call began
                continue
            who = "main thread" if pid == main else f"thread {pid}"
            if call.group(1) == "sendto":
                last[who] = "send"
            elif call.group(1) == "recvfrom" and last.get(who) == "send":
                found[who] += 1
                last[who] = "receive"
    for who, count in found.items():
        print(f"round trips, {who}: {count}")


if __name__ == "__main__":
    if sys.argv[1] == "--round-trips":
        round_trips(sys.argv[2])
    elif sys.argv[2:3] == ["--traced"]:
        traced(sys.argv[1])
    else:
        timed(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3)
