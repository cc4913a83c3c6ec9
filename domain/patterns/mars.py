"""mars_terraform: warm a cold, thin-aired world until water and life can stay.

Projects: greenhouse-gas factories (designed fluorine gases, "PFC"), orbital mirrors (sunlight
onto the polar caps), oxygen plants (CO2 -> C + O2) and biosphere seeding (hardy organisms,
only while life can survive). Physics: warming by the grey atmosphere, CO2 released from caps
and regolith as the poles warm, ice melting and water vapour, logistic biosphere growth with
photosynthesis. docs/simulation.md gives the formulas and sources.
"""

from __future__ import annotations

from domain.physics import clamp
from domain.prng import SplitMix64
from domain.values import Pattern, RunParameters
from domain.world import Hazard, Milestone, PatternModel, Project, World, YearOutcome

PFC_LOSS = 0.002  # yearly share of the designed gases broken up by UV (lifetimes ~ centuries+)
POLAR_HEATING_K_PER_KM2 = 5.0 / 49_000.0  # a 125 km radius mirror warms the cap ~5 K
FULL_RELEASE_K = 40.0  # polar warming at which all accessible CO2 is in the air
RELEASE_RATE = 0.10  # share of the gap to equilibrium released per year
READSORB_RATE = 0.02  # share of the gap taken back into caps and regolith per year
CO2_PER_O2 = 44.009 / 31.998  # kg CO2 split per kg O2 (CO2 -> C + O2)
GROWTH_RATE = 0.5  # yearly growth rate of biomass in fully suitable conditions
ESTABLISHED_BIOMASS_KG = 1e8
TARGET_K = 288.0  # the program stops funding greenhouse factories at this mean temperature


class MarsTerraform(PatternModel):
    pattern = Pattern.MARS_TERRAFORM
    base_annual_cents = 11_000_000_000  # 110 million GCC a year
    project_names = ("biosphere_seeding", "ghg_factories", "orbital_mirrors", "oxygen_plants")
    goals = (
        "warming_10k",
        "pressure_doubled",
        "first_liquid_water",
        "biosphere_established",
        "armstrong_limit",
        "liquid_water_stable",
    )
    hazard = Hazard("impact", "a meteorite impact damaged surface equipment", 0.015)

    def __init__(self, parameters: RunParameters, world: World) -> None:
        super().__init__(parameters, world)
        world.include_initial_vapour()
        self.disk_km2 = world.area_m2 / 4.0 / 1e6  # the disk that intercepts sunlight, km2

    def projects(self) -> list[Project]:
        return [
            Project(
                "biosphere_seeding",
                0.10,
                unit_cost_cents=1_000.0,
                upkeep_rate=0.0,
                depreciation=1.0,
            ),
            Project(
                "ghg_factories", 0.40, unit_cost_cents=0.005, upkeep_rate=0.08, depreciation=0.03
            ),
            Project(
                "orbital_mirrors",
                0.30,
                unit_cost_cents=1_000_000.0,
                upkeep_rate=0.03,
                depreciation=0.02,
            ),
            Project(
                "oxygen_plants", 0.20, unit_cost_cents=0.01, upkeep_rate=0.06, depreciation=0.03
            ),
        ]

    @classmethod
    def parameter_ranges(cls) -> dict[str, tuple[float, float]]:
        ranges = super().parameter_ranges()
        ranges["target_temperature_k"] = (220.0, 320.0)
        return ranges

    def shares(self, projects: dict[str, Project]) -> dict[str, float]:
        shares = super().shares(projects)
        if self.world.life_suitability() <= 0.0:
            shares["biosphere_seeding"] = 0.0  # no point seeding where nothing survives
        if self.world.temperature_k >= self.params.get("target_temperature_k", TARGET_K):
            shares["ghg_factories"] = 0.0  # warm enough: factories idle, the gases slowly go
        return shares

    def apply(self, projects: dict[str, Project], rng: SplitMix64) -> YearOutcome:
        world = self.world
        atmosphere = world.atmosphere
        pfc_kg = projects["ghg_factories"].output
        if pfc_kg > 0.0:
            atmosphere.add("PFC", pfc_kg * world.kpa_per_kg)
        if "PFC" in atmosphere.columns:
            atmosphere.columns["PFC"] *= 1.0 - PFC_LOSS
        mirror_km2 = projects["orbital_mirrors"].output
        polar_heating_k = mirror_km2 * POLAR_HEATING_K_PER_KM2
        world.solar_factor = 1.0 + (mirror_km2 / self.disk_km2 if self.disk_km2 > 0.0 else 0.0)
        world.relax_temperature()
        released_kg = self._release_co2(polar_heating_k)
        melted_kg = world.melt_and_freeze()
        evaporated_kg = world.exchange_vapour()
        o2_kg = self._make_oxygen(projects["oxygen_plants"].output)
        world.grow_biomass(projects["biosphere_seeding"].output, GROWTH_RATE)
        return YearOutcome(
            revenue_cents=0,
            consumption={
                "co2_split_kg": o2_kg * CO2_PER_O2,
                "pfc_made_kg": pfc_kg,
                "regolith_co2_released_kg": released_kg,
                "seed_organisms_kg": projects["biosphere_seeding"].output,
                "water_ice_melted_kg": melted_kg,
                "water_evaporated_kg": evaporated_kg,
            },
        )

    def _release_co2(self, polar_heating_k: float) -> float:
        """CO2 from caps and regolith approaches a share of the reservoir set by polar warming."""
        world = self.world
        reservoir = world.start_regolith_co2_kg
        if reservoir <= 0.0:
            return 0.0
        warming = world.temperature_k - world.start_temperature_k + polar_heating_k
        target = reservoir * clamp(warming / FULL_RELEASE_K, 0.0, 1.0)
        gap = target - (reservoir - world.regolith_co2_kg)
        if gap > 0.0:
            moved = min(gap * RELEASE_RATE, world.regolith_co2_kg)
        else:
            in_air = world.atmosphere.columns.get("CO2", 0.0) / world.kpa_per_kg
            moved = -min(-gap * READSORB_RATE, in_air)
        world.regolith_co2_kg -= moved
        world.atmosphere.add("CO2", moved * world.kpa_per_kg)
        return moved

    def _make_oxygen(self, capacity_kg: float) -> float:
        world = self.world
        co2_kg = world.atmosphere.columns.get("CO2", 0.0) / world.kpa_per_kg
        o2_kg = min(capacity_kg, co2_kg * 0.5 / CO2_PER_O2)  # never split more than half the air
        if o2_kg <= 0.0:
            return 0.0
        world.atmosphere.add("CO2", -o2_kg * CO2_PER_O2 * world.kpa_per_kg)
        world.atmosphere.add("O2", o2_kg * world.kpa_per_kg)
        return o2_kg

    def milestones(self) -> list[Milestone]:
        world = self.world
        start_t = world.start_temperature_k
        start_p = world.start_pressure_kpa
        return [
            Milestone(
                "warming_10k",
                f"mean temperature rose 10 K above its start ({start_t:g} K)",
                lambda: world.temperature_k >= start_t + 10.0,
                lambda: {"temperature_k": world.temperature_k, "start_temperature_k": start_t},
            ),
            Milestone(
                "pressure_doubled",
                f"surface pressure doubled from its start ({start_p:g} kPa)",
                lambda: world.atmosphere.pressure_kpa() >= 2.0 * start_p,
                lambda: {
                    "pressure_kpa": world.atmosphere.pressure_kpa(),
                    "start_pressure_kpa": start_p,
                },
            ),
            Milestone(
                "biosphere_established",
                "seeded organisms took hold: over 100,000 tonnes of living biomass",
                lambda: world.biomass_kg >= ESTABLISHED_BIOMASS_KG,
                lambda: {"biomass_kg": world.biomass_kg},
            ),
        ]
