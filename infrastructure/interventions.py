"""Validation of what-if inputs (pydantic): scheduled interventions and fork changes.

``YEAR:KEY=VALUE`` texts (the CLI's ``--intervene``) or objects ``{year, key, value}`` (the
HTTP API) become domain Interventions; the rules that depend on the run (its duration, its
pattern's parameters and hazards) are the domain's (domain/engine.py check_interventions),
called from here so that every entry point refuses the same inputs with the same field names.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, StrictFloat, StrictInt, field_validator

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
from infrastructure.inputs import (
    _CONTROL,
    Cents,
    InputModel,
    _shown,
    parse_int,
    parse_number,
    validate,
)

MAX_INTERVENTIONS = 1000
_KEY = re.compile(r"^(budget_cents|hazard|param\.[a-z][a-z0-9_]{0,63})$")
_PARAM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_CENTS = re.compile(r"([+-]?)([0-9]{1,30})")


class InterventionIn(InputModel):
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
        match = _CENTS.fullmatch(text.strip())
        if match is None:
            raise ValidationError(
                field,
                f"{_shown(text)} must be integer cents in ASCII digits: +N or -N (a change) "
                "or N (the new balance)",
            )
        sign, digits = match.groups()
        cents = int(digits)
        return (-cents if sign == "-" else cents), (ADD if sign else SET)
    if key in (HAZARD_KEY, f"{PARAM_PREFIX}priority"):
        return text.strip(), SET
    if key == f"{PARAM_PREFIX}tech_level":
        return parse_int(text.strip(), field), SET
    return parse_number(text.strip(), field), SET


def parse_intervention(text: str, index: int) -> dict[str, Any]:
    """``YEAR:KEY=VALUE`` as the fields of InterventionIn; errors name ``interventions[i]``."""
    where = f"interventions[{index}]"
    if _CONTROL.search(text):
        raise ValidationError(where, "must not contain control characters")
    year_text, colon, rest = text.partition(":")
    key, equals, value = rest.partition("=")
    if not colon or not equals:
        raise ValidationError(where, f"{_shown(text)} is not YEAR:KEY=VALUE")
    if not re.fullmatch(r" *[0-9]{1,4} *", year_text):
        raise ValidationError(f"{where}.year", f"{_shown(year_text)} is not a year")
    key = key.strip()
    if not _KEY.match(key):
        raise ValidationError(
            f"{where}.key",
            f"unknown key {_shown(key)}; known: {BUDGET_KEY}, {HAZARD_KEY}, {PARAM_PREFIX}NAME",
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
        where = f"interventions[{index}]"
        try:
            model = validate(InterventionIn, data, root=where)
        except ValidationError as error:
            field = error.field if error.field == where else f"{where}.{error.field}"
            raise ValidationError(field, error.message) from None
        found.append(model.intervention())
    for index, intervention in enumerate(found):
        try:
            check_interventions(pattern, duration_years, [intervention], after_year=after_year)
        except ValidationError as error:
            field = error.field.replace("interventions[0]", f"interventions[{index}]", 1)
            raise ValidationError(field, error.message) from None
    return found


class ForkIn(InputModel):
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
                raise ValueError(f"{_shown(name)} is not a parameter name")
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
