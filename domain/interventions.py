"""What-if inputs of a run: scheduled interventions, scheduled hazards and fork points.

All of them are part of a run's recorded inputs (RunQueued) and take effect at the start of a
year, before that year's random hazard draw, in a fixed order: the fork points of the run's
lineage (oldest first), then its interventions in the order recorded. None of them draws from
the PRNG, so they move nothing else in the stream of chance; only a fork with a new seed
replaces the stream (docs/simulation.md, "Forks and interventions").
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import msgspec

from domain.values import Pattern, Priority

BUDGET_KEY = "budget_cents"
HAZARD_KEY = "hazard"
PARAM_PREFIX = "param."
ADD = "add"
SET = "set"
INTERVENTION_EVENT = "intervention"
FORK_EVENT = "forked"


class Intervention(msgspec.Struct, frozen=True, kw_only=True):
    """A change at the start of ``year``.

    ``key`` is ``budget_cents`` (``value`` integer cents: with ``mode`` ``add`` a signed change
    of the balance, with ``set`` the new balance), ``hazard`` (``value`` a name of HAZARDS) or
    ``param.NAME`` (``tech_level`` an int, ``priority`` a text, a pattern parameter a float).
    """

    year: int
    key: str
    value: int | float | str
    mode: str = SET

    def text(self) -> str:
        """The canonical ``YEAR:KEY=VALUE`` form, as given on the command line."""
        value = self.value
        sign = "+" if self.mode == ADD and isinstance(value, int) and value >= 0 else ""
        return f"{self.year}:{self.key}={sign}{value}"


class RunChanges(msgspec.Struct, frozen=True, kw_only=True):
    """What a fork changes, from the year after its fork point. ``None``: unchanged.

    ``budget_cents`` is the budget the fork has instead of its parent's: the balance moves by
    the difference (never below zero). ``seed`` starts a new SplitMix64 stream.
    """

    budget_cents: int | None = None
    tech_level: int | None = None
    priority: Priority | None = None
    pattern_params: dict[str, float] = msgspec.field(default_factory=dict)
    seed: int | None = None
    interventions: list[Intervention] = msgspec.field(default_factory=list)

    def describe(self) -> str:
        parts: list[str] = []
        if self.budget_cents is not None:
            parts.append(f"budget_cents={self.budget_cents}")
        if self.tech_level is not None:
            parts.append(f"tech_level={self.tech_level}")
        if self.priority is not None:
            parts.append(f"priority={self.priority}")
        parts.extend(f"param {k}={v!r}" for k, v in sorted(self.pattern_params.items()))
        if self.seed is not None:
            parts.append(f"seed={self.seed}")
        parts.extend(f"intervene {i.text()}" for i in self.interventions)
        return ", ".join(parts) or "no change"


class ForkPoint(msgspec.Struct, frozen=True, kw_only=True):
    """A fork of ``parent_run_id`` after year ``at_year``: years 1..at_year are the parent's,
    the changes apply from the start of year at_year + 1."""

    parent_run_id: UUID
    at_year: int
    changes: RunChanges


# --- scheduled hazards -------------------------------------------------------------------------

ORBITAL_PROJECTS = frozenset({"orbital_mirrors", "sunshade", "tanker_fleet"})
"""Projects in space (or in transit): spared by surface hazards, exposed to solar flares."""


@dataclass(frozen=True)
class HazardEffect:
    """What a scheduled hazard does on one pattern's world, at once, at the start of the year:
    shares of capacity lost (surface and orbital projects, applied when they operate that
    year), a change of the mean temperature (the model relaxes it back afterwards) and the
    share of biomass killed."""

    surface_damage: float
    orbital_damage: float
    temperature_change_k: float
    biomass_loss: float


@dataclass(frozen=True)
class ScheduledHazard:
    name: str
    description: str
    effects: dict[Pattern, HazardEffect]
    absent: str  # why it cannot happen on the patterns it has no effect for


HAZARDS: dict[str, ScheduledHazard] = {
    "dust_storm": ScheduledHazard(
        "dust_storm",
        "a global dust storm buried and abraded surface equipment and shaded the ground",
        {
            # Mars: planet-encircling storms (2001, 2018) cut sunlight at the ground by up to
            # 99 % for weeks and cool the surface by a few kelvin.
            Pattern.MARS_TERRAFORM: HazardEffect(0.20, 0.0, -3.0, 0.10),
            Pattern.CUSTOM: HazardEffect(0.20, 0.0, -3.0, 0.10),
            # Titan: equatorial dust storms seen by Cassini (Rodriguez et al. 2018); its thick,
            # cold air holds the temperature.
            Pattern.TITAN_FUEL: HazardEffect(0.10, 0.0, 0.0, 0.0),
        },
        "no dust storms there (Venus's surface winds are slow; Europa has no air)",
    ),
    "solar_flare": ScheduledHazard(
        "solar_flare",
        "a solar particle storm damaged electronics, worst in space and under thin air",
        {
            Pattern.MARS_TERRAFORM: HazardEffect(0.05, 0.20, 0.0, 0.05),
            Pattern.CUSTOM: HazardEffect(0.05, 0.20, 0.0, 0.05),
            # Venus's and Titan's thick atmospheres stop the particles before the ground.
            Pattern.VENUS_INDUSTRIAL: HazardEffect(0.0, 0.20, 0.0, 0.0),
            Pattern.TITAN_FUEL: HazardEffect(0.0, 0.20, 0.0, 0.0),
            # Europa: no air; Jupiter's magnetosphere adds to the dose.
            Pattern.EUROPA_OCEAN: HazardEffect(0.10, 0.20, 0.0, 0.05),
        },
        "",
    ),
    "asteroid_impact": ScheduledHazard(
        "asteroid_impact",
        "a kilometre-class asteroid struck: blast and ejecta wrecked surface equipment",
        {
            # Dust and aerosols in the air cool the surface (an impact winter) where there is air.
            Pattern.MARS_TERRAFORM: HazardEffect(0.30, 0.05, -5.0, 0.30),
            Pattern.CUSTOM: HazardEffect(0.30, 0.05, -5.0, 0.30),
            Pattern.TITAN_FUEL: HazardEffect(0.30, 0.05, -2.0, 0.30),
            Pattern.VENUS_INDUSTRIAL: HazardEffect(0.10, 0.05, 0.0, 0.0),  # aerostats float
            Pattern.EUROPA_OCEAN: HazardEffect(0.30, 0.05, 0.0, 0.30),
        },
        "",
    ),
}


def hazard_effect(name: str, pattern: Pattern) -> HazardEffect | None:
    """The effect of a scheduled hazard on a pattern; None if unknown or impossible there."""
    hazard = HAZARDS.get(name)
    return None if hazard is None else hazard.effects.get(pattern)


def all_interventions(
    interventions: list[Intervention], forks: list[ForkPoint]
) -> list[Intervention]:
    """A run's own interventions, then those its fork points added (oldest first)."""
    found = list(interventions)
    for fork in forks:
        found.extend(fork.changes.interventions)
    return found
