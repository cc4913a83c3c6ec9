"""The built-in catalog of reference bodies a twin can be cloned from.

Values are rounded public figures (NASA planetary fact sheets; Huygens for Titan, Galileo for
Europa; the other sources are named per body). docs/catalog.md lists them with their sources.
"""

from __future__ import annotations

import msgspec

from domain.values import Atmosphere, Biosphere, BodyState, Geosphere, Hydrosphere, SimulationType


class ReferenceBody(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    name: str
    description: str
    solar_system: str
    simulation_type: SimulationType
    state: BodyState
    sources: tuple[str, ...]


NASA_FACT_SHEET = "NASA NSSDCA Planetary Fact Sheet (nssdc.gsfc.nasa.gov/planetary/factsheet)"

_BODIES = (
    ReferenceBody(
        key="mars",
        name="Mars",
        description="Cold, thin CO2 atmosphere; water locked in polar layered deposits.",
        solar_system="Sol",
        simulation_type=SimulationType.TERRAFORMING,
        state=BodyState(
            atmosphere=Atmosphere(
                surface_pressure_kpa=0.636,
                mean_temperature_k=210.0,
                composition_pct={"CO2": 95.1, "N2": 2.59, "Ar": 1.94, "O2": 0.16, "CO": 0.06},
            ),
            hydrosphere=Hydrosphere(water_ice_kg=4.6e18, liquid_water_kg=0.0),
            geosphere=Geosphere(
                mass_kg=6.417e23,
                mean_radius_km=3389.5,
                surface_gravity_m_s2=3.71,
                bond_albedo=0.25,
                solar_flux_w_m2=586.0,
                regolith_co2_kg=1.2e17,
            ),
            biosphere=Biosphere(),
        ),
        sources=(
            NASA_FACT_SHEET,
            "Polar layered deposits ~5e6 km3 of ice: Plaut et al. 2007, Science 316",
            "CO2 in caps and regolith, ~3 kPa equivalent at most: Jakosky & Edwards 2018, "
            "Nature Astronomy 2",
        ),
    ),
    ReferenceBody(
        key="venus",
        name="Venus",
        description="Crushing, hot CO2 atmosphere under sulfuric-acid clouds.",
        solar_system="Sol",
        simulation_type=SimulationType.INDUSTRIAL,
        state=BodyState(
            atmosphere=Atmosphere(
                surface_pressure_kpa=9200.0,
                mean_temperature_k=737.0,
                composition_pct={"CO2": 96.5, "N2": 3.5, "SO2": 0.015},
            ),
            hydrosphere=Hydrosphere(water_ice_kg=0.0, liquid_water_kg=0.0),
            geosphere=Geosphere(
                mass_kg=4.867e24,
                mean_radius_km=6051.8,
                surface_gravity_m_s2=8.87,
                bond_albedo=0.77,
                solar_flux_w_m2=2601.0,
            ),
            biosphere=Biosphere(),
        ),
        sources=(NASA_FACT_SHEET,),
    ),
    ReferenceBody(
        key="earth",
        name="Earth",
        description="The reference for habitability.",
        solar_system="Sol",
        simulation_type=SimulationType.CUSTOM,
        state=BodyState(
            atmosphere=Atmosphere(
                surface_pressure_kpa=101.3,
                mean_temperature_k=288.0,
                composition_pct={"N2": 78.08, "O2": 20.95, "Ar": 0.93, "CO2": 0.042},
            ),
            hydrosphere=Hydrosphere(
                water_ice_kg=2.4e19, liquid_water_kg=1.39e21, liquid_coverage_pct=71.0
            ),
            geosphere=Geosphere(
                mass_kg=5.972e24,
                mean_radius_km=6371.0,
                surface_gravity_m_s2=9.80,
                bond_albedo=0.306,
                solar_flux_w_m2=1361.0,
            ),
            biosphere=Biosphere(biomass_kg=1.1e15, coverage_pct=29.0),
        ),
        sources=(
            NASA_FACT_SHEET,
            "Biomass ~550 Gt C: Bar-On, Phillips & Milo 2018, PNAS 115",
        ),
    ),
    ReferenceBody(
        key="moon",
        name="Moon",
        description="Airless; water ice only in polar cold traps.",
        solar_system="Sol",
        simulation_type=SimulationType.INDUSTRIAL,
        state=BodyState(
            atmosphere=Atmosphere(
                surface_pressure_kpa=3e-13,
                mean_temperature_k=250.0,
                composition_pct={"Ar": 40.0, "He": 40.0, "Ne": 20.0},
            ),
            hydrosphere=Hydrosphere(water_ice_kg=6.0e11, liquid_water_kg=0.0),
            geosphere=Geosphere(
                mass_kg=7.346e22,
                mean_radius_km=1737.4,
                surface_gravity_m_s2=1.62,
                bond_albedo=0.11,
                solar_flux_w_m2=1361.0,
            ),
            biosphere=Biosphere(),
        ),
        sources=(
            NASA_FACT_SHEET,
            "Polar ice ~6e11 kg (north pole): Spudis et al. 2013, JGR Planets 118 (Mini-SAR)",
        ),
    ),
    ReferenceBody(
        key="titan",
        name="Titan",
        description="Thick nitrogen atmosphere; methane and ethane lakes on a water-ice crust.",
        solar_system="Sol",
        simulation_type=SimulationType.FUEL,
        state=BodyState(
            atmosphere=Atmosphere(
                surface_pressure_kpa=146.7,
                mean_temperature_k=93.7,
                composition_pct={"N2": 94.2, "CH4": 5.7, "H2": 0.1},
            ),
            hydrosphere=Hydrosphere(
                water_ice_kg=0.0,
                liquid_water_kg=0.0,
                other_liquids_kg=3.2e16,
                liquid_coverage_pct=1.1,
            ),
            geosphere=Geosphere(
                mass_kg=1.345e23,
                mean_radius_km=2574.7,
                surface_gravity_m_s2=1.352,
                bond_albedo=0.27,
                solar_flux_w_m2=15.0,
            ),
            biosphere=Biosphere(),
        ),
        sources=(
            NASA_FACT_SHEET,
            "Surface pressure, temperature and near-surface CH4: Huygens (Fulchignoni et al. "
            "2005; Niemann et al. 2005, Nature 438)",
            "Lakes ~7e4 km3 of hydrocarbons at ~450 kg/m3: Lorenz et al. 2008, GRL 35",
        ),
    ),
    ReferenceBody(
        key="europa",
        name="Europa",
        description="An ice shell over a global salty ocean; tenuous oxygen exosphere.",
        solar_system="Sol",
        simulation_type=SimulationType.OCEAN,
        state=BodyState(
            atmosphere=Atmosphere(
                surface_pressure_kpa=1e-10,
                mean_temperature_k=102.0,
                composition_pct={"O2": 100.0},
            ),
            hydrosphere=Hydrosphere(water_ice_kg=5.6e20, liquid_water_kg=3.5e21),
            geosphere=Geosphere(
                mass_kg=4.800e22,
                mean_radius_km=1560.8,
                surface_gravity_m_s2=1.314,
                bond_albedo=0.68,
                solar_flux_w_m2=50.0,
            ),
            biosphere=Biosphere(),
        ),
        sources=(
            NASA_FACT_SHEET,
            "Ice shell ~15-25 km over an ocean of ~2-3x Earth's ocean water: Galileo "
            "(Kivelson et al. 2000, Science 289; Schubert et al. 2004)",
        ),
    ),
)

CATALOG: dict[str, ReferenceBody] = {body.key: body for body in _BODIES}


def find_body(key: str) -> ReferenceBody | None:
    return CATALOG.get(key.strip().lower())
