"""Value objects shared by the aggregates and the engine.

Every physical quantity carries its unit in its name (``_k``, ``_kpa``, ``_kg``, ``_pct``),
and every amount of money is an integer number of GCC cents (``_cents``).
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

MIN_YEARS = 1
MAX_YEARS = 1000
MAX_SEED = 2**63 - 1  # seeds fit a signed BIGINT column in SQLite and PostgreSQL


class TwinStatus(StrEnum):
    READY = "ready"
    RUNNING_SIMULATION = "running_simulation"
    COMPLETED = "completed"
    FAILED = "failed"
    DELETED = "deleted"


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Pattern(StrEnum):
    MARS_TERRAFORM = "mars_terraform"
    VENUS_INDUSTRIAL = "venus_industrial"
    TITAN_FUEL = "titan_fuel"
    EUROPA_OCEAN = "europa_ocean"
    CUSTOM = "custom"


class SimulationType(StrEnum):
    TERRAFORMING = "terraforming"
    INDUSTRIAL = "industrial"
    FUEL = "fuel"
    OCEAN = "ocean"
    CUSTOM = "custom"


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


class Atmosphere(msgspec.Struct, frozen=True, kw_only=True):
    """Surface pressure (kPa), mean surface temperature (K) and composition (% by volume)."""

    surface_pressure_kpa: float
    mean_temperature_k: float
    composition_pct: dict[str, float]


class Hydrosphere(msgspec.Struct, frozen=True, kw_only=True):
    """Water as ice and as liquid (kg), other surface liquids (kg, e.g. Titan's methane),
    and the share of the surface covered by liquid (%)."""

    water_ice_kg: float
    liquid_water_kg: float
    other_liquids_kg: float = 0.0
    liquid_coverage_pct: float = 0.0


class Geosphere(msgspec.Struct, frozen=True, kw_only=True):
    """Bulk body properties and the volatiles locked in the ground."""

    mass_kg: float
    mean_radius_km: float
    surface_gravity_m_s2: float
    bond_albedo: float
    solar_flux_w_m2: float
    regolith_co2_kg: float = 0.0


class Biosphere(msgspec.Struct, frozen=True, kw_only=True):
    """Living matter (kg dry biomass) and how much of the surface it covers (%)."""

    biomass_kg: float = 0.0
    coverage_pct: float = 0.0


class BodyState(msgspec.Struct, frozen=True, kw_only=True):
    """The four spheres of a body: what a twin clones and what a run evolves."""

    atmosphere: Atmosphere
    hydrosphere: Hydrosphere
    geosphere: Geosphere
    biosphere: Biosphere


class CustomSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Rates and costs of a user-defined pattern, applied once per simulated year."""

    name: str
    annual_cost_cents: int
    annual_revenue_cents: int = 0
    temperature_change_k: float = 0.0
    pressure_change_kpa: float = 0.0
    gas_change_pct: dict[str, float] = msgspec.field(default_factory=dict)
    liquid_water_change_kg: float = 0.0
    biomass_growth_rate: float = 0.0


class RunParameters(msgspec.Struct, frozen=True, kw_only=True):
    """What the user chose for a run. ``budget_cents`` is integer GCC cents."""

    budget_cents: int
    tech_level: int = 5
    priority: Priority = Priority.NORMAL
    pattern_params: dict[str, float] = msgspec.field(default_factory=dict)
    custom_spec: CustomSpec | None = None


class Economic(msgspec.Struct, frozen=True, kw_only=True):
    """One year's money, in integer GCC cents."""

    spend_cents: int
    revenue_cents: int
    balance_cents: int


class Environment(msgspec.Struct, frozen=True, kw_only=True):
    """One year's environmental state at the end of the year."""

    temperature_k: float
    pressure_kpa: float
    composition_pct: dict[str, float]
    liquid_water_kg: float
    water_ice_kg: float
    biomass_kg: float
    habitability: float


EventData = dict[str, float | int]
"""A key event's numbers: quantities as floats, money (keys ending ``_cents``) as int cents."""


def is_money(key: str) -> bool:
    """Whether a field or data key holds money: its name ends in ``_cents`` (integer cents)."""
    return key.endswith("_cents")


class KeyEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A threshold crossed in a given year; self-contained so a reader needs nothing else.

    ``data`` holds quantities as floats and money (keys ending ``_cents``) as integer cents.
    """

    year: int
    name: str
    description: str
    data: EventData = msgspec.field(default_factory=dict)


class YearResult(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one simulated year produced."""

    year: int
    economic: Economic
    environment: Environment
    key_events: list[KeyEvent] = msgspec.field(default_factory=list)


class SuccessMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """Scores in [0, 1]."""

    habitability_score: float
    timeline_efficiency: float
    resource_efficiency: float
    cost_efficiency: float


class RunSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What a completed run amounts to."""

    years: int
    success_metrics: SuccessMetrics
    resource_consumption: dict[str, float | int]  # money (``_cents``) as integer cents
    start_state: Environment
    end_state: Environment
    key_events: list[KeyEvent]
    total_spend_cents: int
    total_revenue_cents: int
    final_balance_cents: int
