"""venus_industrial: floating industry in Venus's cloud deck, and a sunshade to cool it.

Projects: atmosphere processors (CO2 -> carbon + O2, scrubbing SO2 to sulfuric acid), gas
extraction (nitrogen for export), aerostat industry (carbon products) and a sunshade at the
Sun-Venus L1 point. Physics: processing thins the CO2 atmosphere a little; the sunshade cuts
sunlight, and the massive atmosphere cools slowly towards the new equilibrium. Revenue comes
from products, carbon, nitrogen and acid. docs/simulation.md gives the formulas.
"""

from __future__ import annotations

from domain.prng import SplitMix64
from domain.values import Pattern
from domain.world import Hazard, Milestone, PatternModel, Project, YearOutcome, to_cents

CARBON_PER_CO2 = 12.011 / 44.009  # kg carbon per kg CO2 split
MAX_PROCESSED_SHARE = 0.01  # never process more than 1 % of a gas in a year
SO2_PER_CO2 = 0.002  # SO2 scrubbed per kg CO2 processed (processors sit in the sulfur-rich clouds)
PRICE_PRODUCT = 0.50  # cents per kg of carbon products (composites, graphene, structures)
PRICE_CARBON = 0.02  # cents per kg of raw carbon
PRICE_N2 = 0.05  # cents per kg of nitrogen shipped (wanted by Mars)
PRICE_ACID = 0.10  # cents per kg of SO2 turned into sulfuric acid


class VenusIndustrial(PatternModel):
    pattern = Pattern.VENUS_INDUSTRIAL
    base_annual_cents = 15_000_000_000  # 150 million GCC a year
    project_names = ("aerostat_industry", "atmosphere_processors", "gas_extraction", "sunshade")
    goals = ("first_revenue", "self_funding", "break_even", "cooling_10k", "cooling_50k")
    hazard = Hazard("acid_storm", "a sulfuric-acid storm corroded floating equipment", 0.02)

    def projects(self) -> list[Project]:
        return [
            Project(
                "aerostat_industry", 0.25, unit_cost_cents=1.0, upkeep_rate=0.05, depreciation=0.03
            ),
            Project(
                "atmosphere_processors",
                0.35,
                unit_cost_cents=0.5,
                upkeep_rate=0.05,
                depreciation=0.03,
            ),
            Project(
                "gas_extraction", 0.15, unit_cost_cents=0.5, upkeep_rate=0.05, depreciation=0.03
            ),
            Project(
                "sunshade",
                0.25,
                unit_cost_cents=8e11,
                upkeep_rate=0.02,
                depreciation=0.01,
                max_capacity=0.5,
            ),
        ]

    def apply(self, projects: dict[str, Project], rng: SplitMix64) -> YearOutcome:
        world = self.world
        atmosphere = world.atmosphere
        kpa_per_kg = world.kpa_per_kg
        co2_kg = atmosphere.columns.get("CO2", 0.0) / kpa_per_kg
        processed = min(projects["atmosphere_processors"].output, co2_kg * MAX_PROCESSED_SHARE)
        carbon = processed * CARBON_PER_CO2
        so2_kg = atmosphere.columns.get("SO2", 0.0) / kpa_per_kg
        acid = min(processed * SO2_PER_CO2, so2_kg * MAX_PROCESSED_SHARE)
        n2_kg = atmosphere.columns.get("N2", 0.0) / kpa_per_kg
        nitrogen = min(projects["gas_extraction"].output, n2_kg * MAX_PROCESSED_SHARE)
        atmosphere.add("CO2", -processed * kpa_per_kg)
        atmosphere.add("O2", (processed - carbon) * kpa_per_kg)
        atmosphere.add("SO2", -acid * kpa_per_kg)
        atmosphere.add("N2", -nitrogen * kpa_per_kg)
        products = min(projects["aerostat_industry"].output, carbon)
        world.solar_factor = 1.0 - projects["sunshade"].output
        world.relax_temperature()
        revenue = (
            products * PRICE_PRODUCT
            + (carbon - products) * PRICE_CARBON
            + nitrogen * PRICE_N2
            + acid * PRICE_ACID
        )
        return YearOutcome(
            revenue_cents=to_cents(revenue, "economic.revenue_cents"),
            consumption={
                "co2_processed_kg": processed,
                "n2_extracted_kg": nitrogen,
                "so2_scrubbed_kg": acid,
            },
        )

    def milestones(self) -> list[Milestone]:
        return [self._cooling(10.0), self._cooling(50.0)]

    def _cooling(self, drop_k: float) -> Milestone:
        world = self.world
        start_t = world.start_temperature_k
        return Milestone(
            f"cooling_{drop_k:g}k",
            f"mean surface temperature fell {drop_k:g} K below its start ({start_t:g} K)",
            lambda: world.temperature_k <= start_t - drop_k,
            lambda: {"temperature_k": world.temperature_k, "start_temperature_k": start_t},
        )
