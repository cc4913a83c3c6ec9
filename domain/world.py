"""What a run evolves: the World (the body's spheres, as mutable floats) and the Projects that
money buys, plus the interface every pattern implements (PatternModel).

Everything here follows the determinism rules of domain/physics.py.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from domain.errors import Picklable
from domain.physics import (
    CMB_K,
    TRIPLE_POINT_KPA,
    Atmosphere,
    clamp,
    interpolate,
    kpa_per_kg,
    molar_mass,
    radiative_temperature_k,
    surface_area_m2,
    vapour_pressure_kpa,
)
from domain.prng import SplitMix64
from domain.values import BodyState, EventData, Pattern, Priority, RunParameters

RELATIVE_HUMIDITY = 0.5
# Photosynthesis, 6 CO2 + 6 H2O -> C6H12O6 + 6 O2, per kg of dry biomass grown:
O2_PER_BIOMASS = 1.07  # kg O2 released
CO2_PER_BIOMASS = 1.47  # kg CO2 fixed per kg of dry biomass grown
CARRYING_KG_M2 = 1.5  # dry biomass per m2 of fully suitable surface (Earth: ~2.2 kg/m2 averaged)

_LIFE_TEMPERATURE = ((230.0, 0.0), (283.0, 1.0), (313.0, 1.0), (340.0, 0.0))
_LIFE_PRESSURE = ((0.3, 0.0), (5.0, 1.0))


class World:
    """The state of the body during a run. Year 0 is the twin's state as queued."""

    def __init__(self, state: BodyState) -> None:
        geosphere = state.geosphere
        self.flux_w_m2 = geosphere.solar_flux_w_m2
        self.albedo = geosphere.bond_albedo
        self.area_m2 = surface_area_m2(geosphere.mean_radius_km)
        self.kpa_per_kg = kpa_per_kg(geosphere.surface_gravity_m_s2, geosphere.mean_radius_km)
        self.solar_factor = 1.0  # mirrors above 1, sunshades below
        atmosphere = state.atmosphere
        self.atmosphere = Atmosphere(atmosphere.surface_pressure_kpa, atmosphere.composition_pct)
        self.temperature_k = atmosphere.mean_temperature_k
        self.water_ice_kg = state.hydrosphere.water_ice_kg
        self.liquid_water_kg = state.hydrosphere.liquid_water_kg
        self.surface_liquid_kg = 0.0  # the part of liquid_water_kg melted during the run
        self.other_liquids_kg = state.hydrosphere.other_liquids_kg
        self.biomass_kg = state.biosphere.biomass_kg
        self.regolith_co2_kg = geosphere.regolith_co2_kg
        self.start_temperature_k = self.temperature_k
        self.start_pressure_kpa = self.atmosphere.pressure_kpa()
        self.start_regolith_co2_kg = self.regolith_co2_kg
        self.start_model_k = self.model_temperature_k()

    # --- temperature ---------------------------------------------------------------------------

    def model_temperature_k(self) -> float:
        return radiative_temperature_k(
            self.flux_w_m2 * self.solar_factor, self.albedo, self.atmosphere.optical_depth()
        )

    def relax_temperature(self, forcing_k: float = 0.0) -> None:
        """Move the temperature part of the way to its target (thermal inertia).

        The target is the start temperature plus the change of the grey-atmosphere model since
        year 0, so the model is calibrated on the body as given. A thicker atmosphere stores
        more heat and responds more slowly.
        """
        target = (
            self.start_temperature_k + (self.model_temperature_k() - self.start_model_k) + forcing_k
        )
        response = 0.5 / (1.0 + self.atmosphere.pressure_kpa() / 200.0)
        moved = self.temperature_k + (target - self.temperature_k) * response
        self.temperature_k = max(CMB_K, moved)

    # --- water ---------------------------------------------------------------------------------

    def include_initial_vapour(self) -> None:
        """Year 0: water vapour in equilibrium with the surface, within the stated pressure."""
        if self.water_ice_kg + self.liquid_water_kg <= 0.0:
            return
        pressure = self.atmosphere.pressure_kpa()
        vapour = min(self._vapour_target_kpa(), 0.5 * pressure)
        if vapour <= 0.0:
            return
        self.atmosphere.scale_all((pressure - vapour) / pressure)
        self.atmosphere.add("H2O", vapour)
        self.start_model_k = self.model_temperature_k()

    def _vapour_target_kpa(self) -> float:
        """Column weight of water vapour at the given relative humidity."""
        partial = RELATIVE_HUMIDITY * vapour_pressure_kpa(self.temperature_k)
        weight = 0.0
        moles = 0.0
        for gas in sorted(self.atmosphere.columns):
            if gas != "H2O":
                weight += self.atmosphere.columns[gas]
                moles += self.atmosphere.columns[gas] / molar_mass(gas)
        weight += self.atmosphere.rest_kpa
        moles += self.atmosphere.rest_kpa / 29.0
        mean_molar_mass = weight / moles if moles > 0.0 else molar_mass("H2O")
        return partial * molar_mass("H2O") / mean_molar_mass

    def exchange_vapour(self) -> float:
        """Evaporate or condense half of the gap to equilibrium; returns kg evaporated (net)."""
        current = self.atmosphere.columns.get("H2O", 0.0)
        available = self.water_ice_kg + self.surface_liquid_kg
        if available <= 0.0 and current <= 0.0:
            return 0.0
        gap_kpa = (self._vapour_target_kpa() - current) * 0.5
        if self.kpa_per_kg <= 0.0:
            return 0.0
        mass = gap_kpa / self.kpa_per_kg
        if mass > 0.0:
            mass = min(mass, available)
            from_liquid = min(mass, self.surface_liquid_kg)
            self.surface_liquid_kg -= from_liquid
            self.liquid_water_kg = max(0.0, self.liquid_water_kg - from_liquid)
            self.water_ice_kg = max(0.0, self.water_ice_kg - (mass - from_liquid))
        else:
            mass = max(mass, -current / self.kpa_per_kg)
            if self.temperature_k >= 273.15:
                self.surface_liquid_kg -= mass
                self.liquid_water_kg -= mass
            else:
                self.water_ice_kg -= mass
        self.atmosphere.add("H2O", mass * self.kpa_per_kg)
        return mass

    def melt_and_freeze(self) -> float:
        """Surface ice melts from 240 K up (warm regions first), melted water refreezes below
        273.15 K, and no liquid survives below the triple-point pressure. Returns kg melted."""
        if self.atmosphere.pressure_kpa() < TRIPLE_POINT_KPA:
            self.water_ice_kg += self.surface_liquid_kg
            self.liquid_water_kg -= self.surface_liquid_kg
            self.surface_liquid_kg = 0.0
            return 0.0
        melt = self.water_ice_kg * 0.01 * clamp((self.temperature_k - 240.0) / 33.0, 0.0, 1.0)
        freeze = (
            self.surface_liquid_kg * 0.1 * clamp((273.15 - self.temperature_k) / 25.0, 0.0, 1.0)
        )
        self.water_ice_kg += freeze - melt
        self.surface_liquid_kg += melt - freeze
        self.liquid_water_kg = max(0.0, self.liquid_water_kg + melt - freeze)
        return melt

    # --- life ----------------------------------------------------------------------------------

    def life_suitability(self) -> float:
        """How well hardy life does here, in [0, 1]: temperature x pressure x water."""
        by_temperature = interpolate(_LIFE_TEMPERATURE, self.temperature_k)
        by_pressure = interpolate(_LIFE_PRESSURE, self.atmosphere.pressure_kpa())
        by_water = 0.3 if self.water_ice_kg > 0.0 else 0.0
        if self.liquid_water_kg > 0.0 and self.area_m2 > 0.0:
            by_water += 0.7 * clamp(self.liquid_water_kg / (self.area_m2 * 100.0), 0.0, 1.0)
        return by_temperature * by_pressure * by_water

    def grow_biomass(self, seed_kg: float, growth_rate: float) -> float:
        """Logistic growth toward a carrying capacity set by suitability; photosynthesis turns
        CO2 into O2 as biomass grows (and back as it decays). Returns the net change, kg."""
        before = self.biomass_kg
        suitability = self.life_suitability()
        if suitability <= 0.0:
            self.biomass_kg -= 0.2 * self.biomass_kg
        else:
            self.biomass_kg += seed_kg
            carrying = self.area_m2 * CARRYING_KG_M2 * suitability
            if self.biomass_kg > carrying:
                self.biomass_kg -= (self.biomass_kg - carrying) * 0.2
            else:
                rate = growth_rate * suitability
                self.biomass_kg += rate * self.biomass_kg * (1.0 - self.biomass_kg / carrying)
        change = self.biomass_kg - before
        self.photosynthesis(change)
        return change

    def photosynthesis(self, biomass_change_kg: float) -> None:
        """Growth fixes CO2 and releases O2; decay does the reverse (as far as the gas lasts)."""
        kpa = self.kpa_per_kg
        if biomass_change_kg >= 0.0:
            fixed = -self.atmosphere.add("CO2", -CO2_PER_BIOMASS * biomass_change_kg * kpa)
            self.atmosphere.add("O2", fixed * O2_PER_BIOMASS / CO2_PER_BIOMASS)
        else:
            used = -self.atmosphere.add("O2", O2_PER_BIOMASS * biomass_change_kg * kpa)
            self.atmosphere.add("CO2", used * CO2_PER_BIOMASS / O2_PER_BIOMASS)


@dataclass
class Project:
    """Capacity that money builds and keeps running.

    ``unit_cost_cents`` builds one unit of capacity at technology level 5; running it costs
    ``upkeep_rate`` of its build cost every year. Unfunded capacity idles and decays faster.
    """

    name: str
    share: float
    unit_cost_cents: float
    upkeep_rate: float = 0.05
    depreciation: float = 0.02
    max_capacity: float | None = None
    capacity: float = 0.0
    damage: float = 0.0  # share destroyed by a hazard this year, applied when it operates
    output: float = 0.0  # this year's useful output, in capacity units
    potential: float = 0.0  # this year's output had it been fully funded and nothing failed


@dataclass(frozen=True)
class Hazard:
    """A rare random event that destroys part of one project's capacity."""

    name: str
    description: str
    annual_probability: float


@dataclass
class YearOutcome:
    """What a pattern's physics produced in one year, besides the world's new state."""

    revenue_cents: int = 0
    consumption: dict[str, float | int] = field(default_factory=dict)  # money: int cents


PRIORITY_SCALE: dict[Priority, tuple[int, int]] = {
    Priority.LOW: (3, 5),
    Priority.NORMAL: (1, 1),
    Priority.HIGH: (3, 2),
}


class PatternModel(ABC):
    """The interface of a pattern: its projects, program cost, physics and milestones.

    Each pattern (domain/patterns/) defines its projects and its year's physics."""

    pattern: Pattern
    base_annual_cents: int = 0
    project_names: tuple[str, ...] = ()
    goals: tuple[str, ...] = ()
    hazard = Hazard("impact", "a meteorite impact damaged equipment", 0.015)
    failure_rate = 0.04

    def __init__(self, parameters: RunParameters, world: World) -> None:
        self.parameters = parameters
        self.params = parameters.pattern_params
        self.world = world

    @classmethod
    def parameter_ranges(cls) -> dict[str, tuple[float, float]]:
        """The pattern's own parameters and their ranges (besides the common ones)."""
        ranges = {"spend_scale": (0.1, 10.0)}
        for name in cls.project_names:
            ranges[f"share_{name}"] = (0.0, 1.0)
        return ranges

    @abstractmethod
    def projects(self) -> list[Project]:
        """The pattern's projects, in their starting state."""

    def shares(self, projects: dict[str, Project]) -> dict[str, float]:
        """This year's split of the money between projects (weights, normalized later)."""
        return {
            name: self.params.get(f"share_{name}", projects[name].share)
            for name in sorted(projects)
        }

    def plan_cents(self) -> int:
        """The program's annual cost before funding variance: base x priority x spend_scale."""
        numerator, denominator = PRIORITY_SCALE[self.parameters.priority]
        base = self.base_annual_cents * numerator // denominator
        return to_cents(base * self.params.get("spend_scale", 1.0), "plan_cents")

    def tech_scaled(self) -> bool:
        """Whether technology level multiplies what money builds."""
        return True

    @abstractmethod
    def apply(self, projects: dict[str, Project], rng: SplitMix64) -> YearOutcome:
        """Advance the world one year with the projects' outputs."""

    def milestones(self) -> list[Milestone]:
        return []


@dataclass(frozen=True)
class Milestone:
    """A threshold: ``reached`` is checked every year; the key event fires the first year it
    holds, unless it already held at year 0."""

    name: str
    description: str
    reached: Callable[[], bool]
    data: Callable[[], EventData]


MAX_CENTS = 2**63 - 1  # money must fit a signed BIGINT column (SQLite and PostgreSQL)
# Any amount of cents a user gives (budgets, costs, revenues, search margins and thresholds):
# half of MAX_CENTS, so a sum or difference of two stays a BIGINT (infrastructure/inputs.py Cents)
MAX_GIVEN_CENTS = 2**62


class NonFinite(Picklable, ArithmeticError):
    """A quantity of the year in progress is inf, NaN or money beyond MAX_CENTS.

    Raised where a float becomes money (``int`` of inf or NaN would raise without naming
    anything); the engine turns it into SimulationDiverged with the year.
    """

    def __init__(self, field: str, value: float | int) -> None:
        super().__init__(f"{field} is {value!r}")
        self.field = field
        self.value = value

    def describe(self) -> str:
        value = self.value
        if isinstance(value, int):
            return f"{value} cents, beyond the {MAX_CENTS} a BIGINT holds"
        return repr(value)


def to_cents(value: float, field: str) -> int:
    """A float amount as integer cents, truncated toward zero; NonFinite if it is inf, NaN or
    beyond MAX_CENTS."""
    if not math.isfinite(value) or abs(value) > MAX_CENTS:
        raise NonFinite(field, value)
    return int(value)


def ceil_cents(value: float, field: str) -> int:
    """A float cost as integer cents, rounded up (nothing for zero or less)."""
    if not math.isfinite(value) or abs(value) > MAX_CENTS:
        raise NonFinite(field, value)
    return math.ceil(value) if value > 0.0 else 0
