"""Validation of what-if inputs (pydantic): scheduled interventions and fork changes.

``YEAR:KEY=VALUE`` texts (the CLI's ``--intervene``) or objects ``{year, key, value}`` (the
HTTP API) become domain Interventions; the rules that depend on the run (its duration, its
pattern's parameters and hazards) are the domain's (domain/engine.py check_interventions),
called from here so that every entry point refuses the same inputs with the same field names.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator

from domain.engine import check_fork, check_interventions
from domain.errors import ValidationError
from domain.interventions import (
    ADD,
    BUDGET_KEY,
    HAZARD_KEY,
    PARAM_PREFIX,
    SET,
    ForkPoint,
    Intervention,
    RunChanges,
)
from domain.values import MAX_SEED, MAX_YEARS, Pattern, Priority
from infrastructure.inputs import Cents, validate

MAX_INTERVENTIONS = 1000
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_KEY = re.compile(r"^(budget_cents|hazard|param\.[a-z][a-z0-9_]{0,63})$")
_PARAM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_CENTS = re.compile(r"^([+-]?)(\d[\d_]*)$")


class InterventionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    year: Annotated[StrictInt, Field(ge=1, le=MAX_YEARS)]
    key: Annotated[str, Field(max_length=80)]
    value: (
        StrictInt
        | Annotated[StrictFloat, Field(allow_inf_nan=False)]
        | Annotated[str, Field(min_length=1, max_length=80)]
    )
    mode: Annotated[str, Field(pattern=r"^(add|set)$")] = SET

    @field_validator("key")
    @classmethod
    def _known_shape(cls, value: str) -> str:
        if _CONTROL.search(value):
            raise ValueError("must not contain control characters")
        if not _KEY.match(value):
            raise ValueError(
                f"unknown key {value!r}; known: {BUDGET_KEY}, {HAZARD_KEY}, {PARAM_PREFIX}NAME"
            )
        return value

    @field_validator("value")
    @classmethod
    def _plain_text(cls, value: int | float | str) -> int | float | str:
        if isinstance(value, str) and _CONTROL.search(value):
            raise ValueError("must not contain control characters")
        return value

    def intervention(self) -> Intervention:
        value = self.value
        numeric = self.key.startswith(PARAM_PREFIX) and self.key not in _NOT_FLOAT
        if numeric and type(value) is int:
            value = float(value)  # pattern parameters are floats, as in RunParameters
        return Intervention(year=self.year, key=self.key, value=value, mode=self.mode)


_NOT_FLOAT = (f"{PARAM_PREFIX}tech_level", f"{PARAM_PREFIX}priority")


def _typed_value(key: str, text: str, field: str) -> tuple[int | float | str, str]:
    """The value of ``KEY=VALUE`` as the key wants it, and the mode (budget: add or set)."""
    if key == BUDGET_KEY:
        match = _CENTS.match(text.strip())
        if match is None:
            raise ValidationError(
                field, f"{text!r} must be integer cents: +N or -N (change) or N (new balance)"
            )
        sign, digits = match.groups()
        cents = int(digits.replace("_", ""))
        return (-cents if sign == "-" else cents), (ADD if sign else SET)
    if key in (HAZARD_KEY, f"{PARAM_PREFIX}priority"):
        return text.strip(), SET
    if key == f"{PARAM_PREFIX}tech_level":
        if not re.fullmatch(r"\d{1,3}", text.strip()):
            raise ValidationError(field, f"{text!r} is not an integer tech level 1 to 10")
        return int(text), SET
    try:
        number = float(text)
    except ValueError:
        raise ValidationError(field, f"{text[:80]!r} is not a number") from None
    if not math.isfinite(number):
        raise ValidationError(field, f"{text[:80]!r} is not a finite number")
    return number, SET


def parse_intervention(text: str, index: int) -> dict[str, Any]:
    """``YEAR:KEY=VALUE`` as the fields of InterventionIn; errors name ``interventions[i]``."""
    where = f"interventions[{index}]"
    if _CONTROL.search(text):
        raise ValidationError(where, "must not contain control characters")
    year_text, colon, rest = text.partition(":")
    key, equals, value = rest.partition("=")
    if not colon or not equals:
        raise ValidationError(where, f"{text[:80]!r} is not YEAR:KEY=VALUE")
    if not re.fullmatch(r"\s*\d{1,4}\s*", year_text):
        raise ValidationError(f"{where}.year", f"{year_text[:20]!r} is not a year")
    key = key.strip()
    if not _KEY.match(key):
        raise ValidationError(
            f"{where}.key",
            f"unknown key {key[:80]!r}; known: {BUDGET_KEY}, {HAZARD_KEY}, {PARAM_PREFIX}NAME",
        )
    typed, mode = _typed_value(key, value, f"{where}.value")
    return {"year": int(year_text), "key": key, "value": typed, "mode": mode}


def validate_interventions(
    items: list[str] | list[dict[str, Any]] | list[str | dict[str, Any]],
    *,
    pattern: Pattern,
    duration_years: int,
    after_year: int = 0,
) -> list[Intervention]:
    """Validate interventions (texts or objects) for a run of ``pattern`` and duration; raise
    ValidationError naming the first bad one (``interventions[i].year|key|value``)."""
    if len(items) > MAX_INTERVENTIONS:
        raise ValidationError("interventions", f"at most {MAX_INTERVENTIONS} interventions")
    found: list[Intervention] = []
    for index, item in enumerate(items):
        data = parse_intervention(item, index) if isinstance(item, str) else item
        if not isinstance(data, dict):
            raise ValidationError(f"interventions[{index}]", "must be YEAR:KEY=VALUE or an object")
        try:
            model = InterventionIn.model_validate(data)
        except pydantic.ValidationError as error:
            first = error.errors()[0]
            loc = ".".join(str(part) for part in first["loc"][:1])
            field = f"interventions[{index}]" + (f".{loc}" if loc else "")
            raise ValidationError(field, first["msg"]) from None
        found.append(model.intervention())
    for index, intervention in enumerate(found):
        try:
            check_interventions(pattern, duration_years, [intervention], after_year=after_year)
        except ValidationError as error:
            field = error.field.replace("interventions[0]", f"interventions[{index}]", 1)
            raise ValidationError(field, error.message) from None
    return found


class ForkIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at_year: Annotated[StrictInt, Field(ge=1, le=MAX_YEARS)]
    budget_cents: Cents | None = None
    tech_level: Annotated[StrictInt, Field(ge=1, le=10)] | None = None
    priority: Priority | None = None
    pattern_params: dict[str, Annotated[StrictFloat, Field(allow_inf_nan=False)]] = {}
    seed: Annotated[StrictInt, Field(ge=0, le=MAX_SEED)] | None = None

    @field_validator("pattern_params")
    @classmethod
    def _names(cls, value: dict[str, float]) -> dict[str, float]:
        for name in value:
            if not _PARAM_NAME.match(name):
                raise ValueError(f"{name[:80]!r} is not a parameter name")
        return value


def validate_fork(
    data: dict[str, Any],
    interventions: list[str] | list[dict[str, Any]] | list[str | dict[str, Any]],
    *,
    parent_run_id: Any,
    pattern: Pattern,
    duration_years: int,
) -> ForkPoint:
    """A fork point of a parent run of ``pattern`` and duration, validated; nothing changed
    at all is refused (field ``changes``)."""
    request = validate(ForkIn, data)
    check_fork(
        pattern,
        duration_years,
        ForkPoint(parent_run_id=parent_run_id, at_year=request.at_year, changes=RunChanges()),
    )
    changes = RunChanges(
        budget_cents=request.budget_cents,
        tech_level=request.tech_level,
        priority=request.priority,
        pattern_params={k: float(v) for k, v in sorted(request.pattern_params.items())},
        seed=request.seed,
        interventions=validate_interventions(
            interventions,
            pattern=pattern,
            duration_years=duration_years,
            after_year=request.at_year,
        ),
    )
    if changes == RunChanges():
        raise ValidationError(
            "changes",
            "a fork needs at least one change (--param, --budget, --seed, --tech-level, "
            "--priority or --intervene)",
        )
    fork = ForkPoint(parent_run_id=parent_run_id, at_year=request.at_year, changes=changes)
    check_fork(pattern, duration_years, fork)
    return fork
