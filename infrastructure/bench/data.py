"""The benchmark's data: N runs of Y years, simulated once by the real engine and reused by
every measurement and baseline, so all of them write the same rows."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID, uuid4

import msgspec

from domain.catalog import CATALOG
from domain.engine import RunInputs, Simulation
from domain.values import Pattern, RunParameters, YearResult

BUDGET_CENTS = 1_000_000_000_000
DISTINCT_RUNS = 4  # simulated once each; further runs reuse their years under new ids


@dataclass(frozen=True)
class GeneratedRun:
    run_id: UUID
    seed: int
    years: list[YearResult]

    def result_rows(self) -> list[tuple[UUID, int, str, bytes]]:
        """(run id, year, result_type, data JSON): what simulation_results holds for this run."""
        rows = []
        for year in self.years:
            rows.append((self.run_id, year.year, "economic", msgspec.json.encode(year.economic)))
            rows.append(
                (self.run_id, year.year, "environmental", msgspec.json.encode(year.environment))
            )
            if year.key_events:
                rows.append(
                    (self.run_id, year.year, "timeline", msgspec.json.encode(year.key_events))
                )
        return rows


def simulate(years: int, seed: int) -> list[YearResult]:
    mars = CATALOG["mars"]
    simulation = Simulation(
        RunInputs(
            state=mars.state,
            pattern=Pattern.MARS_TERRAFORM,
            duration_years=years,
            parameters=RunParameters(budget_cents=BUDGET_CENTS),
            seed=seed,
        )
    )
    return [simulation.step() for _ in range(years)]


def generate(runs: int, years: int) -> list[GeneratedRun]:
    """``runs`` runs of ``years`` years: a few distinct simulations, reused under fresh ids."""
    distinct = [simulate(years, seed) for seed in range(min(runs, DISTINCT_RUNS))]
    return [
        GeneratedRun(
            run_id=uuid4(), seed=index % len(distinct), years=distinct[index % len(distinct)]
        )
        for index in range(runs)
    ]
