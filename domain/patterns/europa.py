"""europa_ocean: drill through the ice shell, live in the ocean below, sell the science.

Projects: drilling (km of borehole a year), ocean habitats (modules, only once the shell is
breached), research stations, and radiation shielding. Jupiter's radiation destroys a share
of all unshielded equipment every year. Revenue is research: stations earn a little, ocean
habitats much more. docs/simulation.md has the formulas.
"""

from __future__ import annotations

from domain.physics import PI
from domain.prng import SplitMix64
from domain.values import Pattern, RunParameters
from domain.world import (
    Hazard,
    Milestone,
    PatternModel,
    Project,
    World,
    YearOutcome,
    to_cents,
)

ICE_DENSITY = 917.0  # kg/m3
RADIATION_LOSS = 0.08  # yearly share of unshielded capacity destroyed by radiation
BOREHOLE_RADIUS_M = 1.5
RESEARCH_STATION_CENTS = 3e8  # yearly research revenue per station (3 million GCC)
RESEARCH_HABITAT_CENTS = 8e8  # yearly research revenue per ocean habitat (8 million GCC)
GARDEN_KG_PER_HABITAT = 2000.0
COLONY_HABITATS = 10.0


class EuropaOcean(PatternModel):
    pattern = Pattern.EUROPA_OCEAN
    base_annual_cents = 9_000_000_000  # 90 million GCC a year
    project_names = ("drilling", "ocean_habitats", "radiation_shielding", "research_stations")
    goals = ("shell_breached", "first_ocean_habitat", "ocean_colony", "first_revenue", "break_even")
    hazard = Hazard("radiation_storm", "a burst of Jovian radiation wrecked equipment", 0.03)

    def __init__(self, parameters: RunParameters, world: World) -> None:
        super().__init__(parameters, world)
        self.shell_km = (
            world.water_ice_kg / (world.area_m2 * ICE_DENSITY) / 1000.0 if world.area_m2 else 0.0
        )
        self.depth_km = 0.0
        self.start_biomass_kg = world.biomass_kg
        self.habitats = 0.0

    @property
    def breached(self) -> bool:
        return self.depth_km >= self.shell_km

    def projects(self) -> list[Project]:
        return [
            Project("drilling", 0.40, unit_cost_cents=3e10, upkeep_rate=0.05, depreciation=0.02),
            Project(
                "ocean_habitats", 0.25, unit_cost_cents=2e9, upkeep_rate=0.08, depreciation=0.02
            ),
            Project(
                "radiation_shielding",
                0.15,
                unit_cost_cents=1e11,
                upkeep_rate=0.02,
                depreciation=0.02,
                max_capacity=0.9,
            ),
            Project(
                "research_stations", 0.20, unit_cost_cents=1e9, upkeep_rate=0.06, depreciation=0.02
            ),
        ]

    def shares(self, projects: dict[str, Project]) -> dict[str, float]:
        shares = super().shares(projects)
        if self.breached:
            shares["drilling"] = 0.0  # the borehole is open; its upkeep is in the habitats'
        else:
            shares["ocean_habitats"] = 0.0  # nowhere to put them yet
        return shares

    def apply(self, projects: dict[str, Project], rng: SplitMix64) -> YearOutcome:
        world = self.world
        shielding = projects["radiation_shielding"].capacity
        lost_cents = 0.0
        loss = RADIATION_LOSS * (1.0 - shielding)
        for name in sorted(projects):
            project = projects[name]
            lost_cents += project.capacity * loss * project.unit_cost_cents
            project.capacity *= 1.0 - loss
        drilled_km = 0.0
        if not self.breached:
            drilled_km = min(projects["drilling"].output, self.shell_km - self.depth_km)
            self.depth_km += drilled_km
        ice_kg = PI * BOREHOLE_RADIUS_M * BOREHOLE_RADIUS_M * drilled_km * 1000.0 * ICE_DENSITY
        world.water_ice_kg = max(0.0, world.water_ice_kg - ice_kg)
        world.liquid_water_kg += ice_kg
        habitats = projects["ocean_habitats"].output
        self.habitats = projects["ocean_habitats"].capacity
        revenue = (
            projects["research_stations"].output * RESEARCH_STATION_CENTS
            + habitats * RESEARCH_HABITAT_CENTS
        )
        world.biomass_kg = (
            self.start_biomass_kg + projects["ocean_habitats"].capacity * GARDEN_KG_PER_HABITAT
        )
        world.relax_temperature()
        return YearOutcome(
            revenue_cents=to_cents(revenue, "economic.revenue_cents"),
            consumption={
                "ice_drilled_kg": ice_kg,
                "radiation_losses_cents": to_cents(
                    lost_cents, "resource_consumption.radiation_losses_cents"
                ),
            },
        )

    def milestones(self) -> list[Milestone]:
        return [
            Milestone(
                "shell_breached",
                "the borehole broke through the ice shell into the ocean",
                lambda: self.breached and self.shell_km > 0.0,
                lambda: {"depth_km": self.depth_km, "shell_km": self.shell_km},
            ),
            Milestone(
                "first_ocean_habitat",
                "the first habitat module was installed in the ocean",
                lambda: self.habitats >= 1.0,
                lambda: {"habitats": self.habitats},
            ),
            Milestone(
                "ocean_colony",
                f"{COLONY_HABITATS:g} habitat modules are living in the ocean",
                lambda: self.habitats >= COLONY_HABITATS,
                lambda: {"habitats": self.habitats},
            ),
        ]
