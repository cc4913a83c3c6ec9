"""Validation of everything a user hands in (pydantic), before any event is made.

Each model turns user input into domain values or raises domain.errors.ValidationError naming
the first offending field. Money is StrictInt cents: a float, a bool or a string is refused.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import pydantic
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator

from domain.catalog import find_body
from domain.errors import ValidationError
from domain.values import (
    MAX_SEED,
    MAX_YEARS,
    MIN_YEARS,
    BodyState,
    CustomSpec,
    Pattern,
    Priority,
    RunParameters,
    SimulationType,
)

MAX_BODY_FILE_BYTES = 64 * 1024
MAX_TEXT = 200
MAX_DESCRIPTION = 2000
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

Cents = Annotated[StrictInt, Field(ge=0, le=2**62)]
Number = StrictFloat  # strict: accepts int and float, refuses strings and bools
Model = TypeVar("Model", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _text(value: str, limit: int, *, allow_newlines: bool = False) -> str:
    checked = value.replace("\n", "") if allow_newlines else value
    if _CONTROL.search(checked):
        raise ValueError("must not contain control characters")
    if len(value) > limit:
        raise ValueError(f"must be at most {limit} characters")
    return value


def _name(value: str) -> str:
    """A one-line name: no control characters, not blank, surrounding spaces dropped."""
    _text(value, MAX_TEXT)
    if not value.strip():
        raise ValueError("must not be blank")
    return value.strip()


def _finite(values: dict[str, Any]) -> dict[str, Any]:
    for key, number in values.items():
        if isinstance(number, float) and not math.isfinite(number):
            raise ValueError(f"{key} must be a finite number")
    return values


def validate(model: type[Model], data: dict[str, Any], *, root: str | None = None) -> Model:
    """Validate ``data`` into ``model``; raise ValidationError naming the first bad field.

    An error about the whole object (no field) is named ``root`` (default: the model's name).
    """
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or root or model.__name__
        message = first["msg"]
        if first["type"] in ("int_type", "int_from_float") and "cents" in field:
            message = "must be an integer number of GCC cents (no floats, no strings)"
        raise ValidationError(field, message) from None


# --- bodies described by users (--from-file) --------------------------------------------------

NonNegative = Annotated[Number, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[Number, Field(gt=0, allow_inf_nan=False)]
Percent = Annotated[Number, Field(ge=0, le=100, allow_inf_nan=False)]


class AtmosphereIn(_Strict):
    surface_pressure_kpa: NonNegative
    mean_temperature_k: Positive
    composition_pct: dict[str, Percent]

    @field_validator("composition_pct")
    @classmethod
    def _sums_to_100(cls, value: dict[str, float]) -> dict[str, float]:
        if sum(value.values()) > 100.5:
            raise ValueError("percentages must add up to at most 100")
        return value


class HydrosphereIn(_Strict):
    water_ice_kg: NonNegative
    liquid_water_kg: NonNegative
    other_liquids_kg: NonNegative = 0.0
    liquid_coverage_pct: Percent = 0.0


class GeosphereIn(_Strict):
    mass_kg: Positive
    mean_radius_km: Positive
    surface_gravity_m_s2: Positive
    bond_albedo: Annotated[Number, Field(ge=0, le=1, allow_inf_nan=False)]
    solar_flux_w_m2: NonNegative
    regolith_co2_kg: NonNegative = 0.0


class BiosphereIn(_Strict):
    biomass_kg: NonNegative = 0.0
    coverage_pct: Percent = 0.0


class BodyStateIn(_Strict):
    atmosphere: AtmosphereIn
    hydrosphere: HydrosphereIn
    geosphere: GeosphereIn
    biosphere: BiosphereIn = BiosphereIn()


class BodyFile(_Strict):
    """A body described in a JSON file, for ``clone --from-file``."""

    key: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
    name: Annotated[str, Field(min_length=1)]
    description: str = ""
    solar_system: Annotated[str, Field(min_length=1)] = "Sol"
    simulation_type: SimulationType = SimulationType.CUSTOM
    state: BodyStateIn

    @field_validator("name", "solar_system")
    @classmethod
    def _short_text(cls, value: str) -> str:
        return _text(value, MAX_TEXT)

    @field_validator("description")
    @classmethod
    def _long_text(cls, value: str) -> str:
        return _text(value, MAX_DESCRIPTION, allow_newlines=True)

    def body_state(self) -> BodyState:
        return msgspec.convert(self.state.model_dump(), BodyState)


def read_body_file(path: str | Path) -> BodyFile:
    """Read and validate a body file; too large, malformed or invalid files are refused."""
    file = Path(path)
    try:
        size = file.stat().st_size
    except OSError as error:
        raise ValidationError("from_file", f"cannot read {file}: {error.strerror}") from None
    if size > MAX_BODY_FILE_BYTES:
        raise ValidationError(
            "from_file", f"{file} is {size} bytes; the limit is {MAX_BODY_FILE_BYTES}"
        )
    try:
        data = msgspec.json.decode(file.read_bytes())
    except msgspec.DecodeError as error:
        raise ValidationError("from_file", f"{file} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValidationError("from_file", f"{file} must hold a JSON object")
    try:
        return validate(BodyFile, data)
    except ValidationError as error:
        raise ValidationError(error.field, f"{error.message} (in {file})") from None


# --- commands ----------------------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+)\s*([dhm])$")


def parse_duration(text: str, field: str = "expires_in") -> timedelta:
    """Parse '30d', '12h' or '90m' into a timedelta."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValidationError(field, f"{text!r} is not a duration like 30d, 12h or 90m")
    amount = int(match.group(1))
    unit = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}
    if amount > 100_000:
        raise ValidationError(field, f"{text!r} is too long")
    return amount * unit[match.group(2)]


class CloneTwin(_Strict):
    body: str | None = None
    body_file: BodyFile | None = None
    name: Annotated[str, Field(min_length=1)]
    description: str | None = None
    created_by: Annotated[str, Field(min_length=1)] = "cli"
    simulation_type: SimulationType | None = None
    simulation_parameters: dict[str, str | StrictInt | StrictFloat | bool] = {}
    expires_at: datetime

    @field_validator("name", "created_by")
    @classmethod
    def _short_text(cls, value: str) -> str:
        return _name(value)

    @field_validator("description")
    @classmethod
    def _long_text(cls, value: str | None) -> str | None:
        return None if value is None else _text(value, MAX_DESCRIPTION, allow_newlines=True)

    @field_validator("body")
    @classmethod
    def _known_body(cls, value: str | None) -> str | None:
        if value is not None and find_body(value) is None:
            from domain.catalog import CATALOG

            raise ValueError(f"unknown body {value!r}; known: {', '.join(sorted(CATALOG))}")
        return value

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    @field_validator("simulation_parameters")
    @classmethod
    def _finite_parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _finite(value)


class CustomSpecIn(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
    annual_cost_cents: Cents
    annual_revenue_cents: Cents = 0
    temperature_change_k: Annotated[Number, Field(ge=-50, le=50, allow_inf_nan=False)] = 0.0
    pressure_change_kpa: Annotated[Number, Field(ge=-1000, le=1000, allow_inf_nan=False)] = 0.0
    gas_change_pct: dict[str, Annotated[Number, Field(ge=-100, le=100, allow_inf_nan=False)]] = {}
    liquid_water_change_kg: Annotated[Number, Field(allow_inf_nan=False)] = 0.0
    biomass_growth_rate: Annotated[Number, Field(ge=0, le=10, allow_inf_nan=False)] = 0.0


class QueueRun(_Strict):
    pattern: Pattern
    duration_years: Annotated[StrictInt, Field(ge=MIN_YEARS, le=MAX_YEARS)]
    budget_cents: Cents
    tech_level: Annotated[StrictInt, Field(ge=1, le=10)] = 5
    priority: Priority = Priority.NORMAL
    pattern_params: dict[str, Annotated[Number, Field(allow_inf_nan=False)]] = {}
    custom_spec: CustomSpecIn | None = None
    seed: Annotated[StrictInt, Field(ge=0, le=MAX_SEED)] | None = None
    initiated_by: Annotated[str, Field(min_length=1)] = "cli"

    @field_validator("initiated_by")
    @classmethod
    def _short_text(cls, value: str) -> str:
        return _name(value)

    def run_parameters(self) -> RunParameters:
        if self.pattern == Pattern.CUSTOM and self.custom_spec is None:
            raise ValidationError("custom_spec", "the custom pattern needs a spec")
        if self.pattern != Pattern.CUSTOM and self.custom_spec is not None:
            raise ValidationError(
                "custom_spec", f"only the custom pattern takes a spec, not {self.pattern}"
            )
        return RunParameters(
            budget_cents=self.budget_cents,
            tech_level=self.tech_level,
            priority=self.priority,
            pattern_params={
                key: float(value) for key, value in sorted(self.pattern_params.items())
            },
            custom_spec=None
            if self.custom_spec is None
            else msgspec.convert(self.custom_spec.model_dump(), CustomSpec),
        )


class ReasonText(_Strict):
    reason: Annotated[str, Field(max_length=MAX_DESCRIPTION)] = ""
    by: Annotated[str, Field(min_length=1)] = "cli"

    @field_validator("reason", "by")
    @classmethod
    def _plain(cls, value: str) -> str:
        return _text(value, MAX_DESCRIPTION)


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """Read a custom pattern spec (JSON or TOML); validated later by QueueRun."""
    import tomllib

    file = Path(path)
    try:
        size = file.stat().st_size
    except OSError as error:
        raise ValidationError("spec", f"cannot read {file}: {error.strerror}") from None
    if size > MAX_BODY_FILE_BYTES:
        raise ValidationError("spec", f"{file} is {size} bytes; the limit is {MAX_BODY_FILE_BYTES}")
    raw = file.read_bytes()
    try:
        data = tomllib.loads(raw.decode()) if file.suffix == ".toml" else msgspec.json.decode(raw)
    except (tomllib.TOMLDecodeError, msgspec.DecodeError, UnicodeDecodeError) as error:
        raise ValidationError("spec", f"{file} cannot be parsed: {error}") from None
    if not isinstance(data, dict):
        raise ValidationError("spec", f"{file} must hold an object")
    return data
