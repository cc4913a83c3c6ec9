"""Where the write path's time goes as the CLI takes it: 20 runs x 1000 years recorded through
``keep_current`` on a scratch PostgreSQL schema, every statement, COPY and commit timed in the
client, and the catch-ups (the after-write hooks) timed apart (wall and client CPU).

    PYTHONPATH=$TREE python3 docs/bench/write_path_statements.py SCHEMA

(docs/performance.md, "Where each target stands (third session, quiet machine)").
"""

from __future__ import annotations

import collections
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import Cursor

from infrastructure.application import TwinLedger, default_chunk
from infrastructure.bench.data import generate
from infrastructure.bench.runner import record_runs
from projections.runner import keep_current

SPENT: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])


def _key(cursor: Any, query: Any) -> str:
    text = query.as_string(cursor.connection) if hasattr(query, "as_string") else str(query)
    return " ".join(text.split())[:90]


def _timed_statements() -> None:
    execute, copy, commit = Cursor.execute, Cursor.copy, psycopg.Connection.commit

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

    Cursor.execute = timed_execute  # type: ignore[method-assign]
    Cursor.copy = timed_copy  # type: ignore[method-assign]
    psycopg.Connection.commit = timed_commit  # type: ignore[method-assign]


def main(schema: str) -> None:
    url = f"postgresql://postgres@127.0.0.1:5432/test?schema={schema}"
    data = generate(20, 1000)
    _timed_statements()
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
    wall, cpu = time.perf_counter(), time.process_time()
    record_runs(ledger, data, default_chunk(1000))
    print(f"in all: {time.perf_counter() - wall:.3f} s wall, {time.process_time() - cpu:.3f} s CPU")
    print(f"catch-ups: {hooks['wall']:.3f} s wall, {hooks['cpu']:.3f} s CPU")
    detach()
    ledger.close()
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as admin:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    for key, (count, seconds) in sorted(SPENT.items(), key=lambda kv: -kv[1][1])[:15]:
        print(f"{seconds * 1000:8.1f} ms {int(count):6d}  {key}")


if __name__ == "__main__":
    main(sys.argv[1])
