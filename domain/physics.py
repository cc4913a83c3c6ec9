"""Shared physics of the simplified model: atmosphere, temperature, water, habitability.

Determinism rules (docs/simulation.md): floats are combined with + - * / and math.sqrt only,
which IEEE 754 rounds exactly, so every machine gets the same bits; no exp, log, pow or
trigonometry (their results differ between C math libraries), no built-in ``sum`` of floats
(its algorithm changed in Python 3.12: sums of collections use ``total``, math.fsum), and every
dict is walked in sorted key order.
Curves that would need exp or log (vapour pressure) are tables with linear interpolation.
"""

from __future__ import annotations

import itertools
import math

SIGMA = 5.670374419e-8  # Stefan-Boltzmann constant, W m^-2 K^-4 (CODATA 2018)
PI = 3.141592653589793
ARMSTRONG_LIMIT_KPA = 6.3  # water boils at body temperature below this
TRIPLE_POINT_KPA = 0.611657  # water's triple point pressure
TRIPLE_POINT_K = 273.16
BREATHABLE_O2_KPA = 16.0  # lower end of the breathable O2 partial pressure range
CMB_K = 2.7  # nothing cools below the cosmic background
DEFAULT_MOLAR_MASS = 29.0  # g/mol, for gases the table does not know (about air's)

# Molar masses, g/mol. PFC stands for the designed fluorine greenhouse gases (as C3F8).
MOLAR_MASS: dict[str, float] = {
    "Ar": 39.948,
    "C2H6": 30.07,
    "CH4": 16.043,
    "CO": 28.010,
    "CO2": 44.009,
    "H2": 2.016,
    "H2O": 18.015,
    "He": 4.0026,
    "Kr": 83.798,
    "N2": 28.014,
    "NH3": 17.031,
    "Ne": 20.180,
    "O2": 31.998,
    "O3": 47.997,
    "PFC": 188.02,
    "SO2": 64.066,
    "Xe": 131.29,
}

# Grey-atmosphere optical depth per kPa of partial pressure (linear, weak absorbers) and per
# sqrt(kPa) (strong absorbers, whose bands saturate: the square-root regime). Tuned so that
# Venus's 8,900 kPa of CO2 gives its 737 K, Mars's CO2 a few kelvin, Earth's water vapour most
# of its 33 K, and a few pascals of PFC tens of kelvin (docs/simulation.md).
OPACITY_LINEAR: dict[str, float] = {
    "CH4": 0.05,
    "CO2": 0.0155,
    "NH3": 0.5,
    "SO2": 0.1,
}
OPACITY_SQRT: dict[str, float] = {"CO2": 0.12, "H2O": 0.87, "PFC": 18.0}

# Saturation vapour pressure of water, kPa: over ice below 273.16 K (Murphy & Koop 2005,
# QJRMS 131), over liquid above (Wagner & Pruss 2002, IAPWS-95), rounded.
_VAPOUR_TABLE: tuple[tuple[float, float], ...] = (
    (170.0, 0.0),
    (180.0, 0.0000054),
    (190.0, 0.0000323),
    (200.0, 0.000162),
    (210.0, 0.000701),
    (220.0, 0.00265),
    (230.0, 0.00897),
    (240.0, 0.0273),
    (250.0, 0.0760),
    (260.0, 0.1958),
    (270.0, 0.470),
    (273.16, 0.6117),
    (280.0, 0.9918),
    (290.0, 1.920),
    (300.0, 3.537),
    (310.0, 6.231),
    (320.0, 10.55),
    (330.0, 17.21),
    (340.0, 27.19),
    (350.0, 41.68),
    (360.0, 62.19),
    (373.15, 101.325),
)


def clamp(value: float, low: float, high: float) -> float:
    return low if value < low else high if value > high else value


def interpolate(table: tuple[tuple[float, float], ...], x: float) -> float:
    """Piecewise-linear interpolation in a table of (x, y) with increasing x; flat outside."""
    if x <= table[0][0]:
        return table[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(table):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return table[-1][1]


def vapour_pressure_kpa(temperature_k: float) -> float:
    return interpolate(_VAPOUR_TABLE, temperature_k)


def fourth_root(x: float) -> float:
    return math.sqrt(math.sqrt(x)) if x > 0.0 else 0.0


def radiative_temperature_k(flux_w_m2: float, albedo: float, optical_depth: float) -> float:
    """Grey-atmosphere surface temperature: T^4 = S (1 - A) / (4 sigma) * (1 + 3/4 tau)."""
    absorbed = flux_w_m2 * (1.0 - albedo) / (4.0 * SIGMA)
    return fourth_root(absorbed * (1.0 + 0.75 * optical_depth))


def total(values: list[float]) -> float:
    """The correctly rounded sum (math.fsum): the same on every Python version and in any
    order (the built-in ``sum`` of floats changed in Python 3.12).

    Where fsum gives up (an intermediate overflow, or inf + -inf) the plain left-to-right sum
    is returned instead: inf or NaN, which the engine reports as a divergence by name.
    """
    try:
        return math.fsum(values)
    except (OverflowError, ValueError):
        result = 0.0
        for value in values:
            result += value
        return result


def quantize(value: float, digits: int = 6) -> float:
    """Round to ``digits`` significant digits for publishing.

    CPython formats floats with its own correctly rounded algorithm (dtoa.c), not the C
    library's, so this is the same everywhere. ``+ 0.0`` turns -0.0 into 0.0.
    """
    return float(format(value, _SIGNIFICANT[digits])) + 0.0


_SIGNIFICANT = tuple(f".{digits}g" for digits in range(18))  # the format specs, made once


class Atmosphere:
    """Gases as the weight of their column, in kPa: adding a mass m adds m g / area."""

    def __init__(self, pressure_kpa: float, composition_pct: dict[str, float]) -> None:
        named = {gas: max(0.0, pct) for gas, pct in sorted(composition_pct.items())}
        named_pct = total(list(named.values()))
        rest_pct = max(0.0, 100.0 - named_pct)
        weights = {gas: pct * molar_mass(gas) for gas, pct in named.items()}
        rest_weight = rest_pct * DEFAULT_MOLAR_MASS
        scale_total = total([*weights.values(), rest_weight])
        scale = pressure_kpa / scale_total if scale_total > 0.0 else 0.0
        self.columns: dict[str, float] = {gas: w * scale for gas, w in weights.items()}
        self.rest_kpa = rest_weight * scale  # the unnamed remainder of the composition
        self._held: tuple[float, tuple[dict[str, float], float]] | None = None

    def hold(self) -> None:
        """Nothing changes the gases until ``release()``: the total pressure and the moles are
        computed once here and returned by every read until then (the engine's milestones and
        published environment read them about ten times a year). The same values, computed
        the same way: only fewer times."""
        self._held = None
        self._held = (self.pressure_kpa(), self._moles())

    def release(self) -> None:
        self._held = None

    def pressure_kpa(self) -> float:
        if self._held is not None:
            return self._held[0]
        columns = self.columns  # (the same list and sum as a generator, without its frames)
        return total([*map(columns.__getitem__, sorted(columns)), self.rest_kpa])

    def _moles(self) -> tuple[dict[str, float], float]:
        if self._held is not None:
            return self._held[1]
        columns, mass = self.columns, MOLAR_MASS.get
        moles = {gas: columns[gas] / mass(gas, DEFAULT_MOLAR_MASS) for gas in sorted(columns)}
        return moles, total([*moles.values(), self.rest_kpa / DEFAULT_MOLAR_MASS])

    def composition_pct(self) -> dict[str, float]:
        """Share of each named gas by volume (mole fraction), %."""
        moles, all_moles = self._moles()
        if all_moles <= 0.0:
            return {gas: 0.0 for gas in moles}
        return {gas: 100.0 * n / all_moles for gas, n in moles.items()}

    def partial_kpa(self, gas: str) -> float:
        moles, all_moles = self._moles()
        if all_moles <= 0.0 or gas not in moles:
            return 0.0
        return moles[gas] / all_moles * self.pressure_kpa()

    def add(self, gas: str, kpa: float) -> float:
        """Add (or remove, if negative) column weight; returns what was actually changed."""
        if self._held is not None:
            raise RuntimeError("the atmosphere is held (read-only) until release()")
        current = self.columns.get(gas, 0.0)
        changed = max(kpa, -current)
        if gas in self.columns or changed > 0.0:
            self.columns[gas] = current + changed
        return changed

    def scale_all(self, factor: float) -> None:
        if self._held is not None:
            raise RuntimeError("the atmosphere is held (read-only) until release()")
        factor = max(0.0, factor)
        for gas in sorted(self.columns):
            self.columns[gas] *= factor
        self.rest_kpa *= factor

    def rescale(self, from_kpa: float, to_kpa: float) -> None:
        """Every gas scaled by ``to_kpa / from_kpa`` (``from_kpa`` > 0, the current total):
        the same shares at a new total pressure.

        The factor overflows to inf when a large change meets a nearly empty atmosphere (1000
        kPa added to 1e-306 kPa), and inf times a column is inf, or NaN for an absent gas; then
        each column's share of ``from_kpa`` (at most 1) is scaled instead. Where the factor is
        finite this is ``scale_all(factor)``, bit for bit.
        """
        factor = to_kpa / from_kpa
        if math.isfinite(factor) or factor < 0.0:  # (-inf: a removal beyond all, as before)
            self.scale_all(factor)
            return
        for gas in sorted(self.columns):
            self.columns[gas] = self.columns[gas] / from_kpa * to_kpa
        self.rest_kpa = self.rest_kpa / from_kpa * to_kpa

    def optical_depth(self) -> float:
        moles, all_moles = self._moles()
        if all_moles <= 0.0:
            return 0.0
        pressure = self.pressure_kpa()
        depth = 0.0
        for gas in sorted(moles):
            partial = moles[gas] / all_moles * pressure
            depth += OPACITY_LINEAR.get(gas, 0.0) * partial
            depth += OPACITY_SQRT.get(gas, 0.0) * math.sqrt(partial)
        return depth


def molar_mass(gas: str) -> float:
    return MOLAR_MASS.get(gas, DEFAULT_MOLAR_MASS)


def surface_area_m2(radius_km: float) -> float:
    radius_m = radius_km * 1000.0
    return 4.0 * PI * radius_m * radius_m


def kpa_per_kg(gravity_m_s2: float, radius_km: float) -> float:
    """Surface pressure added by one kilogram of gas: g / area, in kPa."""
    area = surface_area_m2(radius_km)
    return gravity_m_s2 / area / 1000.0 if area > 0.0 else 0.0


# --- habitability ---------------------------------------------------------------------------

_TEMPERATURE_SCORE = ((200.0, 0.0), (273.15, 1.0), (303.15, 1.0), (373.15, 0.0))
_PRESSURE_SCORE = ((0.0, 0.0), (ARMSTRONG_LIMIT_KPA, 0.4), (50.0, 1.0), (200.0, 1.0), (1000.0, 0.0))
_OXYGEN_SCORE = ((0.0, 0.0), (BREATHABLE_O2_KPA, 1.0), (50.0, 1.0), (100.0, 0.0))
HABITABILITY_WEIGHTS = {
    "biomass": 0.15,
    "oxygen": 0.15,
    "pressure": 0.25,
    "temperature": 0.30,
    "water": 0.15,
}


def habitability(
    temperature_k: float,
    pressure_kpa: float,
    o2_kpa: float,
    liquid_water_kg: float,
    biomass_kg: float,
    area_m2: float,
) -> float:
    """A score in [0, 1]: a weighted mean of five factors, each piecewise linear in [0, 1].

    Water: 1 with a global layer of liquid of 1 m (1,000 kg/m2); biomass: 1 at 1 kg/m2.
    """
    water_per_m2 = liquid_water_kg / area_m2 if area_m2 > 0.0 else 0.0
    biomass_per_m2 = biomass_kg / area_m2 if area_m2 > 0.0 else 0.0
    factors = {
        "biomass": clamp(biomass_per_m2, 0.0, 1.0),
        "oxygen": interpolate(_OXYGEN_SCORE, o2_kpa),
        "pressure": interpolate(_PRESSURE_SCORE, pressure_kpa),
        "temperature": interpolate(_TEMPERATURE_SCORE, temperature_k),
        "water": clamp(water_per_m2 / 1000.0, 0.0, 1.0),
    }
    score = 0.0
    for name in sorted(factors):
        score += HABITABILITY_WEIGHTS[name] * factors[name]
    return clamp(score, 0.0, 1.0)
