"""The five patterns: each a PatternModel (domain/world.py) with its projects and physics."""

from __future__ import annotations

from domain.patterns.custom import CustomPattern
from domain.patterns.europa import EuropaOcean
from domain.patterns.mars import MarsTerraform
from domain.patterns.titan import TitanFuel
from domain.patterns.venus import VenusIndustrial
from domain.values import Pattern
from domain.world import PatternModel

MODELS: dict[Pattern, type[PatternModel]] = {
    Pattern.MARS_TERRAFORM: MarsTerraform,
    Pattern.VENUS_INDUSTRIAL: VenusIndustrial,
    Pattern.TITAN_FUEL: TitanFuel,
    Pattern.EUROPA_OCEAN: EuropaOcean,
    Pattern.CUSTOM: CustomPattern,
}
