"""What the SQLite write path costs per event against direct CRUD, in instructions, by library.

One process per measurement, run under callgrind; the difference between K = 4 and K = 0 runs
of 1000 years is divided by the events of the K runs (4 x 1002). ``gen`` measures generating
the years alone (the engine), which ``ours`` and ``crud`` both include and which is subtracted:

    for m in gen ours crud; do for k in 0 4; do
      PYTHONPATH=$TREE valgrind --tool=callgrind --cache-sim=no --callgrind-out-file=cg.$m.$k \
          python3.11 docs/bench/sqlite_write_path_instructions.py $m $k DIR
    done; done
    python3 docs/bench/sqlite_write_path_instructions.py report 0 DIR

``ours`` is the path the CLI and the API take (record_runs with keep_current attached, a
warm-up run first); ``crud`` is the bench's direct-CRUD baseline (infrastructure/bench/runner.py
direct_crud) on the same years. docs/performance.md, "The SQLite write path against CRUD, by
library".
"""

from __future__ import annotations

import collections
import glob
import os
import re
import subprocess
import sys

EVENTS = 4 * 1002  # four 1000-year runs: RunQueued, RunStarted and 1000 YearResultRecorded each


def measure(mode: str, runs: int, directory: str) -> None:
    from infrastructure.application import TwinLedger
    from infrastructure.bench.data import generate
    from infrastructure.bench.runner import direct_crud, record_runs
    from projections.keep_current import keep_current

    for path in glob.glob(os.path.join(directory, "cg_*.db*")):
        os.remove(path)
    data = generate(1 + runs, 1000)
    if mode == "ours":
        ledger = TwinLedger.open(f"sqlite:///{directory}/cg_ledger.db")
        detach = keep_current(ledger, print)
        record_runs(ledger, data[:1], 250)
        record_runs(ledger, data[1:], 250)
        detach()
    elif mode == "crud":
        direct_crud(f"sqlite:///{directory}/cg_crud.db", data[1:], 250)


def by_library(path: str) -> collections.Counter[str]:
    out = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=100", path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    counts: collections.Counter[str] = collections.Counter()
    for line in out.splitlines():
        match = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*?)(?: \[(.*)\])?$", line)
        if not match or "PROGRAM TOTALS" in line:
            continue
        library = (match.group(3) or "interpreter, inlined").rsplit("/", 1)[-1]
        if "libc.so" in library and "memset" in match.group(2):
            library = "libc memset"
        counts[library] += int(match.group(1).replace(",", ""))
    return counts


def report(directory: str) -> None:
    def delta(mode: str) -> collections.Counter[str]:
        counts = by_library(os.path.join(directory, f"cg.{mode}.4"))
        counts.subtract(by_library(os.path.join(directory, f"cg.{mode}.0")))
        return counts

    engine = delta("gen")
    for mode in ("ours", "crud"):
        counts = delta(mode)
        counts.subtract(engine)
        print(f"{mode}: {round(sum(counts.values()) / EVENTS):,} instructions per event")
        for library, count in counts.most_common(8):
            print(f"    {library:45} {round(count / EVENTS):>9,}")


if __name__ == "__main__":
    if sys.argv[1] == "report":
        report(sys.argv[3])
    else:
        measure(sys.argv[1], int(sys.argv[2]), sys.argv[3])
