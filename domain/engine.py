"""The simulation engine: advances a body's state one year at a time under a pattern.

A run's results are a pure function of its inputs (RunInputs, built from RunQueued).
PLACEHOLDER MODEL: a simple deterministic step, replaced by the real five-pattern engine.
"""

from __future__ import annotations

import msgspec

from domain.values import (
    BodyState,
    Economic,
    Environment,
    KeyEvent,
    Pattern,
    RunParameters,
    RunSummary,
    SuccessMetrics,
    YearResult,
)

ENGINE_VERSION = "0.1.0"


class RunInputs(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a run's results depend on; nothing else is read."""

    state: BodyState
    pattern: Pattern
    duration_years: int
    parameters: RunParameters
    seed: int


class Simulation:
    """Steps a run year by year; ``summary()`` is valid once the last year is done."""

    def __init__(self, inputs: RunInputs) -> None:
        self.inputs = inputs
        self.year = 0
        atmosphere = inputs.state.atmosphere
        self._start = self._environment(atmosphere.mean_temperature_k, 0)
        self._current = self._start
        self._balance = inputs.parameters.budget_cents
        self._spend = 0
        self._events: list[KeyEvent] = []

    def _environment(self, temperature_k: float, year: int) -> Environment:
        state = self.inputs.state
        return Environment(
            temperature_k=temperature_k,
            pressure_kpa=state.atmosphere.surface_pressure_kpa,
            composition_pct=dict(state.atmosphere.composition_pct),
            liquid_water_kg=state.hydrosphere.liquid_water_kg,
            water_ice_kg=state.hydrosphere.water_ice_kg,
            biomass_kg=state.biosphere.biomass_kg,
            habitability=0.0,
        )

    def step(self) -> YearResult:
        self.year += 1
        spend = min(
            self._balance, self.inputs.parameters.budget_cents // self.inputs.duration_years
        )
        self._balance -= spend
        self._spend += spend
        warming = 0.01 * self.inputs.parameters.tech_level + (self.inputs.seed % 7) * 0.001
        self._current = self._environment(self._current.temperature_k + warming, self.year)
        return YearResult(
            year=self.year,
            economic=Economic(spend_cents=spend, revenue_cents=0, balance_cents=self._balance),
            environment=self._current,
            key_events=[],
        )

    def summary(self) -> RunSummary:
        return RunSummary(
            years=self.year,
            success_metrics=SuccessMetrics(
                habitability_score=0.0,
                timeline_efficiency=0.0,
                resource_efficiency=0.0,
                cost_efficiency=0.0,
            ),
            resource_consumption={},
            start_state=self._start,
            end_state=self._current,
            key_events=list(self._events),
            total_spend_cents=self._spend,
            total_revenue_cents=0,
            final_balance_cents=self._balance,
        )
