"""The command line as a user meets it: the demo, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infrastructure.application import TwinLedger
from infrastructure.cli import app

runner = CliRunner()


def events_in(db: str) -> int:
    ledger = TwinLedger.open(db)
    try:
        return ledger.event_count()
    finally:
        ledger.close()


def twinledger(db: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--db", db, *args])
    return result.exit_code, result.stdout, result.stderr


def test_demo_clones_mars_runs_and_prints_a_summary(database_url: str) -> None:
    code, out, err = twinledger(database_url, "demo", "--years", "20")
    assert code == 0, err
    assert "cloned Mars into twin" in out
    assert "completed" in out
    assert "20/20 years" in out
    assert "sha256:" in out
    assert events_in(database_url) > 20


def test_clone_then_run_from_the_command_line(tmp_path: Path) -> None:
    db = str(tmp_path / "cli.db")
    code, out, err = twinledger(db, "clone", "titan", "--name", "Titan A", "--expires-in", "12h")
    assert code == 0, err
    twin_id = next(
        line.split()[-1] for line in out.splitlines() if line.strip().startswith("twin ")
    )
    code, out, err = twinledger(
        db, "run", twin_id, "--pattern", "titan_fuel", "--years", "12", "--seed", "5"
    )
    assert code == 0, err
    assert "completed" in out and "12/12 years" in out


def one_line_error(db: str, *args: str, field: str) -> None:
    before = events_in(db)
    code, out, err = twinledger(db, *args)
    assert code == 2, (out, err)
    assert "Traceback" not in err
    assert field in err, err
    assert events_in(db) == before


@pytest.fixture
def db_with_twin(tmp_path: Path) -> tuple[str, str]:
    db = str(tmp_path / "cli.db")
    ledger = TwinLedger.open(db)
    twin_id = str(ledger.clone_twin(name="Mars A", body="mars"))
    ledger.close()
    return db, twin_id


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--pattern", "jupiter"], "pattern"),
        (["--years", "0"], "duration_years"),
        (["--years", "1001"], "duration_years"),
        (["--budget", "-5"], "budget_cents"),
        (["--budget", "12.50"], "budget_cents"),
        (["--budget", "lots"], "budget_cents"),
        (["--seed", "-1"], "seed"),
        (["--param", "mirrors"], "param"),
    ],
)
def test_bad_run_options(db_with_twin: tuple[str, str], args: list[str], field: str) -> None:
    db, twin_id = db_with_twin
    one_line_error(db, "run", twin_id, *args, field=field)


def test_bad_clone_inputs(db_with_twin: tuple[str, str], tmp_path: Path) -> None:
    db, _ = db_with_twin
    one_line_error(db, "clone", "pluto", field="body")
    one_line_error(db, "clone", "mars", "--name", "bad\x01name", field="name")
    one_line_error(db, "clone", "mars", "--expires-in", "-3d", field="expires_in")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    one_line_error(db, "clone", "--from-file", str(broken), "--name", "X", field="from_file")
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"pad": "x" * 100_000}))
    one_line_error(db, "clone", "--from-file", str(big), "--name", "X", field="from_file")


def test_unknown_ids(db_with_twin: tuple[str, str]) -> None:
    db, _ = db_with_twin
    missing = "00000000-0000-4000-8000-000000000000"
    one_line_error(db, "run", missing, field="twin_id")
    one_line_error(db, "execute", missing, field="run_id")
    one_line_error(db, "cancel", missing, field="run_id")
    one_line_error(db, "twin", "garbage", field="twin_id")


def test_money_is_printed_from_integer_cents(db_with_twin: tuple[str, str]) -> None:
    db, twin_id = db_with_twin
    code, out, err = twinledger(db, "run", twin_id, "--years", "3", "--budget", "123456789")
    assert code == 0, err
    assert "1,234,567.89 GCC" in out


def test_twin_lifecycle_from_the_command_line(db_with_twin: tuple[str, str]) -> None:
    db, twin_id = db_with_twin
    code, out, err = twinledger(db, "twins", "extend", twin_id, "--by", "10d")
    assert code == 0, err
    assert "now expires at" in out
    one_line_error(db, "twins", "extend", twin_id, "--by", "soon", field="by")
    code, out, err = twinledger(db, "expire", "--now", "2999-01-01T00:00:00Z")
    assert code == 0, err
    assert "expired 1 twins" in out
    code, out, err = twinledger(db, "expire", "--now", "2999-01-01T00:00:00Z")
    assert "expired 0 twins" in out  # idempotent
    code, out, err = twinledger(db, "twins", "--format", "json")
    assert code == 0 and json.loads(out)[0]["status"] == "deleted"
    code, out, err = twinledger(
        db, "retention", "apply", "--dry-run", "--now", "2999-06-01T00:00:00Z"
    )
    assert code == 0, err
    assert (
        "would remove 0 simulation_results rows, 0 simulation_runs rows, 1 digital_twins rows"
        in out
    )
    code, out, err = twinledger(db, "retention", "apply", "--now", "2999-06-01T00:00:00Z")
    assert "removed 0 simulation_results rows, 0 simulation_runs rows, 1 digital_twins rows" in out
    code, out, err = twinledger(db, "twins", "--format", "json")
    assert json.loads(out) == []
    one_line_error(db, "expire", "--now", "yesterday", field="now")


def test_text_prints_as_given_never_as_rich_markup(database_url: str, tmp_path: Path) -> None:
    """Names, file names and patterns in brackets print verbatim: rich markup would swallow
    `[red]`, `[mars_terraform]` or an experiment's `[budget=..., tech_level=3]`."""
    name = "Mars [red]x[/] [bold]"
    code, twin, err = twinledger(database_url, "clone", "mars", "--name", name, "-q")
    assert code == 0, err
    twin = twin.strip()
    for args in (["twin", twin], ["twins"]):
        code, out, err = twinledger(database_url, *args)
        assert code == 0 and name in out, out + err
    code, out, err = twinledger(
        database_url, "run", twin, "--years", "3", "--budget", "1000000000000", "-q"
    )
    assert code == 0, err
    assert "[mars_terraform]" in err  # the progress line
    archive = tmp_path / "run [red]1.jsonl"
    code, out, err = twinledger(database_url, "archive", out.strip(), "-o", str(archive))
    assert code == 0 and f"to {archive}" in out, out + err
    spec = tmp_path / "spec.toml"
    spec.write_text(
        'name = "search [bold]"\nbody = "mars"\npattern = "mars_terraform"\nyears = 3\n'
        "master_seed = 1\nsamples = 1\nmax_iterations = 1\n"
        '[objective]\nkind = "maximize_habitability"\n'
        "[base]\nbudget_cents = 1000000000000\n[space]\ntech_level = [3, 6]\n"
    )
    code, out, err = twinledger(database_url, "experiment", "run", str(spec))
    assert code == 0, err
    assert "[tech_level=3]" in out and "search [bold]" in out, out
