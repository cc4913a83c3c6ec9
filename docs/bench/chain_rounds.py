"""One round of the chain-records measurement (docs/performance.md, "Issue 13: branch `chain`").

Run with PYTHONPATH at the tree to measure; prints one JSON line. The same calls as
`twinledger bench` (infrastructure/bench/runner.py): record_runs (the append, timed as the
bench times it), raw_copy_like_for_like, the CLI/API path (keep_current) and direct_crud, on
fresh scratch storage each. Also: the server CPU of the append and of the like-for-like raw
COPY (nanoseconds on CPU of the backends this process used, from /proc/<pid>/schedstat, found
by application_name, read before a connection closes), their client CPU (process_time), the
ratio of their CPU per event (``cpu_ratio``: raw COPY's client + server CPU per row over the
append's per event; what the wall ratio would be on a machine with no other load and no
waits), and the stored size of the chain's side table per event.

    PYTHONPATH=TREE python3 docs/bench/chain_rounds.py postgresql://postgres@127.0.0.1:5432/test
    PYTHONPATH=TREE python3 docs/bench/chain_rounds.py sqlite
    ... --storage extended   (PostgreSQL: the chain records' column back to the default storage)
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg

APP = f"chainbench-{uuid.uuid4().hex[:8]}"
os.environ["PGAPPNAME"] = APP  # every connection of this process carries it

from infrastructure.application import TwinLedger, default_chunk  # noqa: E402
from infrastructure.bench.data import generate  # noqa: E402
from infrastructure.bench.runner import (  # noqa: E402
    direct_crud,
    rate,
    raw_copy_like_for_like,
    record_runs,
    scratch,
)
from infrastructure.settings import resolve_database  # noqa: E402

CLOSED: dict[int, int] = {}  # backend pid -> its CPU ns when its connection was closed
_close = psycopg.Connection.close


def _closing(self: psycopg.Connection[Any]) -> None:
    """Read a backend's CPU time just before its connection closes (its process then exits)."""
    if not self.closed:
        with contextlib.suppress(Exception):
            CLOSED[self.info.backend_pid] = on_cpu(self.info.backend_pid)
    _close(self)


psycopg.Connection.close = _closing  # type: ignore[method-assign]


def on_cpu(pid: int) -> int:
    """Nanoseconds the process has run on a CPU (/proc/<pid>/schedstat)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def backends(conninfo: str) -> dict[int, int]:
    """CPU ns so far of each live backend carrying this process's application_name."""
    with psycopg.connect(conninfo, autocommit=True, application_name="chainbench-monitor") as c:
        pids = [
            r[0]
            for r in c.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (APP,)
            )
        ]
        monitor = c.info.backend_pid
    CLOSED.pop(monitor, None)
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            out[pid] = on_cpu(pid)
    return out


@contextlib.contextmanager
def server_cpu(conninfo: str, into: dict[str, float], key: str) -> Iterator[None]:
    """Server CPU seconds spent inside the block by this process's backends, live or closed."""
    CLOSED.clear()
    start = backends(conninfo)
    yield
    end = {**backends(conninfo), **CLOSED}
    into[key] = sum(ns - start.get(pid, 0) for pid, ns in end.items()) / 1e9


def side_table_bytes(url: str) -> tuple[str, int]:
    database = resolve_database(url)
    with psycopg.connect(database.psycopg_conninfo(), autocommit=True) as connection:
        for table in ("twinledger_event_chain", "twinledger_event_hashes"):
            row = connection.execute(
                "SELECT pg_total_relation_size(to_regclass(%s))",
                (f'"{database.schema}".{table}',),
            ).fetchone()
            if row and row[0]:
                return table, int(row[0])
    return "", 0


def main() -> None:
    target = sys.argv[1]
    storage = sys.argv[sys.argv.index("--storage") + 1] if "--storage" in sys.argv else ""
    runs, years = 20, 1000
    chunk = default_chunk(years)
    data = generate(runs, years)
    out: dict[str, Any] = {"load": os.getloadavg()[0]}
    if target == "sqlite":
        database = resolve_database(os.path.join("/tmp", f"{APP}.db"))
    else:
        database = resolve_database(target)
    from projections.runner import keep_current

    cpu: dict[str, float] = {}
    conninfo = database.psycopg_conninfo() if database.is_postgres else ""
    quiet = contextlib.nullcontext
    with scratch(database, "ca") as url:
        ledger = TwinLedger.open(url)
        try:
            if storage and database.is_postgres:
                with psycopg.connect(database.psycopg_conninfo(), autocommit=True) as c:
                    c.execute(
                        f'ALTER TABLE "{resolve_database(url).schema}".twinledger_event_chain'
                        f" ALTER COLUMN hashes SET STORAGE {storage}"
                    )
            began = time.process_time()
            with server_cpu(conninfo, cpu, "append") if conninfo else quiet():
                appended, seconds = record_runs(ledger, data, chunk)
            client = time.process_time() - began
            if database.is_postgres:
                out["side_table"], size = side_table_bytes(url)
                out["side_bytes_per_event"] = size / appended
        finally:
            ledger.close()
    out["append"] = rate(appended, seconds)
    out["client_us_per_event"] = client / appended * 1e6
    if database.is_postgres:
        out["server_us_per_event"] = cpu["append"] / appended * 1e6
        with scratch(database, "cl") as url:
            TwinLedger.open(url).close()  # its DDL outside the window (the function reopens)
            began = time.process_time()
            with server_cpu(conninfo, cpu, "like"):
                rows, like_seconds = raw_copy_like_for_like(url, data, chunk)
            like_client = time.process_time() - began
        out["like"] = rate(rows, like_seconds)
        out["ratio"] = out["append"] / out["like"]
        out["like_client_us_per_row"] = like_client / rows * 1e6
        out["like_server_us_per_row"] = cpu["like"] / rows * 1e6
        out["cpu_ratio"] = (
            (like_client + cpu["like"]) / rows / ((client + cpu["append"]) / appended)
        )
    with scratch(database, "cc") as url:
        ledger = TwinLedger.open(url)
        warnings: list[str] = []
        detach = keep_current(ledger, warnings.append)
        try:
            _, cli_seconds = record_runs(ledger, data, chunk)
        finally:
            detach()
            ledger.close()
        assert not warnings, warnings
    with scratch(database, "cr") as url:
        _, crud_seconds = direct_crud(url, data, chunk)
    out["cli_s"], out["crud_s"] = cli_seconds, crud_seconds
    out["cli_vs_crud"] = cli_seconds / crud_seconds
    print(json.dumps(out))


if __name__ == "__main__":
    main()
