"""Hostile input at every entry point (docs/validation.md, the hostile-inputs checklist).

Each case feeds the CLI (typer's CliRunner), a body file, a custom pattern spec, an experiment
spec or the Python API something a serious ledger must refuse: NUL and other control characters,
lone surrogates, NaN, infinities, 1e308, Unicode digits, '1_000', deep nesting, endless files,
FIFOs and directories. Expected: exit code 2 (ValidationError from the API), one line naming the
field, no traceback, and the same number of rows in the events table before and after.
"""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from psycopg import sql
from typer.testing import CliRunner

from domain.errors import TwinLedgerError, ValidationError
from domain.twin import DigitalTwin
from domain.values import SimulationType
from infrastructure.application import TwinLedger
from infrastructure.cli import app
from infrastructure.codec import MsgspecMapper, NullTranscoder
from infrastructure.experiments import read_experiment_file, run_experiment, start_experiment
from infrastructure.inputs import (
    MAX_BODY_FILE_BYTES,
    CloneTwin,
    QueueRun,
    parse_int,
    parse_number,
    validate,
)
from infrastructure.service import Ledger
from tests.conftest import postgres_base_url

runner = CliRunner()
BUDGET = 1_000_000_000_000
NUL, ESC, C1, SURROGATE = "\x00", "\x1b", "\x85", "\ud800"
BAD_TEXTS = [f"a{NUL}b", f"a{ESC}[31mb", f"a{C1}b", f"a{SURROGATE}b", "a\x7fb", "a\tb"]
BAD_INTEGERS = [
    "\u00b2",
    "\u2460",
    "\u0661\u0662\u0663",
    "1_000",
    " 12 ",
    "12 ",
    "+5",
    "1e3",
    "12.0",
    "",
    "9" * 5000,
]
DEEP_UNDER_LIMIT = 30_000  # levels of nesting that fit in the 64 KiB limit
DEEP_OVER_LIMIT = 100_000


# --- the store: counting rows of the events table -------------------------------------------


def stored_events(url: str) -> int:
    """Rows in the events table (a count, not the highest id)."""
    if url.startswith("postgresql"):
        schema = parse_qs(urlsplit(url).query)["schema"][0]
        with psycopg.connect(postgres_base_url()) as connection:
            table = sql.Identifier(schema, "twinledger_events")
            row = connection.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
        assert row is not None
        return int(row[0])
    connection = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        return int(connection.execute("SELECT count(*) FROM stored_events").fetchone()[0])
    finally:
        connection.close()


@pytest.fixture
def store(database_url: str) -> tuple[str, str]:
    """A store holding one Mars twin: (url, twin id)."""
    ledger = TwinLedger.open(database_url)
    try:
        twin_id = str(ledger.clone_twin(name="Mars A", body="mars"))
    finally:
        ledger.close()
    return database_url, twin_id


def refused_cli(url: str, args: list[str], field: str) -> str:
    """Run the CLI; it must exit 2 with one line naming ``field`` and write nothing."""
    before = stored_events(url)
    result = runner.invoke(app, ["--db", url, *args])
    err = result.stderr
    assert result.exit_code == 2, (result.exit_code, result.stdout, err, result.exception)
    assert "Traceback" not in err + result.stdout
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert field in lines[0], err
    assert stored_events(url) == before
    return lines[0]


def refused_api(url: str, field: str, command: Callable[[TwinLedger], Any]) -> str:
    """Call the Python API; it must raise a ledger error naming ``field`` and write nothing."""
    before = stored_events(url)
    ledger = TwinLedger.open(url)
    try:
        with pytest.raises(TwinLedgerError) as caught:
            command(ledger)
    finally:
        ledger.close()
    message = str(caught.value)
    assert field in message.split(": ", 1)[0], message
    assert "\n" not in message
    assert stored_events(url) == before
    return message


# --- files ---------------------------------------------------------------------------------


def valid_body() -> dict[str, Any]:
    return {
        "key": "kepler-22b",
        "name": "Kepler-22b",
        "state": {
            "atmosphere": {
                "surface_pressure_kpa": 120.0,
                "mean_temperature_k": 262.0,
                "composition_pct": {"N2": 80.0, "CO2": 20.0},
            },
            "hydrosphere": {"water_ice_kg": 1e20, "liquid_water_kg": 1e21},
            "geosphere": {
                "mass_kg": 2e25,
                "mean_radius_km": 15000.0,
                "surface_gravity_m_s2": 12.0,
                "bond_albedo": 0.3,
                "solar_flux_w_m2": 1100.0,
            },
        },
    }


def changed(document: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(document))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy


def dumps(data: Any) -> str:
    """JSON that keeps lone surrogates and non-ASCII as escapes (as a hostile file would)."""
    return json.dumps(data, ensure_ascii=True)


def has_surrogate(value: Any) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in json.dumps(value, ensure_ascii=False))


@pytest.fixture
def special_files(tmp_path: Path) -> dict[str, str]:
    """Paths that must never be read whole or block: devices, a FIFO, a directory, a loop."""
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop)
    sparse = tmp_path / "sparse.json"
    with sparse.open("wb") as out:
        out.truncate(10 * 2**30)  # 10 GiB of zeros, no disk used: a size check must hold
    deep = tmp_path / "deep.json"
    deep.write_text("[" * DEEP_UNDER_LIMIT + "]" * DEEP_UNDER_LIMIT)
    deeper = tmp_path / "deeper.json"
    deeper.write_text("[" * DEEP_OVER_LIMIT + "]" * DEEP_OVER_LIMIT)
    deep_object = tmp_path / "deep-object.json"
    deep_object.write_text('{"key": ' + '{"a": ' * 8000 + "1" + "}" * 8000 + "}")
    deep_toml = tmp_path / "deep.toml"
    deep_toml.write_text("a = " + "[" * DEEP_UNDER_LIMIT + "]" * DEEP_UNDER_LIMIT)
    return {
        "/dev/zero": "/dev/zero",
        "/dev/urandom": "/dev/urandom",
        "fifo": str(fifo),
        "directory": str(tmp_path),
        "missing": str(tmp_path / "missing.json"),
        "symlink loop": str(loop),
        "sparse 10 GiB": str(sparse),
        "30k levels": str(deep),
        "100k levels": str(deeper),
        "deep object": str(deep_object),
        "deep toml": str(deep_toml),
    }


FILE_CASES = [
    "/dev/zero",
    "/dev/urandom",
    "fifo",
    "directory",
    "missing",
    "symlink loop",
    "sparse 10 GiB",
    "30k levels",
    "100k levels",
    "deep object",
]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("case", FILE_CASES)
def test_clone_from_file_refuses_what_is_not_a_small_regular_file(
    store: tuple[str, str], special_files: dict[str, str], case: str
) -> None:
    url, _ = store
    before = peak_rss_mib()
    message = refused_cli(url, ["clone", "--from-file", special_files[case]], "from_file")
    assert Path(special_files[case]).name in message
    assert peak_rss_mib() - before < 64  # nothing large was read


@pytest.mark.parametrize("case", [*FILE_CASES, "deep toml"])
def test_run_spec_refuses_what_is_not_a_small_regular_file(
    store: tuple[str, str], special_files: dict[str, str], case: str
) -> None:
    url, twin_id = store
    args = ["run", twin_id, "--pattern", "custom", "--years", "2", "--spec", special_files[case]]
    refused_cli(url, args, "spec")


@pytest.mark.parametrize("case", [*FILE_CASES, "deep toml"])
def test_experiment_spec_refuses_what_is_not_a_small_regular_file(
    store: tuple[str, str], special_files: dict[str, str], case: str
) -> None:
    url, _ = store
    refused_cli(url, ["experiment", "run", special_files[case]], "spec")


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """Opening a FIFO for reading blocks until a writer comes; the reader must not wait."""
    fifo = tmp_path / "body.json"
    os.mkfifo(fifo)
    with pytest.raises(ValidationError, match="FIFO"):
        read_experiment_file(fifo)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("name",), f"Kepler{NUL}", "name"),
        (("name",), f"Kepler{SURROGATE}", "name"),
        (("name",), "", "name"),
        (("description",), f"a{ESC}b", "description"),
        (("solar_system",), f"Sol{C1}", "solar_system"),
        (("state", "atmosphere", "composition_pct"), {f"N2{NUL}": 50.0}, "composition_pct"),
        (("state", "atmosphere", "composition_pct"), {SURROGATE: 50.0}, "composition_pct"),
        (("state", "atmosphere", "composition_pct"), {"N2": 1e308}, "composition_pct.N2"),
        (("state", "atmosphere", "surface_pressure_kpa"), 1e308, "surface_pressure_kpa"),
        (("state", "atmosphere", "surface_pressure_kpa"), -1e308, "surface_pressure_kpa"),
        (("state", "atmosphere", "mean_temperature_k"), 1e308, "mean_temperature_k"),
        (("state", "hydrosphere", "liquid_water_kg"), 1e308, "liquid_water_kg"),
        (("state", "hydrosphere", "water_ice_kg"), -1e308, "water_ice_kg"),
        (("state", "geosphere", "mass_kg"), 1e308, "mass_kg"),
        (("state", "geosphere", "mean_radius_km"), 1e308, "mean_radius_km"),
        (("state", "geosphere", "surface_gravity_m_s2"), 1e308, "surface_gravity_m_s2"),
        (("state", "geosphere", "solar_flux_w_m2"), 1e308, "solar_flux_w_m2"),
        (("state", "geosphere", "regolith_co2_kg"), 1e308, "regolith_co2_kg"),
        (("state", "biosphere"), {"biomass_kg": 1e308}, "biomass_kg"),
        (("state", "geosphere", "mass_kg"), "1e3", "mass_kg"),
        (("state", "geosphere", "mass_kg"), [[[[[[[[1]]]]]]]], "mass_kg"),
        (
            ("key",),
            [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
            "key",
        ),
    ],
)
def test_body_files_refuse_hostile_fields(
    store: tuple[str, str], tmp_path: Path, path: tuple[str, ...], value: Any, field: str
) -> None:
    url, _ = store
    file = tmp_path / "body.json"
    file.write_text(dumps(changed(valid_body(), path, value)))
    if has_surrogate(value):
        field = "from_file"  # an escaped lone surrogate is malformed JSON (msgspec)
    refused_cli(url, ["clone", "--from-file", str(file)], field)
    refused_api(url, field, lambda ledger: ledger.clone_twin(body_file=str(file)))


def test_a_body_file_that_is_not_utf8_is_refused(store: tuple[str, str], tmp_path: Path) -> None:
    url, _ = store
    file = tmp_path / "body.json"
    file.write_bytes(dumps(valid_body()).encode().replace(b"Kepler", b"K\xff\xfe"))
    refused_cli(url, ["clone", "--from-file", str(file)], "from_file")
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + dumps(valid_body()).encode())
    refused_cli(url, ["clone", "--from-file", str(bom)], "from_file")


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_body_files_refuse_non_finite_numbers(
    store: tuple[str, str], tmp_path: Path, text: str
) -> None:
    url, _ = store
    body = dumps(valid_body()).replace(
        '"surface_pressure_kpa": 120.0', f'"surface_pressure_kpa": {text}'
    )
    file = tmp_path / "body.json"
    file.write_text(body)
    refused_cli(url, ["clone", "--from-file", str(file)], "from_file")


# --- custom pattern specs ---------------------------------------------------------------------


def valid_spec() -> dict[str, Any]:
    return {"name": "warm", "annual_cost_cents": 100_000, "temperature_change_k": 0.5}


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("name",), f"warm{NUL}", "custom_spec.name"),
        (("name",), f"warm{SURROGATE}", "custom_spec.name"),
        (("name",), "\n", "custom_spec.name"),
        (("gas_change_pct",), {f"CO2{NUL}": 1.0}, "custom_spec.gas_change_pct"),
        (("gas_change_pct",), {"CO2": 1e308}, "custom_spec.gas_change_pct.CO2"),
        (("liquid_water_change_kg",), 1.7e308, "custom_spec.liquid_water_change_kg"),
        (("liquid_water_change_kg",), -1.7e308, "custom_spec.liquid_water_change_kg"),
        (("pressure_change_kpa",), 1e308, "custom_spec.pressure_change_kpa"),
        (("annual_cost_cents",), 2**70, "custom_spec.annual_cost_cents"),
        (("extra",), {NUL: 1}, "custom_spec"),
    ],
)
def test_custom_specs_refuse_hostile_fields(
    store: tuple[str, str], tmp_path: Path, path: tuple[str, ...], value: Any, field: str
) -> None:
    url, twin_id = store
    spec = changed(valid_spec(), path, value)
    file = tmp_path / "spec.json"
    file.write_text(dumps(spec))
    args = ["run", twin_id, "--pattern", "custom", "--years", "2", "--spec", str(file)]
    refused_cli(url, args, "spec" if has_surrogate(value) else field)
    refused_api(
        url,
        field,
        lambda ledger: ledger.queue_run(
            twin_id, pattern="custom", duration_years=2, budget_cents=BUDGET, custom_spec=spec
        ),
    )


def test_a_spec_whose_gases_compound_past_the_float_range_is_refused(
    store: tuple[str, str], tmp_path: Path
) -> None:
    """Each year every gas adds its percentage of the total: +100 % of CO2 and of H2O for
    1000 funded years is 3^1000 times the atmosphere (the engine once failed such a run in
    year 652). The boundary refuses the combination, naming the rates; 60 years pass."""
    url, twin_id = store
    spec = {**valid_spec(), "gas_change_pct": {"CO2": 100.0, "H2O": 100.0}}
    file = tmp_path / "spec.json"
    file.write_text(dumps(spec))
    args = ["run", twin_id, "--pattern", "custom", "--years", "1000", "--spec", str(file)]
    line = refused_cli(url, args, "custom_spec.gas_change_pct")
    assert "duration_years 1000" in line
    refused_api(
        url,
        "custom_spec.gas_change_pct",
        lambda ledger: ledger.queue_run(
            twin_id, pattern="custom", duration_years=1000, budget_cents=BUDGET, custom_spec=spec
        ),
    )
    ledger = TwinLedger.open(url)
    try:
        ledger.queue_run(
            twin_id, pattern="custom", duration_years=60, budget_cents=BUDGET, custom_spec=spec
        )
    finally:
        ledger.close()


@pytest.mark.parametrize(
    ("gases", "years"),
    [
        ({"H2": 95.9}, 1000),  # just under the bound: one gas, the lightest (most moles)
        ({f"G{i}": 100.0 for i in range(62)} | {"H2": 100.0, "Xe": 100.0}, 160),
    ],
)
def test_the_largest_compounding_spec_accepted_stays_finite(
    gases: dict[str, float], years: int
) -> None:
    """Every year funded, no failures, every change at its largest, from the densest body:
    the run the boundary lets through completes with finite numbers (about 1e296 kPa)."""
    import msgspec

    from domain.engine import RunInputs, Simulation
    from domain.values import Pattern
    from infrastructure.codec import encode_finite
    from infrastructure.inputs import BodyFile, QueueRun

    body = valid_body()
    body["state"]["atmosphere"]["surface_pressure_kpa"] = 1e6
    body["state"]["atmosphere"]["composition_pct"] = {"H2": 100.0}
    body["state"]["geosphere"]["solar_flux_w_m2"] = 1e7
    state = validate(BodyFile, body).body_state()
    spec = {
        "name": "largest",
        "annual_cost_cents": 1,
        "temperature_change_k": 50.0,
        "pressure_change_kpa": 1000.0,
        "gas_change_pct": gases,
        "liquid_water_change_kg": 1e22,
        "biomass_growth_rate": 10.0,
    }
    request = {
        "pattern": "custom",
        "duration_years": years,
        "budget_cents": 2**62,
        "custom_spec": spec,
        "pattern_params": {"failure_rate": 0.0, "hazard_rate": 0.0, "funding_variance": 0.0},
    }
    parameters = validate(QueueRun, request).run_parameters()
    simulation = Simulation(
        RunInputs(
            state=state,
            pattern=Pattern.CUSTOM,
            duration_years=years,
            parameters=parameters,
            seed=1,
        )
    )
    while simulation.year < years:
        result = simulation.step()
        encode_finite(msgspec.to_builtins(result))  # raises on NaN or inf
    encode_finite(msgspec.to_builtins(simulation.summary()))
    assert result.environment.pressure_kpa > 1e290  # the bound was really approached


def test_a_toml_spec_with_a_nul_in_a_key_is_refused(store: tuple[str, str], tmp_path: Path) -> None:
    url, twin_id = store
    file = tmp_path / "spec.toml"
    file.write_text('name = "warm"\nannual_cost_cents = 1\n[gas_change_pct]\n"CO2\\u0000" = 1.0\n')
    args = ["run", twin_id, "--pattern", "custom", "--years", "2", "--spec", str(file)]
    refused_cli(url, args, "custom_spec.gas_change_pct")


# --- experiment specs -------------------------------------------------------------------------

EXPERIMENT = """\
name = {name}
body = "mars"
pattern = "mars_terraform"
years = 5
master_seed = 1
samples = 1
max_iterations = 1

[objective]
kind = "maximize_habitability"

[base]
budget_cents = 1_000_000_000_000
{base}

[space]
tech_level = [3, 5]
"""


@pytest.mark.parametrize(
    ("name", "base", "field"),
    [
        ('"a\\u0000b"', "", "name"),
        ('"a\\u001bb"', "", "name"),
        ('"a\\u0085b"', "", "name"),
        ('"a\\nb"', "", "name"),
        ('""', "", "name"),
        ('"x"', "pattern_params = { spend_scale = 1e308 }", "base.pattern_params.spend_scale"),
        ('"x"', "pattern_params = { spend_scale = nan }", "base.pattern_params.spend_scale"),
        ('"x"', "pattern_params = { spend_scale = inf }", "base.pattern_params.spend_scale"),
        ('"x"', 'pattern_params = { "a\\u0000" = 1.0 }', "base.pattern_params"),
        ('"x"', "pattern_params = { nonsense = 1.0 }", "base.pattern_params.nonsense"),
    ],
)
def test_experiment_specs_refuse_hostile_fields(
    store: tuple[str, str], tmp_path: Path, name: str, base: str, field: str
) -> None:
    url, _ = store
    file = tmp_path / "experiment.toml"
    file.write_text(EXPERIMENT.format(name=name, base=base))
    refused_cli(url, ["experiment", "run", str(file)], field)


HUGE_THRESHOLDS = [
    ("early_stop", "at_year = 2\nmargin = 18446744073709551616", "early_stop.margin"),  # 2**64
    ("early_stop", "at_year = 2\nmargin = 4611686018427387905", "early_stop.margin"),  # 2**62+1
    ("early_stop", "at_year = 2\nmargin = 1e300", "early_stop.margin"),
    (
        "objective",
        'kind = "maximize_habitability"\nmin_improvement = 18446744073709551616',
        "objective.min_improvement",
    ),
    (
        "objective",
        'kind = "maximize_habitability"\nmin_improvement = 1e19',
        "objective.min_improvement",
    ),
]


def huge_threshold_spec(table: str, lines: str) -> str:
    """EXPERIMENT with its [objective] or a new [early_stop] table holding ``lines``."""
    spec = EXPERIMENT.format(name='"x"', base="")
    if table == "objective":
        return spec.replace(
            '[objective]\nkind = "maximize_habitability"\n', f"[objective]\n{lines}\n"
        )
    return spec + f"\n[early_stop]\n{lines}\n"


@pytest.mark.parametrize(("table", "lines", "field"), HUGE_THRESHOLDS)
def test_experiment_thresholds_beyond_the_bound_of_cents_are_refused(
    store: tuple[str, str], tmp_path: Path, table: str, lines: str, field: str
) -> None:
    """`early_stop.margin` and `objective.min_improvement` took any size (2**64): they are
    amounts of cents for a cost objective, bounded as every amount of cents is (MAX_GIVEN_CENTS),
    on the command line (a spec file), the Python API and HTTP (tests/test_http_api.py)."""
    url, _ = store
    file = tmp_path / "experiment.toml"
    file.write_text(huge_threshold_spec(table, lines))
    refused_cli(url, ["experiment", "run", str(file)], field)
    data = tomllib.loads(file.read_text())
    refused_api(url, field, lambda ledger: Ledger(ledger).run_experiment(data))


@pytest.mark.parametrize(
    "scheduler",
    [
        "bogus",
        "'; DROP TABLE x; --",
        "tcp://host name:8786",
        f"tcp://a{ESC}[31m",
        "tcp://" + "x" * 10_000,
    ],
    ids=lambda text: repr(text)[:24],
)
def test_a_bad_scheduler_is_refused_before_an_experiment_is_recorded(
    store: tuple[str, str], tmp_path: Path, scheduler: str
) -> None:
    """`experiment run --scheduler BAD` recorded the experiment (and cloned its twin), then
    refused the scheduler at the first sample: a `running` experiment left behind, which a
    server would take up. The address is checked first now, and resume checks it the same."""
    url, _ = store
    file = tmp_path / "experiment.toml"
    file.write_text(EXPERIMENT.format(name='"x"', base=""))
    line = refused_cli(url, ["experiment", "run", str(file), "--scheduler", scheduler], "scheduler")
    assert len(line) < 200  # the value is shown cut, not whole
    ledger = TwinLedger.open(url)
    try:
        started = start_experiment(ledger, read_experiment_file(file), started_by="test")
    finally:
        ledger.close()
    resume = ["experiment", "resume", str(started.id), "--scheduler", scheduler]
    refused_cli(url, resume, "scheduler")


@pytest.mark.parametrize(
    "text",
    [*(text for text in BAD_TEXTS if "\t" not in text), "x" * 10_000],  # a tab: as runs'
    ids=lambda text: repr(text)[:24],
)
@pytest.mark.parametrize("command", ["experiments", "twins"])
def test_list_status_filters_refuse_control_characters(
    store: tuple[str, str], command: str, text: str
) -> None:
    """`runs --status` refused them; `experiments --status` and `twins --status` passed them
    to the database (a lone surrogate: `unexpected UnicodeEncodeError`, exit 1)."""
    url, _ = store
    refused_cli(url, [command, "--status", text], "status")


def test_an_experiment_of_a_pattern_for_another_body_is_refused(
    store: tuple[str, str], tmp_path: Path
) -> None:
    url, twin_id = store
    file = tmp_path / "experiment.toml"
    text = EXPERIMENT.format(name='"x"', base="").replace('body = "mars"', f'twin = "{twin_id}"')
    file.write_text(text.replace("mars_terraform", "venus_industrial"))
    refused_cli(url, ["experiment", "run", str(file)], "pattern")
    file.write_text(EXPERIMENT.format(name='"x"', base="").replace("mars_terraform", "titan_fuel"))
    refused_cli(url, ["experiment", "run", str(file)], "pattern")


# --- command-line flags -----------------------------------------------------------------------


@pytest.mark.parametrize("text", BAD_INTEGERS, ids=lambda text: repr(text)[:24])
@pytest.mark.parametrize(
    ("flag", "field"),
    [
        ("--budget", "budget_cents"),
        ("--years", "duration_years"),
        ("--seed", "seed"),
        ("--tech-level", "tech_level"),
        ("--chunk", "chunk"),
    ],
)
def test_run_integer_flags_take_ascii_digits_only(
    store: tuple[str, str], flag: str, field: str, text: str
) -> None:
    url, twin_id = store
    refused_cli(url, ["run", twin_id, flag, text], field)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["expire", "--batch", "\u0661"], "batch"),
        (["experiment", "run", "x.toml", "--workers", "\u00b2"], "workers"),
        (["projections", "run", "--poll", "nan"], "poll"),
        (["projections", "run", "--poll", "inf"], "poll"),
        (["projections", "run", "--poll", "\u0661"], "poll"),
        (["twins", "extend", "{twin}", "--by", "\u0661d"], "by"),
        (["clone", "mars", "--expires-in", "\u0661\u0662d"], "expires_in"),
        (["clone", "mars", "--expires-in", "1_0d"], "expires_in"),
        (["clone", "mars", "--expires-in", "9" * 5000 + "d"], "expires_in"),
        (["clone", "mars", "--expires-in", "nand"], "expires_in"),
        (["replay", "{twin}", "--to-year", "\u2460"], "to_year"),
        (["results", "{twin}", "--from-year", "\u00b2"], "from_year"),
        (["run", "{twin}", "--priority", f"high{NUL}"], "priority"),
        (["run", "{twin}", "--pattern", f"custom{NUL}"], "pattern"),
        (["run", "{twin}", "--param", "spend_scale=\u0661"], "pattern_params.spend_scale"),
        (["run", "{twin}", "--param", "spend_scale=1_0"], "pattern_params.spend_scale"),
        (["run", "{twin}", "--param", "spend_scale=nan"], "pattern_params.spend_scale"),
        (["run", "{twin}", "--param", "spend_scale=inf"], "pattern_params.spend_scale"),
        (["run", "{twin}", "--param", "spend_scale=-inf"], "pattern_params.spend_scale"),
        (["run", "{twin}", "--param", "spend_scale=1e308"], "pattern_params.spend_scale"),
        (["run", "{twin}", "--param", "spend_scale=1e400"], "pattern_params.spend_scale"),
        (["run", "{twin}", "--param", f"spend{NUL}=1"], "pattern_params"),
        (["run", "{twin}", "--param", f"{SURROGATE}=1"], "pattern_params"),
        (["run", "{twin}", "--pattern", "venus_industrial"], "pattern"),
        (["run", "{twin}", "--pattern", "europa_ocean"], "pattern"),
        (["clone", "mars", "--name", ""], "name"),
        (["clone", "mars", "--name", "   "], "name"),
        (["delete", "{twin}", "--reason", f"gone{NUL}"], "reason"),
        (["delete", "{twin}", "--by", f"me{ESC}"], "by"),
        (["twin", "not-a-uuid"], "twin_id"),
        (["twin", "x" * 10_000], "twin_id"),
        (
            [
                "twin",
                "\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661-1111-1111-1111-111111111111",
            ],
            "twin_id",
        ),
        (["twin", f"{NUL}"], "twin_id"),
        (["execute", "garbage"], "run_id"),
        (
            [
                "cancel",
                "\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661-1111-1111-1111-111111111111",
            ],
            "run_id",
        ),
        (["show-run", "garbage"], "run_id"),
        (["run", "not-a-uuid"], "twin_id"),
    ],
    ids=lambda value: repr(value)[:40] if isinstance(value, list) else str(value),
)
def test_hostile_flags_and_ids(store: tuple[str, str], args: list[str], field: str) -> None:
    url, twin_id = store
    refused_cli(url, [arg.replace("{twin}", twin_id) for arg in args], field)


@pytest.mark.parametrize("text", BAD_TEXTS)
@pytest.mark.parametrize("flag", ["--name", "--description", "--created-by"])
def test_clone_text_flags_refuse_control_characters(
    store: tuple[str, str], flag: str, text: str
) -> None:
    url, _ = store
    refused_cli(url, ["clone", "mars", flag, text], flag.removeprefix("--").replace("-", "_"))


def test_clone_without_name_takes_the_body_name(store: tuple[str, str]) -> None:
    url, _ = store
    result = runner.invoke(app, ["--db", url, "clone", "venus"])
    assert result.exit_code == 0, result.stderr
    assert "Venus" in result.stdout


# --- the Python API -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", BAD_TEXTS)
@pytest.mark.parametrize("field", ["name", "description", "created_by"])
def test_api_clone_refuses_control_characters(
    store: tuple[str, str], field: str, text: str
) -> None:
    url, _ = store
    arguments: dict[str, Any] = {"name": "X", "body": "mars", field: text}
    refused_api(url, field, lambda ledger: ledger.clone_twin(**arguments))


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({f"k{NUL}": 1}, "simulation_parameters"),
        ({SURROGATE: 1}, "simulation_parameters"),
        ({"k": f"v{NUL}"}, "simulation_parameters.k"),
        ({"k": float("nan")}, "simulation_parameters.k"),
        ({"k": float("inf")}, "simulation_parameters.k"),
        ({"k": 2**70}, "simulation_parameters"),
        ({"k": [[[[1]]]]}, "simulation_parameters.k"),
    ],
)
def test_api_clone_refuses_hostile_simulation_parameters(
    store: tuple[str, str], parameters: dict[str, Any], field: str
) -> None:
    url, _ = store
    refused_api(
        url,
        field,
        lambda ledger: ledger.clone_twin(name="X", body="mars", simulation_parameters=parameters),
    )


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"pattern_params": {f"spend_scale{NUL}": 1.0}}, "pattern_params"),
        ({"pattern_params": {"spend_scale": float("inf")}}, "pattern_params.spend_scale"),
        ({"pattern_params": {"spend_scale": -1e308}}, "pattern_params.spend_scale"),
        ({"initiated_by": f"me{SURROGATE}"}, "initiated_by"),
        ({"pattern": "venus_industrial"}, "pattern"),
        ({"budget_cents": 2**70}, "budget_cents"),
        ({"seed": 2**64}, "seed"),
    ],
)
def test_api_queue_refuses_hostile_inputs(
    store: tuple[str, str], overrides: dict[str, Any], field: str
) -> None:
    url, twin_id = store
    arguments: dict[str, Any] = {
        "pattern": "mars_terraform",
        "duration_years": 2,
        "budget_cents": BUDGET,
    }
    arguments.update(overrides)
    refused_api(url, field, lambda ledger: ledger.queue_run(twin_id, **arguments))


@pytest.mark.parametrize("text", BAD_TEXTS)
def test_api_cancel_and_delete_refuse_control_characters(store: tuple[str, str], text: str) -> None:
    url, twin_id = store
    refused_api(url, "by", lambda ledger: ledger.delete_twin(twin_id, by=text))
    refused_api(url, "reason", lambda ledger: ledger.delete_twin(twin_id, reason=text))
    ledger = TwinLedger.open(url)
    try:
        run_id = ledger.queue_run(
            twin_id, pattern="mars_terraform", duration_years=2, budget_cents=BUDGET
        )
    finally:
        ledger.close()
    refused_api(url, "by", lambda ledger: ledger.cancel_run(run_id, by=text))
    refused_api(url, "reason", lambda ledger: ledger.cancel_run(run_id, reason=text))


def test_api_run_experiment_refuses_a_misfit_pattern(
    store: tuple[str, str], tmp_path: Path
) -> None:
    url, twin_id = store
    file = tmp_path / "experiment.toml"
    text = EXPERIMENT.format(name='"x"', base="").replace('body = "mars"', f'twin = "{twin_id}"')
    file.write_text(text.replace("mars_terraform", "europa_ocean"))
    spec = read_experiment_file(file)
    refused_api(url, "pattern", lambda ledger: run_experiment(ledger, spec))


def test_a_pattern_runs_on_a_twin_of_its_type(store: tuple[str, str]) -> None:
    """``clone --type`` chooses the simulation type; custom runs on any twin."""
    url, twin_id = store
    ledger = TwinLedger.open(url)
    try:
        earth = ledger.clone_twin(body="earth", simulation_type="industrial")
        assert ledger.get_twin(earth).name == "Earth"
        ledger.queue_run(earth, pattern="venus_industrial", duration_years=2, budget_cents=BUDGET)
        spec = valid_spec()
        ledger.queue_run(
            twin_id, pattern="custom", duration_years=2, budget_cents=BUDGET, custom_spec=spec
        )
    finally:
        ledger.close()


# --- properties ---------------------------------------------------------------------------------

CONTROL = st.one_of(
    st.characters(min_codepoint=0, max_codepoint=0x1F),
    st.characters(min_codepoint=0x7F, max_codepoint=0x9F),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=()),
)


def clone_request(**fields: Any) -> dict[str, Any]:
    return {"body": "mars", "name": "X", "expires_at": datetime(2100, 1, 1, tzinfo=UTC), **fields}


@settings(max_examples=200, deadline=None)
@given(before=st.text(max_size=20), bad=CONTROL, after=st.text(max_size=20))
def test_any_text_with_a_control_character_or_lone_surrogate_is_refused(
    before: str, bad: str, after: str
) -> None:
    text = before + bad + after
    for field in ("name", "created_by"):
        with pytest.raises(ValidationError) as caught:
            validate(CloneTwin, clone_request(**{field: text}))
        assert caught.value.field == field
    with pytest.raises(ValidationError) as caught:
        validate(CloneTwin, clone_request(simulation_parameters={text: 1}))
    assert caught.value.field.startswith("simulation_parameters")


mapper = MsgspecMapper(transcoder=NullTranscoder())


@settings(max_examples=200, deadline=None)
@given(name=st.text(min_size=1, max_size=200))
def test_any_accepted_name_round_trips_through_the_codec(name: str) -> None:
    from domain.catalog import CATALOG

    try:
        request = validate(CloneTwin, clone_request(name=name))
    except ValidationError:
        return
    assert request.name == name.strip()
    twin = DigitalTwin.clone(
        name=request.name,
        description="",
        source_body="mars",
        solar_system="Sol",
        created_by="test",
        simulation_type=SimulationType.TERRAFORMING,
        state=CATALOG["mars"].state,
        simulation_parameters={},
        expires_at=datetime(2100, 1, 1, tzinfo=UTC),
    )
    for event in twin.collect_events():
        stored = mapper.to_stored_event(event)
        assert b"\\u0000" not in stored.state
        stored.state.decode("utf-8")  # valid UTF-8: PostgreSQL and SQLite take it
        assert mapper.to_domain_event(stored) == event


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=12))
def test_integers_are_ascii_digits_with_an_optional_minus(text: str) -> None:
    try:
        value = parse_int(text, "budget_cents")
    except ValidationError as error:
        assert error.field == "budget_cents"
        return
    assert text.lstrip("-").isascii() and text.lstrip("-").isdigit()
    assert value == int(text)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=12), st.floats().map(repr), st.integers().map(str)))
def test_numbers_are_ascii_and_finite(text: str) -> None:
    try:
        value = parse_number(text, "pattern_params.x")
    except ValidationError as error:
        assert error.field == "pattern_params.x"
        return
    assert text.isascii() and "_" not in text and text.strip() == text
    assert float(value) == float(text) and abs(float(value)) < float("inf")


@settings(max_examples=200, deadline=None)
@given(pressure=st.floats(allow_nan=True, allow_infinity=True))
def test_body_pressure_is_accepted_only_within_its_physical_range(pressure: float) -> None:
    from infrastructure.inputs import BodyFile

    body = changed(valid_body(), ("state", "atmosphere", "surface_pressure_kpa"), 0.0)
    body["state"]["atmosphere"]["surface_pressure_kpa"] = pressure
    try:
        validate(BodyFile, body)
    except ValidationError as error:
        assert error.field == "state.atmosphere.surface_pressure_kpa"
        assert not 0 <= pressure <= 1e6
        return
    assert 0 <= pressure <= 1e6


# --- memory ------------------------------------------------------------------------------------


def test_a_body_file_at_the_limit_is_read_and_one_byte_over_is_refused(tmp_path: Path) -> None:
    from infrastructure.inputs import read_input_file

    file = tmp_path / "body.json"
    file.write_bytes(b" " * MAX_BODY_FILE_BYTES)
    assert len(read_input_file(file, "from_file")) == MAX_BODY_FILE_BYTES
    file.write_bytes(b" " * (MAX_BODY_FILE_BYTES + 1))
    with pytest.raises(ValidationError, match="limit"):
        read_input_file(file, "from_file")


# --- the codec: the last guard --------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_an_event_holding_a_non_finite_number_is_never_written(
    store: tuple[str, str], bad: float
) -> None:
    """Even past validation (a domain bug), NaN never reaches the log as null."""
    import msgspec

    from domain.catalog import CATALOG
    from infrastructure.codec import NonFiniteNumber

    url, _ = store
    state = CATALOG["mars"].state
    broken = msgspec.structs.replace(
        state,
        atmosphere=msgspec.structs.replace(state.atmosphere, surface_pressure_kpa=bad),
    )
    twin = DigitalTwin.clone(
        name="Broken",
        description="",
        source_body="mars",
        solar_system="Sol",
        created_by="test",
        simulation_type=SimulationType.TERRAFORMING,
        state=broken,
        simulation_parameters={},
        expires_at=datetime(2100, 1, 1, tzinfo=UTC),
    )
    before = stored_events(url)
    ledger = TwinLedger.open(url)
    try:
        with pytest.raises(NonFiniteNumber, match="surface_pressure_kpa"):
            ledger.save_and_notify(twin)
    finally:
        ledger.close()
    assert stored_events(url) == before


# --- ranges: no valid input overflows the engine ------------------------------------------------


def within(low: float, high: float) -> st.SearchStrategy[float]:
    """Values across [low, high], corners included, spread over the orders of magnitude."""
    corners = st.sampled_from([low, high])
    if low > 0 and high / low > 1e3:
        import math

        spread = st.floats(math.log10(low), math.log10(high)).map(lambda e: min(high, 10**e))
    else:
        spread = st.floats(low, high)
    return st.one_of(corners, spread)


bodies = st.fixed_dictionaries(
    {
        "p": within(0, 1e6),
        "t": within(1, 1e4),
        "mass": within(1e15, 1e28),
        "r": within(1, 2e5),
        "g": within(1e-3, 1000),
        "flux": within(0, 1e7),
        "water": within(0, 1e26),
        "bio": within(0, 1e20),
        "albedo": within(0, 1),
        "co2": st.one_of(st.sampled_from([0.0, 100.0]), st.floats(0, 100)),  # the rest N2
    }
)


# The case a random search once found (fixed in the engine, docs/simulation.md): a pressure of
# 2.2e-308 kPa under the custom spec's +1000 kPa a year, whose scale factor overflowed to inf
# and turned the CO2 share NaN in year 1. Kept as an explicit example; the search stays random.
TINY_PRESSURE_BODY = {
    "p": 2.2250738585072014e-308,
    "t": 1.0,
    "mass": 1e15,
    "r": 1.0,
    "g": 1.0,
    "flux": 0.0,
    "water": 0.0,
    "bio": 0.0,
    "albedo": 0.0,
    "co2": 50.0,
}


@settings(max_examples=25, deadline=None)
@example(c=TINY_PRESSURE_BODY, pattern="custom+", spend=0.1, tech=1)
@example(c={**TINY_PRESSURE_BODY, "p": 5e-324}, pattern="custom+", spend=0.1, tech=1)
@example(c={**TINY_PRESSURE_BODY, "p": 1e-306}, pattern="custom-", spend=0.1, tech=1)
@given(
    c=bodies,
    pattern=st.sampled_from(
        ["mars_terraform", "venus_industrial", "titan_fuel", "europa_ocean", "custom+", "custom-"]
    ),
    spend=st.sampled_from([0.1, 10.0]),
    tech=st.sampled_from([1, 10]),
)
def test_no_valid_body_overflows_the_engine(
    c: dict[str, float], pattern: str, spend: float, tech: int
) -> None:
    import msgspec

    from domain.engine import RunInputs, Simulation
    from domain.values import Pattern, RunParameters
    from infrastructure.codec import encode_finite
    from infrastructure.inputs import BodyFile

    body = valid_body()
    body["state"] = {
        "atmosphere": {
            "surface_pressure_kpa": c["p"],
            "mean_temperature_k": c["t"],
            "composition_pct": {"CO2": c["co2"], "N2": 100.0 - c["co2"]},
        },
        "hydrosphere": {
            "water_ice_kg": c["water"],
            "liquid_water_kg": c["water"],
            "other_liquids_kg": c["water"],
        },
        "geosphere": {
            "mass_kg": c["mass"],
            "mean_radius_km": c["r"],
            "surface_gravity_m_s2": c["g"],
            "bond_albedo": c["albedo"],
            "solar_flux_w_m2": c["flux"],
        },
        "biosphere": {"biomass_kg": c["bio"]},
    }
    state = validate(BodyFile, body).body_state()
    sign = {"custom+": 1, "custom-": -1}.get(pattern)
    parameters = RunParameters(
        budget_cents=2**62, tech_level=tech, pattern_params={"spend_scale": spend}
    )
    if sign is not None:  # the custom spec's largest allowed changes, up or down
        pattern = "custom"
        spec = {
            "name": "extreme",
            "annual_cost_cents": 2**62,
            "temperature_change_k": 50.0 * sign,
            "pressure_change_kpa": 1000.0 * sign,
            "gas_change_pct": {"CO2": 100.0 * sign, "H2O": 100.0 * sign},
            "liquid_water_change_kg": 1e22 * sign,
            "biomass_growth_rate": 10.0 if sign > 0 else 0.0,
        }
        request = validate(
            QueueRun,
            {"pattern": "custom", "duration_years": 60, "budget_cents": 2**62, "custom_spec": spec},
        )
        parameters = request.run_parameters()
    simulation = Simulation(
        RunInputs(
            state=state, pattern=Pattern(pattern), duration_years=60, parameters=parameters, seed=1
        )
    )
    while simulation.year < 60:
        encode_finite(msgspec.to_builtins(simulation.step()))  # raises on NaN or inf
    encode_finite(msgspec.to_builtins(simulation.summary()))


# --- archives (import) --------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["/dev/zero", "/dev/urandom", "fifo", "directory", "missing"])
def test_import_refuses_what_is_not_a_regular_file(
    store: tuple[str, str], special_files: dict[str, str], case: str
) -> None:
    url, _ = store
    refused_cli(url, ["import", special_files[case]], "file")


@pytest.mark.parametrize("bad", [NUL, ESC, C1])
def test_import_refuses_an_archive_with_a_control_character_in_an_event(
    store: tuple[str, str], tmp_path: Path, other_database_url: str, bad: str
) -> None:
    """An archive is checked like every other input: a crafted one cannot bring a NUL in."""
    import hashlib

    import msgspec

    url, twin_id = store
    archive = tmp_path / "twin.jsonl"
    result = runner.invoke(app, ["--db", url, "archive", "--twin", twin_id, "-o", str(archive)])
    assert result.exit_code == 0, result.stderr
    header, *body, trailer = archive.read_bytes().splitlines(keepends=True)
    first = msgspec.json.decode(body[0])
    state = msgspec.json.decode(first["state"])
    state["name"] = f"Mars{bad}A"
    first["state"] = msgspec.json.encode(state).decode()
    body[0] = msgspec.json.encode(first) + b"\n"
    end = msgspec.json.decode(trailer)
    end["sha256"] = hashlib.sha256(b"".join(body)).hexdigest()
    archive.write_bytes(header + b"".join(body) + msgspec.json.encode(end) + b"\n")
    TwinLedger.open(other_database_url).close()
    refused_cli(other_database_url, ["import", str(archive)], "file")


@pytest.mark.parametrize("text", [f"me{NUL}", f"me{SURROGATE}", "", "\n"])
def test_api_run_experiment_refuses_a_bad_started_by(
    store: tuple[str, str], tmp_path: Path, text: str
) -> None:
    url, _ = store
    file = tmp_path / "experiment.toml"
    file.write_text(EXPERIMENT.format(name='"x"', base=""))
    spec = read_experiment_file(file)
    refused_api(url, "started_by", lambda ledger: run_experiment(ledger, spec, started_by=text))


def test_docs_list_every_bounded_field() -> None:
    """docs/validation.md gives the range of every number of a body and a custom spec."""
    from infrastructure.inputs import (
        AtmosphereIn,
        BiosphereIn,
        CustomSpecIn,
        GeosphereIn,
        HydrosphereIn,
    )

    text = (Path(__file__).parent.parent / "docs" / "validation.md").read_text()
    for model in (AtmosphereIn, HydrosphereIn, GeosphereIn, BiosphereIn, CustomSpecIn):
        for name in model.model_fields:
            assert name in text, f"{model.__name__}.{name} is missing from docs/validation.md"
