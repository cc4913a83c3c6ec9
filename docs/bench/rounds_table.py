"""Print the key rows of docs/bench/rounds.sh's output, per back end and tree, in round order.

python3 docs/bench/rounds_table.py OUT
"""

from __future__ import annotations

import glob
import json
import os
import statistics
import sys

ROWS = [
    "append / raw COPY like for like",
    "rebuild / raw COPY like for like",
    "rebuild / raw COPY ceiling",
    "write path vs direct CRUD, as the CLI and API do it",
    "write path vs direct CRUD, bulk",
    "end to end, one 1000-year run",
    "query p95: series of one run",
    "append",
    "rebuild from 0",
    "bytes per YearResultRecorded (state)",
]


def _measurements(path: str) -> list[dict[str, object]]:
    with open(path) as file:
        measurements: list[dict[str, object]] = json.load(file)["measurements"]
    return measurements


def main(out: str) -> None:
    for backend in ("pg", "lite"):
        found = glob.glob(f"{out}/*.{backend}.*.json")
        trees = sorted({os.path.basename(f).split(".")[0] for f in found})
        for tree in trees:
            files = sorted(
                glob.glob(f"{out}/{tree}.{backend}.*.json"), key=lambda f: int(f.split(".")[-2])
            )
            data = [{m["name"]: m for m in _measurements(f)} for f in files]
            print(f"== {backend} {tree} ({len(files)} rounds)")
            for row in ROWS:
                values = [d[row]["value"] for d in data if row in d]
                if values:
                    shown = " / ".join(f"{v:.3f}" if v < 100 else f"{v:,.0f}" for v in values)
                    print(f"   {row[:52]:52} {shown}   median {statistics.median(values):.3f}")
            scaling = [
                d["8 concurrent writers"]["value"] / d["1 concurrent writers"]["value"]
                for d in data
                if "8 concurrent writers" in d
            ]
            if scaling:
                print(f"   {'8 writers / 1 writer':52} " + " / ".join(f"{v:.2f}" for v in scaling))


if __name__ == "__main__":
    main(sys.argv[1])
