"""The Python API in a few lines (docs/api.md): clone, run, read, verify, travel in time.

Run it with a database URL (default: a fresh SQLite file in a temporary folder):
    python3 docs/examples/api_example.py [sqlite:///ledger.db | postgresql://...]
"""

from __future__ import annotations

import sys
import tempfile

from infrastructure.service import Ledger


def main(url: str) -> None:
    with Ledger.open(url) as ledger:
        twin = ledger.clone_twin(name="Mars A", body="mars", expires_in="30d")
        run = ledger.queue_run(
            twin.id, pattern="mars_terraform", years=100, budget_cents=1_000_000_000_000, seed=42
        )
        run = ledger.execute_run(run.id)  # here, blocking; the HTTP server does it in background
        print(f"run {run.id} {run.status}: {run.current_year} years, digest {run.result_digest}")
        print(f"spent {run.total_spend_cents} cents, habitability {run.habitability_score:.3f}")

        economic = ledger.results(run.id, result_type="economic", from_year=99)
        print("balance in year 100:", economic[-1].data["balance_cents"], "cents")

        state = ledger.state_at_year(run.id, 50)  # time travel, from the recorded events only
        print("temperature in year 50:", state.environment["temperature_k"], "K")

        verdict = ledger.replay_run(run.id)  # re-simulate and compare every year
        print("replay:", "identical" if verdict.identical else verdict.divergence)

        page = ledger.runs(twin=twin.id, status="completed", limit=10)
        print("completed runs of the twin:", [r.id for r in page.items])


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as folder:
            main(f"sqlite:///{folder}/ledger.db")
