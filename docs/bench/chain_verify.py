"""Build a log of COPIES x (one simulated 1000-year run) in a scratch schema, time `verify` on it
(wall and process CPU), and drop it (docs/performance.md, "Issue 13: branch `chain`").

    PYTHONPATH=TREE python3 docs/bench/chain_verify.py postgresql://postgres@127.0.0.1:5432/test 100
"""

from __future__ import annotations

import json
import sys
import time
import uuid

from eventsourcing.persistence import StoredEvent

from infrastructure.application import TwinLedger
from infrastructure.bench.runner import scratch
from infrastructure.integrity import scan_log
from infrastructure.settings import resolve_database


def main() -> None:
    copies = int(sys.argv[2])
    with scratch(resolve_database(sys.argv[1]), "cv") as url:
        ledger = TwinLedger.open(url)
        try:
            twin = ledger.clone_twin(name="Mars perf", body="mars")
            run = ledger.queue_run(
                twin, pattern="mars_terraform", duration_years=1000, budget_cents=10**13, seed=1
            )
            ledger.execute_run(run)
            stream = ledger.recorder.select_events(run)
            for _ in range(copies - 1):
                new = uuid.uuid4()
                ledger.recorder.insert_events(
                    [
                        StoredEvent(
                            new,
                            e.originator_version,
                            e.topic,
                            bytes(e.state).replace(str(run).encode(), str(new).encode()),
                        )
                        for e in stream
                    ]
                )
            out = {}
            for attempt in range(3):
                wall, cpu = time.perf_counter(), time.process_time()
                scan = scan_log(ledger.recorder)
                out[f"verify_{attempt}"] = {
                    "wall_s": time.perf_counter() - wall,
                    "cpu_s": time.process_time() - cpu,
                    "events": scan.events,
                    "intact": scan.broken is None,
                }
            print(json.dumps(out))
        finally:
            ledger.close()


if __name__ == "__main__":
    main()
