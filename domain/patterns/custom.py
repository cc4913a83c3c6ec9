"""custom: rates and costs from a user-supplied spec (CustomSpec, validated at queue time).

One program costs ``annual_cost_cents`` a year. Each year its effects are applied in
proportion to how much of that cost was paid (funding variance and the balance decide) and to
how well the equipment worked (an equipment failure loses 5-30 % of the year's effect):

- temperature changes by ``temperature_change_k``;
- total pressure by ``pressure_change_kpa`` (all gases in proportion);
- each gas in ``gas_change_pct`` by that percentage of the current total (removals stop at 0);
- liquid water by ``liquid_water_change_kg`` (never below 0);
- biomass grows logistically at ``biomass_growth_rate`` towards 2 kg/m2 of surface, from a
  one-tonne starter culture if there is none;
- revenue is ``annual_revenue_cents`` times the same fraction.

The spec's rates are taken as given: no greenhouse feedback is added on top of them, and
technology level only lowers the failure rate.
"""

from __future__ import annotations

from domain.errors import ValidationError
from domain.physics import CMB_K
from domain.prng import SplitMix64
from domain.values import CustomSpec, Pattern, RunParameters
from domain.world import Hazard, PatternModel, Project, World, YearOutcome, to_cents

STARTER_CULTURE_KG = 1000.0
CARRYING_KG_M2 = 2.0


class CustomPattern(PatternModel):
    pattern = Pattern.CUSTOM
    project_names = ("program",)
    goals = ("first_revenue", "break_even", "armstrong_limit", "liquid_water_stable")
    hazard = Hazard("impact", "an impact damaged the program's equipment", 0.01)

    def __init__(self, parameters: RunParameters, world: World) -> None:
        super().__init__(parameters, world)
        if parameters.custom_spec is None:
            raise ValidationError("custom_spec", "the custom pattern needs a spec")
        self.spec: CustomSpec = parameters.custom_spec

    @classmethod
    def parameter_ranges(cls) -> dict[str, tuple[float, float]]:
        return {}

    def tech_scaled(self) -> bool:
        return False

    def plan_cents(self) -> int:
        return self.spec.annual_cost_cents

    def projects(self) -> list[Project]:
        return [
            Project(
                "program",
                1.0,
                unit_cost_cents=float(self.spec.annual_cost_cents),
                upkeep_rate=0.0,
                depreciation=1.0,
                max_capacity=1.0,
            )
        ]

    def apply(self, projects: dict[str, Project], rng: SplitMix64) -> YearOutcome:
        spec = self.spec
        world = self.world
        atmosphere = world.atmosphere
        done = projects["program"].output  # in [0, 1]
        world.temperature_k = max(CMB_K, world.temperature_k + spec.temperature_change_k * done)
        pressure = atmosphere.pressure_kpa()
        change = spec.pressure_change_kpa * done
        if pressure > 0.0:
            atmosphere.rescale(pressure, pressure + change)
        elif change > 0.0:
            atmosphere.rest_kpa += change
        pressure = atmosphere.pressure_kpa()
        for gas in sorted(spec.gas_change_pct):
            atmosphere.add(gas, spec.gas_change_pct[gas] / 100.0 * pressure * done)
        water = spec.liquid_water_change_kg * done
        world.liquid_water_kg = max(0.0, world.liquid_water_kg + water)
        rate = spec.biomass_growth_rate * done
        if rate > 0.0 and world.area_m2 > 0.0:
            if world.biomass_kg <= 0.0:
                world.biomass_kg = STARTER_CULTURE_KG
            carrying = world.area_m2 * CARRYING_KG_M2
            if world.biomass_kg < carrying:
                grown = rate * world.biomass_kg * (1.0 - world.biomass_kg / carrying)
                world.biomass_kg = min(carrying, world.biomass_kg + grown)
        return YearOutcome(
            revenue_cents=to_cents(spec.annual_revenue_cents * done, "economic.revenue_cents"),
            consumption={"program_years": done},
        )
