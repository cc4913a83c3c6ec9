"""Server CPU per event of the side table alone (docs/performance.md, "Issue 13: branch `chain`").

One connection, rows built beforehand (no client work in the window), 250-event transactions
like a run's chunks (synchronous_commit off: CPU only). Three kinds, interleaved, each round a
pass of 80 chunks (20,000 events) of new streams:

    events   BEGIN; COPY the events; COMMIT
    per-row  ... and COPY one hash row per event (the per-event table, before)
    record   ... and COPY one chain record per chunk (after; STORAGE EXTERNAL, or EXTENDED)

The backend's CPU is read from /proc/<pid>/schedstat (nanoseconds on CPU), so other sessions'
load does not count. Prints, per kind, the median over rounds of us of server CPU per event.

    PYTHONPATH=TREE python3 docs/bench/chain_server_cpu.py \
        postgresql://postgres@127.0.0.1:5432/test [rounds]
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
import uuid

import psycopg
from eventsourcing.persistence import StoredEvent
from psycopg import sql

from infrastructure.application import TwinLedger
from infrastructure.bench.runner import scratch
from infrastructure.pg_recorder import event_rows
from infrastructure.settings import resolve_database

CHUNK, CHUNKS = 250, 80
TOPIC = "domain.run:YearResultRecorded"


def on_cpu(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def main() -> None:
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    database = resolve_database(sys.argv[1])
    results: dict[str, list[float]] = {}
    with scratch(database, "cpu") as url:
        TwinLedger.open(url).close()
        schema = resolve_database(url).schema
        with psycopg.connect(resolve_database(url).psycopg_conninfo(), autocommit=True) as c:
            s = sql.Identifier(schema)
            c.execute(
                sql.SQL(
                    "CREATE TABLE {}.per_row (originator_id uuid NOT NULL, originator_version"
                    " bigint NOT NULL, hash bytea NOT NULL, PRIMARY KEY (originator_id,"
                    " originator_version));"
                    " CREATE TABLE {}.extended (LIKE {}.twinledger_event_chain INCLUDING ALL);"
                    " ALTER TABLE {}.extended ALTER COLUMN hashes SET STORAGE EXTENDED"
                ).format(s, s, s, s)
            )
            pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            c.execute("SET synchronous_commit = off")
            copy_events = sql.SQL(
                "COPY {}.twinledger_events (originator_id, originator_version, topic, state)"
                " FROM STDIN (FORMAT BINARY)"
            ).format(s)

            def pass_of(kind: str) -> float:
                began = on_cpu(pid)
                for _ in range(CHUNKS):
                    ident = uuid.uuid4()
                    batch = [
                        StoredEvent(ident, v, TOPIC, os.urandom(16) + bytes(150))
                        for v in range(1, CHUNK + 1)
                    ]
                    hashes = [hashlib.sha256(e.state).digest() for e in batch]
                    c.execute("BEGIN")
                    with c.cursor().copy(copy_events) as copy:
                        copy.write(event_rows(batch))
                    if kind == "per-row":
                        with c.cursor().copy(
                            sql.SQL("COPY {}.per_row FROM STDIN (FORMAT BINARY)").format(s)
                        ) as copy:
                            copy.set_types(["uuid", "int8", "bytea"])
                            for e, h in zip(batch, hashes, strict=True):
                                copy.write_row((ident, e.originator_version, h))
                    elif kind.startswith("record"):
                        table = (
                            "extended" if kind.endswith("extended") else "twinledger_event_chain"
                        )
                        with c.cursor().copy(
                            sql.SQL("COPY {}.{} FROM STDIN (FORMAT BINARY)").format(
                                s, sql.Identifier(table)
                            )
                        ) as copy:
                            copy.set_types(["uuid", "int8", "bytea"])
                            copy.write_row((ident, 1, b"".join(hashes)))
                    c.execute("COMMIT")
                return (on_cpu(pid) - began) / 1000 / (CHUNK * CHUNKS)

            kinds = ["events", "per-row", "record", "record extended"]
            for kind in kinds:
                pass_of(kind)  # warm up
            for r in range(rounds):
                for kind in kinds[r % 4 :] + kinds[: r % 4]:
                    results.setdefault(kind, []).append(pass_of(kind))
    print(
        json.dumps(
            {
                k: {"median_us": statistics.median(v), "min": min(v), "max": max(v)}
                for k, v in results.items()
            }
        )
    )


if __name__ == "__main__":
    main()
