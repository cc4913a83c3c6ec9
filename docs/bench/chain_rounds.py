"""One round of the chain-records measurement (docs/performance.md, "Issue 13: branch `chain`").

Run with PYTHONPATH at the tree to measure; prints one JSON line. The same calls as
`twinledger bench` (infrastructure/bench/runner.py): record_runs (the append, timed as the
bench times it), raw_copy_like_for_like, the CLI/API path (keep_current) and direct_crud, on
fresh scratch storage each. Also: the server CPU of the append (utime + stime of the backends
the ledger's pool used, from /proc, found by application_name), the client CPU, and the stored
size of the chain's side table per event.

    PYTHONPATH=TREE python3 docs/bench/chain_rounds.py postgresql://postgres@127.0.0.1:5432/test
    PYTHONPATH=TREE python3 docs/bench/chain_rounds.py sqlite
    ... --storage extended   (PostgreSQL: the chain records' column back to the default storage)
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
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

TICK = os.sysconf("SC_CLK_TCK")


def backend_cpu(conninfo: str) -> dict[int, float]:
    """CPU seconds so far of each backend carrying this process's application_name."""
    with psycopg.connect(conninfo, autocommit=True) as connection:
        pids = [
            r[0]
            for r in connection.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
                " AND pid <> pg_backend_pid()",
                (APP,),
            )
        ]
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / TICK
    return out


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

    with scratch(database, "ca") as url:
        ledger = TwinLedger.open(url)
        try:
            if storage and database.is_postgres:
                with psycopg.connect(database.psycopg_conninfo(), autocommit=True) as c:
                    c.execute(
                        f'ALTER TABLE "{resolve_database(url).schema}".twinledger_event_chain'
                        f" ALTER COLUMN hashes SET STORAGE {storage}"
                    )
            conninfo = resolve_database(url).psycopg_conninfo()
            before = backend_cpu(conninfo) if database.is_postgres else {}
            cpu = time.process_time()
            appended, seconds = record_runs(ledger, data, chunk)
            client = time.process_time() - cpu
            if database.is_postgres:
                after = backend_cpu(conninfo)
                server = sum(t - before.get(pid, 0.0) for pid, t in after.items())
                out["server_us_per_event"] = server / appended * 1e6
                out["side_table"], size = side_table_bytes(url)
                out["side_bytes_per_event"] = size / appended
        finally:
            ledger.close()
    out["append"] = rate(appended, seconds)
    out["client_us_per_event"] = client / appended * 1e6
    if database.is_postgres:
        with scratch(database, "cl") as url:
            rows, like_seconds = raw_copy_like_for_like(url, data, chunk)
        out["like"] = rate(rows, like_seconds)
        out["ratio"] = out["append"] / out["like"]
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
