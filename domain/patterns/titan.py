"""titan_fuel: methane and ethane from Titan's lakes, shipped to the inner system.

Projects: habitats (crew places; their upkeep is the base cost of being there), methane rigs,
ethane rigs and a tanker fleet. Rigs need crew: each crew place supports a fixed extraction
rate, so habitats limit extraction; the fleet limits exports (the rest waits in storage).
Physics: the lakes shrink; a little methane leaks into the air. docs/simulation.md has more.
"""

from __future__ import annotations

from domain.prng import SplitMix64
from domain.values import Pattern, RunParameters
from domain.world import Hazard, Milestone, PatternModel, Project, World, YearOutcome, to_cents

CREW_SUPPORT_KG = 5e7  # kg of hydrocarbons a year one crew place keeps flowing
LEAK_SHARE = 0.005  # share of extracted methane lost to the atmosphere
PRICE_METHANE = 2.0  # cents per kg delivered (20 GCC a tonne)
PRICE_ETHANE = 4.0  # cents per kg delivered (a chemical feedstock)
GARDEN_KG_PER_CREW = 1000.0  # greenhouse biomass per crew place
EXPORT_MILESTONE_KG = 1e11


class TitanFuel(PatternModel):
    pattern = Pattern.TITAN_FUEL
    base_annual_cents = 8_000_000_000  # 80 million GCC a year
    project_names = ("ethane_rigs", "habitats", "methane_rigs", "tanker_fleet")
    goals = ("first_revenue", "self_funding", "break_even", "exported_100_mt")
    hazard = Hazard("methane_storm", "a methane storm flooded surface installations", 0.015)

    def __init__(self, parameters: RunParameters, world: World) -> None:
        super().__init__(parameters, world)
        self.start_biomass_kg = world.biomass_kg
        self.stored_kg = 0.0
        self.exported_kg = 0.0

    def projects(self) -> list[Project]:
        return [
            Project("ethane_rigs", 0.15, unit_cost_cents=0.6, upkeep_rate=0.05, depreciation=0.03),
            Project("habitats", 0.25, unit_cost_cents=2e8, upkeep_rate=0.10, depreciation=0.02),
            Project("methane_rigs", 0.30, unit_cost_cents=0.4, upkeep_rate=0.05, depreciation=0.03),
            Project("tanker_fleet", 0.30, unit_cost_cents=0.5, upkeep_rate=0.05, depreciation=0.03),
        ]

    def apply(self, projects: dict[str, Project], rng: SplitMix64) -> YearOutcome:
        world = self.world
        crew = projects["habitats"].output
        wanted = projects["methane_rigs"].output + projects["ethane_rigs"].output
        support = crew * CREW_SUPPORT_KG
        factor = min(1.0, support / wanted) if wanted > 0.0 else 0.0
        methane = projects["methane_rigs"].output * factor
        ethane = projects["ethane_rigs"].output * factor
        extracted = methane + ethane
        if extracted > world.other_liquids_kg:
            scale = world.other_liquids_kg / extracted
            methane, ethane, extracted = methane * scale, ethane * scale, world.other_liquids_kg
        world.other_liquids_kg -= extracted
        leaked = methane * LEAK_SHARE
        world.atmosphere.add("CH4", leaked * world.kpa_per_kg)
        stock = self.stored_kg + extracted - leaked
        shipped = min(stock, projects["tanker_fleet"].output)
        self.stored_kg = stock - shipped
        self.exported_kg += shipped
        ethane_share = ethane / extracted if extracted > 0.0 else 0.0
        revenue = shipped * (ethane_share * PRICE_ETHANE + (1.0 - ethane_share) * PRICE_METHANE)
        gardens = projects["habitats"].capacity * GARDEN_KG_PER_CREW
        world.biomass_kg = self.start_biomass_kg + gardens
        world.relax_temperature()
        return YearOutcome(
            revenue_cents=to_cents(revenue, "economic.revenue_cents"),
            consumption={"ethane_kg": ethane, "methane_kg": methane, "shipped_kg": shipped},
        )

    def milestones(self) -> list[Milestone]:
        return [
            Milestone(
                "exported_100_mt",
                "100 million tonnes of methane and ethane shipped to the inner system",
                lambda: self.exported_kg >= EXPORT_MILESTONE_KG,
                lambda: {"exported_kg": self.exported_kg},
            )
        ]
