"""Scale-out benchmark: the same queued runs executed by 1, 2, 4... Dask worker processes.

Each worker count gets its own scratch store (infrastructure/bench/runner.py) holding the same
queued runs (same seeds); the clock runs from the first submit to the last outcome (the cluster's
start-up is reported apart). Every run's digest is checked equal across worker counts, so the
throughput compared is that of identical work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from domain.errors import ValidationError
from infrastructure.application import TwinLedger
from infrastructure.bench.runner import scratch
from infrastructure.executors import DaskExecutor
from infrastructure.settings import Database

BUDGET_CENTS = 1_000_000_000_000


@dataclass(frozen=True)
class Scaling:
    workers: int
    runs: int
    years: int
    startup_seconds: float
    seconds: float

    @property
    def runs_per_second(self) -> float:
        return self.runs / self.seconds

    @property
    def years_per_second(self) -> float:
        return self.runs * self.years / self.seconds


def scale_out(
    database: Database,
    *,
    runs: int,
    years: int,
    worker_counts: tuple[int, ...],
    scheduler: str = "local",
    progress: Callable[[str], None] = print,
) -> list[Scaling]:
    """Time ``runs`` x ``years`` on a LocalCluster (or ``scheduler``) per worker count."""
    if not database.is_postgres:
        raise ValidationError("db", "--scale-out needs PostgreSQL (--db postgresql://...)")
    measured: list[Scaling] = []
    digests: dict[int, str | None] | None = None
    for count in worker_counts:
        with scratch(database, f"scale{count}") as url:
            ledger = TwinLedger.open(url)
            twin = ledger.clone_twin(name="bench", body="mars", created_by="bench")
            queued = [
                str(
                    ledger.queue_run(
                        twin,
                        pattern="mars_terraform",
                        duration_years=years,
                        seed=seed,
                        budget_cents=BUDGET_CENTS,
                        initiated_by="bench",
                    )
                )
                for seed in range(runs)
            ]
            began = time.perf_counter()
            executor = DaskExecutor(url, scheduler, workers=count)
            started = time.perf_counter()
            try:
                executor.run_all(queued)
            finally:
                executor.close()
            seconds = time.perf_counter() - started
            seen = {seed: ledger.get_run(run).result_digest for seed, run in enumerate(queued)}
            ledger.close()
        if digests is not None and seen != digests:
            raise AssertionError(f"{count} workers gave other digests than the first count")
        digests = seen
        measured.append(Scaling(count, runs, years, started - began, seconds))
        progress(f"{count} workers: {runs / seconds:.2f} runs/s ({seconds:.1f} s)")
    return measured
