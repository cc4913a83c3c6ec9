"""Validation of everything a user hands in (pydantic), before any event is made.

Each model turns user input into domain values or raises domain.errors.ValidationError naming
the first offending field. Money is StrictInt cents: a float, a bool or a string is refused.
docs/validation.md lists every rule, range and limit enforced here and why.
"""

from __future__ import annotations

import math
import os
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar
from uuid import UUID

import msgspec
import pydantic
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

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
from domain.world import MAX_GIVEN_CENTS

MAX_BODY_FILE_BYTES = 64 * 1024  # body files, custom pattern specs and experiment specs
MAX_TEXT = 200
MAX_DESCRIPTION = 2000
MAX_DEPTH = 32  # nesting of objects and arrays in any input; the deepest valid input has 4
MAX_ENTRIES = 64  # entries in any user-given mapping (gases, parameters)
MAX_INT_DIGITS = 30  # an integer typed on the command line: far above any range, far below int()'s
# C0 and C1 control characters (NUL included: PostgreSQL text and jsonb cannot hold it) and
# lone surrogates (not encodable as UTF-8). Multi-line texts may hold "\n".
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff]")

Cents = Annotated[StrictInt, Field(ge=0, le=MAX_GIVEN_CENTS)]  # money is never a float
Number = StrictFloat  # strict: accepts int and float, refuses strings and bools
Model = TypeVar("Model", bound=BaseModel)


def _describe(char: str) -> str:
    if "\ud800" <= char <= "\udfff":
        return f"a lone surrogate (U+{ord(char):04X})"
    return f"a control character (U+{ord(char):04X})"


def check_tree(data: Any) -> None:
    """Refuse control characters in any text or key, non-finite floats and deep nesting.

    Walks the whole input iteratively (a deep input cannot exhaust the stack) and raises
    PydanticCustomError with the path of the first offence, relative to ``data``.
    """
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_DEPTH:
            _unsafe(path, f"is nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, str):
            found = _CONTROL_BUT_NEWLINE.search(value)
            if found:
                _unsafe(path, f"must not contain {_describe(found.group())}")
        elif isinstance(value, float):
            if not math.isfinite(value):
                _unsafe(path, "must be a finite number")
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str):
                    found = _CONTROL.search(key)
                    if found:
                        _unsafe(
                            (*path, key.encode("unicode_escape", "backslashreplace").decode()),
                            f"key must not contain {_describe(found.group())}",
                        )
                stack.append((item, (*path, key)))
        elif isinstance(value, (list, tuple)):
            stack.extend((item, (*path, index)) for index, item in enumerate(value))


def check_safe(data: Any, field: str) -> None:
    """:func:`check_tree` outside a model: raise ValidationError naming ``field`` and the path
    (for data that arrives already structured, such as the events of an archive)."""
    try:
        check_tree(data)
    except PydanticCustomError as error:
        context = error.context or {}
        where = ".".join(part for part in (field, str(context.get("path", ""))) if part)
        raise ValidationError(where, error.message()) from None


def _unsafe(path: tuple[str | int, ...], message: str) -> None:
    raise PydanticCustomError(
        "unsafe_input", "{message}", {"path": ".".join(str(p) for p in path), "message": message}
    )


class InputModel(BaseModel):
    """Base of every input model: unknown fields refused, and :func:`check_tree` first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _safe(cls, data: Any) -> Any:
        check_tree(data)
        return data


def _text(value: str, limit: int, *, allow_newlines: bool = False) -> str:
    found = (_CONTROL_BUT_NEWLINE if allow_newlines else _CONTROL).search(value)
    if found:
        raise ValueError(f"must not contain {_describe(found.group())}")
    if len(value) > limit:
        raise ValueError(f"must be at most {limit} characters")
    return value


def _name(value: str) -> str:
    """A one-line name: no control characters, not blank, surrounding spaces dropped."""
    _text(value, MAX_TEXT)
    if not value.strip():
        raise ValueError("must not be blank")
    return value.strip()


def check_name(value: str, field: str) -> str:
    """A one-line name given outside a model (e.g. ``started_by``): trimmed, or
    ValidationError naming ``field``."""
    if not isinstance(value, str):
        raise ValidationError(field, "must be text")
    try:
        return _name(value)
    except ValueError as error:
        raise ValidationError(field, str(error)) from None


def _line(value: str) -> str:
    return _text(value, MAX_TEXT)


def _paragraph(value: str) -> str:
    return _text(value, MAX_DESCRIPTION, allow_newlines=True)


Name = Annotated[str, pydantic.AfterValidator(_name)]
"""A one-line name: 1-200 characters, not blank, no control characters; trimmed."""
Line = Annotated[str, pydantic.AfterValidator(_line)]
"""One line of text, at most 200 characters, no control characters."""
Paragraph = Annotated[str, pydantic.AfterValidator(_paragraph)]
"""Text of up to 2000 characters; newlines allowed, no other control characters."""
Gas = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,31}$")]
"""A gas in a composition: a formula or short ASCII name such as CO2, N2, PFC."""
ParameterKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")]
"""A parameter name: ASCII letters, digits, '_', '.', '-'; at most 64 characters."""


_UNION_MEMBER = re.compile(
    r"(int|float|str|bool|bytes|none"
    r"|(constrained|function|json-or-python|lax-or-strict|nullable|list|dict|tuple)[-\[].*)"
)
"""How pydantic names a union's member in an error's location ('int', 'float',
'function-after[_line(), str]', ...): the user's field is the location before it."""


def _first_error(errors: list[Any]) -> tuple[dict[str, Any], str]:
    """The first error and its message. A value no member of a union accepts gives one error
    per member, each located at the field plus the member's name (``margin.int``,
    ``margin.float``): they become one error at the field, listing the types it may have, or
    the reason of the member that took the type and refused the value."""
    first = dict(errors[0])
    message = str(first["msg"]).removeprefix("Value error, ")
    *field, member = first["loc"] or ("",)
    if not (isinstance(member, str) and _UNION_MEMBER.fullmatch(member)):
        return first, message
    members = [
        e
        for e in errors
        if len(e["loc"]) == len(first["loc"])
        and list(e["loc"][:-1]) == field
        and e["input"] is first["input"]
    ]
    if len(members) < 2:
        return first, message
    first["loc"] = tuple(field)
    if not all(str(e["type"]).endswith("_type") for e in members):
        return first, message  # a member took the type and refused the value: its reason
    kinds = [str(e["msg"]).removeprefix("Input should be a valid ") for e in members]
    return first, "Input should be a valid " + " or ".join(dict.fromkeys(kinds))


def validate(model: type[Model], data: dict[str, Any], *, root: str | None = None) -> Model:
    """Validate ``data`` into ``model``; raise ValidationError naming the first bad field.

    An error about the whole object (no field) is named ``root`` (default: the model's name).
    """
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as error:
        first, message = _first_error(error.errors())
        parts = [str(part) for part in first["loc"]]
        if first["type"] == "unsafe_input" and first.get("ctx", {}).get("path"):
            parts.append(first["ctx"]["path"])
        field = ".".join(parts) or root or model.__name__
        if first["type"] in ("int_type", "int_from_float") and "cents" in field:
            message = "must be an integer number of GCC cents (no floats, no strings)"
        raise ValidationError(field, message) from None


# --- numbers typed as text (CLI flags, --param values) ----------------------------------------

_INTEGER = re.compile(rf"-?[0-9]{{1,{MAX_INT_DIGITS}}}")
_DECIMAL = re.compile(r"-?[0-9]{1,30}(\.[0-9]{1,30})?([eE][-+]?[0-9]{1,3})?")


def parse_int(text: str, field: str) -> int:
    """An integer written in ASCII digits 0-9 with an optional leading '-'.

    Refused: Unicode digits ('²', '①', '١٢٣'), '_' separators, a leading '+', spaces, and
    more than 30 digits. Ranges are checked where the value is used, naming the field.
    """
    if not _INTEGER.fullmatch(text):
        raise ValidationError(
            field, f"{_shown(text)} is not an integer (ASCII digits 0-9, optional leading '-')"
        )
    return int(text)


def parse_number(text: str, field: str) -> float | int:
    """A decimal number in ASCII (12, -0.5, 1e6); no 'nan', 'inf', '_' or Unicode digits."""
    if _INTEGER.fullmatch(text):
        return int(text)
    if not _DECIMAL.fullmatch(text):
        raise ValidationError(field, f"{_shown(text)} is not a number like 12, -0.5 or 1e6")
    value = float(text)
    if not math.isfinite(value):
        raise ValidationError(field, f"{_shown(text)} is not a finite number")
    return value


def _shown(text: str, limit: int = 40) -> str:
    """A user's text quoted for an error message: escaped, and cut if long."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


_ID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")


def parse_id(ident: UUID | str, field: str) -> UUID:
    """A UUID written in ASCII hex (with or without hyphens); anything else names ``field``."""
    if isinstance(ident, UUID):
        return ident
    text = str(ident).strip()
    if not _ID.fullmatch(text):
        raise ValidationError(field, f"{_shown(str(ident))} is not a valid id")
    return UUID(text)


# --- files --------------------------------------------------------------------------------------

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def read_input_file(path: str | Path, field: str, limit: int = MAX_BODY_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, or ValidationError naming ``field``.

    Opened non-blocking and checked with fstat before reading, so a FIFO, a device
    (/dev/zero, /dev/urandom) or a directory is refused without blocking or reading; at most
    ``limit + 1`` bytes are read, so a file that grows while read cannot exhaust memory.
    """
    file = Path(path)
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise ValidationError(field, f"cannot read {file}: {error.strerror}") from None
    except ValueError:  # a NUL in the path
        raise ValidationError(field, f"{_shown(str(path))} is not a valid path") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
            raise ValidationError(field, f"{file} is {kind}; a regular file is needed")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as error:
        raise ValidationError(field, f"cannot read {file}: {error.strerror}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise ValidationError(field, f"{file} is larger than the limit of {limit} bytes")
    return b"".join(chunks)


def parse_document(raw: bytes, file: str | Path, field: str, *, toml: bool) -> dict[str, Any]:
    """Parse a JSON or TOML object; malformed, too deep or non-object input names ``field``."""
    import tomllib

    kind = "TOML" if toml else "JSON"
    try:
        data = tomllib.loads(raw.decode()) if toml else msgspec.json.decode(raw)
    except RecursionError:
        raise ValidationError(field, f"{file} is nested too deeply") from None
    except (tomllib.TOMLDecodeError, msgspec.DecodeError, UnicodeDecodeError) as error:
        raise ValidationError(field, f"{file} is not valid {kind}: {error}") from None
    if not isinstance(data, dict):
        raise ValidationError(field, f"{file} must hold a {kind} object")
    return data


# --- bodies described by users (--from-file) --------------------------------------------------
# Physical ranges are generous (docs/validation.md gives the reasons): every real planet and moon
# fits with room to spare, and no valid body can overflow the engine.

Percent = Annotated[Number, Field(ge=0, le=100, allow_inf_nan=False)]
WaterKg = Annotated[Number, Field(ge=0, le=1e26, allow_inf_nan=False)]  # Earth's oceans 1.4e21


MAX_PRESSURE_KPA = 1e6  # a body's surface pressure at most
MAX_COMPOUNDED_KPA = 1e300  # what a custom spec may grow any atmosphere to (a float: 1.8e308)


class AtmosphereIn(InputModel):
    surface_pressure_kpa: Annotated[Number, Field(ge=0, le=MAX_PRESSURE_KPA, allow_inf_nan=False)]
    mean_temperature_k: Annotated[Number, Field(ge=1, le=10_000, allow_inf_nan=False)]
    composition_pct: Annotated[dict[Gas, Percent], Field(max_length=MAX_ENTRIES)]

    @field_validator("composition_pct")
    @classmethod
    def _sums_to_100(cls, value: dict[str, float]) -> dict[str, float]:
        if math.fsum(value.values()) > 100.5:
            raise ValueError("percentages must add up to at most 100")
        return value


class HydrosphereIn(InputModel):
    water_ice_kg: WaterKg
    liquid_water_kg: WaterKg
    other_liquids_kg: WaterKg = 0.0
    liquid_coverage_pct: Percent = 0.0


class GeosphereIn(InputModel):
    mass_kg: Annotated[Number, Field(ge=1e15, le=1e28, allow_inf_nan=False)]  # Jupiter 1.9e27
    mean_radius_km: Annotated[Number, Field(ge=1, le=200_000, allow_inf_nan=False)]
    surface_gravity_m_s2: Annotated[Number, Field(ge=1e-3, le=1000, allow_inf_nan=False)]
    bond_albedo: Annotated[Number, Field(ge=0, le=1, allow_inf_nan=False)]
    solar_flux_w_m2: Annotated[Number, Field(ge=0, le=1e7, allow_inf_nan=False)]
    regolith_co2_kg: Annotated[Number, Field(ge=0, le=1e24, allow_inf_nan=False)] = 0.0


class BiosphereIn(InputModel):
    biomass_kg: Annotated[Number, Field(ge=0, le=1e20, allow_inf_nan=False)] = 0.0
    coverage_pct: Percent = 0.0


class BodyStateIn(InputModel):
    atmosphere: AtmosphereIn
    hydrosphere: HydrosphereIn
    geosphere: GeosphereIn
    biosphere: BiosphereIn = BiosphereIn()


class BodyFile(InputModel):
    """A body described in a JSON file, for ``clone --from-file``."""

    key: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
    name: Name
    description: Paragraph = ""
    solar_system: Name = "Sol"
    simulation_type: SimulationType = SimulationType.CUSTOM
    state: BodyStateIn

    def body_state(self) -> BodyState:
        return msgspec.convert(self.state.model_dump(), BodyState)


def read_body_file(path: str | Path) -> BodyFile:
    """Read and validate a body file; unreadable, too large, malformed or invalid files are
    refused naming ``from_file`` (or the field inside it)."""
    data = parse_document(read_input_file(path, "from_file"), path, "from_file", toml=False)
    try:
        return validate(BodyFile, data)
    except ValidationError as error:
        raise ValidationError(error.field, f"{error.message} (in {path})") from None


# --- commands ----------------------------------------------------------------------------------

_DURATION = re.compile(r"([0-9]{1,7}) ?([dhm])")


def parse_duration(text: str, field: str = "expires_in") -> timedelta:
    """Parse '30d', '12h' or '90m' into a timedelta (ASCII digits, at most 100,000 units)."""
    match = _DURATION.fullmatch(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValidationError(field, f"{_shown(text)} is not a duration like 30d, 12h or 90m")
    amount = int(match.group(1))
    unit = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}
    if amount > 100_000:
        raise ValidationError(field, f"{_shown(text)} is too long (at most 100000 units)")
    return amount * unit[match.group(2)]


ParameterValue = Annotated[str, pydantic.AfterValidator(_line)] | StrictInt | StrictFloat | bool


class CloneTwin(InputModel):
    body: Line | None = None
    body_file: BodyFile | None = None
    name: Name
    description: Paragraph | None = None
    created_by: Name = "cli"
    simulation_type: SimulationType | None = None
    simulation_parameters: Annotated[
        dict[ParameterKey, ParameterValue], Field(max_length=MAX_ENTRIES)
    ] = {}
    expires_at: datetime

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
    def _int64(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, number in value.items():
            if isinstance(number, int) and not -(2**63) <= number < 2**63:
                raise ValueError(f"{key} must fit a 64-bit integer")
        return value


def compounded_pressure_kpa(spec: CustomSpecIn, years: int) -> float:
    """The highest total pressure ``spec`` can reach in ``years`` from the highest a body may
    have: each year fully funded, ``pressure_change_kpa`` added, then every gas's increase,
    a percentage of that total (domain/patterns/custom.py), so the increases compound."""
    growth = 1.0 + math.fsum(max(0.0, pct) for pct in spec.gas_change_pct.values()) / 100.0
    added = max(0.0, spec.pressure_change_kpa)
    pressure = MAX_PRESSURE_KPA
    for _ in range(years):
        pressure = (pressure + added) * growth
        if pressure > MAX_COMPOUNDED_KPA:
            break
    return pressure


class CustomSpecIn(InputModel):
    """A custom pattern's yearly changes, each bounded; gas increases compound, so QueueRun
    also bounds them together with the run's years (compounded_pressure_kpa)."""

    name: Name
    annual_cost_cents: Cents
    annual_revenue_cents: Cents = 0
    temperature_change_k: Annotated[Number, Field(ge=-50, le=50, allow_inf_nan=False)] = 0.0
    pressure_change_kpa: Annotated[Number, Field(ge=-1000, le=1000, allow_inf_nan=False)] = 0.0
    gas_change_pct: Annotated[
        dict[Gas, Annotated[Number, Field(ge=-100, le=100, allow_inf_nan=False)]],
        Field(max_length=MAX_ENTRIES),
    ] = {}
    liquid_water_change_kg: Annotated[Number, Field(ge=-1e22, le=1e22, allow_inf_nan=False)] = 0.0
    biomass_growth_rate: Annotated[Number, Field(ge=0, le=10, allow_inf_nan=False)] = 0.0


# Which simulation type each built-in pattern is made for; custom runs on any twin.
PATTERN_TYPES: dict[Pattern, SimulationType] = {
    Pattern.MARS_TERRAFORM: SimulationType.TERRAFORMING,
    Pattern.VENUS_INDUSTRIAL: SimulationType.INDUSTRIAL,
    Pattern.TITAN_FUEL: SimulationType.FUEL,
    Pattern.EUROPA_OCEAN: SimulationType.OCEAN,
}


def check_pattern_fits(pattern: Pattern, simulation_type: SimulationType, twin: str) -> None:
    """Refuse a built-in pattern made for another kind of twin (docs/validation.md).

    A twin's simulation type comes from its body (mars: terraforming, venus and moon:
    industrial, titan: fuel, europa: ocean, earth and described bodies: custom) or from
    ``clone --type``; the custom pattern runs on any twin.
    """
    made_for = PATTERN_TYPES.get(pattern)
    if made_for is None or made_for == simulation_type:
        return
    fitting = [str(p) for p, kind in PATTERN_TYPES.items() if kind == simulation_type]
    raise ValidationError(
        "pattern",
        f"{pattern} is made for {made_for} twins; twin {twin} is a {simulation_type} twin "
        f"and takes: {', '.join([*fitting, str(Pattern.CUSTOM)])} "
        "(clone with --type to choose another simulation type)",
    )


class QueueRun(InputModel):
    pattern: Pattern
    duration_years: Annotated[StrictInt, Field(ge=MIN_YEARS, le=MAX_YEARS)]
    budget_cents: Cents
    tech_level: Annotated[StrictInt, Field(ge=1, le=10)] = 5
    priority: Priority = Priority.NORMAL
    pattern_params: Annotated[
        dict[ParameterKey, Annotated[Number, Field(allow_inf_nan=False)]],
        Field(max_length=MAX_ENTRIES),
    ] = {}
    custom_spec: CustomSpecIn | None = None
    seed: Annotated[StrictInt, Field(ge=0, le=MAX_SEED)] | None = None
    initiated_by: Name = "cli"

    def run_parameters(self) -> RunParameters:
        if self.pattern == Pattern.CUSTOM and self.custom_spec is None:
            raise ValidationError("custom_spec", "the custom pattern needs a spec")
        if self.pattern != Pattern.CUSTOM and self.custom_spec is not None:
            raise ValidationError(
                "custom_spec", f"only the custom pattern takes a spec, not {self.pattern}"
            )
        spec = self.custom_spec
        if spec is not None and compounded_pressure_kpa(spec, self.duration_years) > (
            MAX_COMPOUNDED_KPA
        ):
            rise = math.fsum(max(0.0, pct) for pct in spec.gas_change_pct.values())
            raise ValidationError(
                "custom_spec.gas_change_pct",
                f"gases rising {rise:g} % of the total a year compound beyond "
                f"{MAX_COMPOUNDED_KPA:g} kPa within duration_years {self.duration_years}, past "
                "what the engine's numbers hold: lower the rates or the years",
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


class ReasonText(InputModel):
    reason: Paragraph = ""
    by: Name = "cli"


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """Read a custom pattern spec (JSON, or TOML if the name ends in .toml); validated later by
    QueueRun. Unreadable, too large or malformed files are refused naming ``spec``."""
    raw = read_input_file(path, "spec")
    return parse_document(raw, path, "spec", toml=Path(path).suffix == ".toml")
