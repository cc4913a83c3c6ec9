"""The CLI for scripts: --format json parses, -q prints ids alone, a piped table never cuts an
id or a digest, --db is accepted after the subcommand; the example body file clones."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infrastructure.cli import app
from infrastructure.cli.base import hoist_db

runner = CliRunner()
EXAMPLE_BODY = Path(__file__).parent.parent / "docs" / "examples" / "body.json"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def cli(*args: str, env: dict[str, str] | None = None) -> str:
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result.stdout


def ids_only(text: str) -> list[str]:
    lines = text.splitlines()
    assert lines and all(UUID.match(line) for line in lines), text
    return lines


def test_the_example_body_file_clones_and_runs(database_url: str) -> None:
    twin = json.loads(
        cli(
            "clone",
            "--from-file",
            str(EXAMPLE_BODY),
            "--name",
            "Ceres A",
            "--format",
            "json",
            "--db",
            database_url,
        )
    )
    assert twin["source_body"] == "ceres" and twin["status"] == "ready"
    assert twin["state"]["geosphere"]["mass_kg"] == 9.38e20
    run = json.loads(
        cli(
            "run",
            twin["id"],
            "--years",
            "3",
            "--seed",
            "2",
            "--format",
            "json",
            "--db",
            database_url,
        )
    )
    assert run["status"] == "completed" and run["source_body"] == "ceres"


def test_records_print_as_json_or_as_their_id_alone(database_url: str) -> None:
    db = ["--db", database_url]
    [twin_id] = ids_only(cli(*db, "clone", "mars", "--name", "Mars A", "-q"))
    twin = json.loads(cli(*db, "twin", twin_id, "--format", "json"))
    assert twin["id"] == twin_id and twin["name"] == "Mars A"
    assert ids_only(cli(*db, "twin", twin_id, "-q")) == [twin_id]

    [queued_id] = ids_only(cli(*db, "queue", twin_id, "--years", "4", "--seed", "1"))
    queued = json.loads(cli(*db, "queue", twin_id, "--years", "4", "--format", "json"))
    assert queued["status"] == "queued" and queued["budget_cents"] == 1_000_000_000_000
    [run_id] = ids_only(cli(*db, "execute", queued_id, "-q"))
    assert run_id == queued_id

    run = json.loads(cli(*db, "run", twin_id, "--years", "5", "--seed", "9", "--format", "json"))
    assert run["status"] == "completed" and run["current_year"] == 5
    assert isinstance(run["total_spend_cents"], int) and DIGEST.fullmatch(run["result_digest"])
    detail = json.loads(cli(*db, "show-run", run["id"], "--format", "json"))
    assert detail.pop("forked_from") is None
    assert detail.pop("lineage")["forks"] == []
    assert detail == run  # show-run's JSON is the run's record plus its lineage
    assert ids_only(cli(*db, "show-run", run["id"], "-q")) == [run["id"]]
    assert ids_only(cli(*db, "run", twin_id, "--years", "2", "-q"))

    verdict = json.loads(cli(*db, "replay", run["id"], "--format", "json"))
    assert verdict["identical"] is True and verdict["digest"] == run["result_digest"]
    state = json.loads(cli(*db, "replay", run["id"], "--to-year", "3", "--format", "json"))
    assert state["year"] == 3 and isinstance(state["economic"]["balance_cents"], int)
    every = json.loads(cli(*db, "replay", "--all", "--format", "json"))
    assert {v["run_id"] for v in every} >= {run["id"], queued_id}

    listed = ids_only(cli(*db, "runs", "-q"))
    assert set(listed) >= {run["id"], queued_id, queued["id"]}
    assert ids_only(cli(*db, "twins", "-q")) == [twin_id]
    assert cli(*db, "experiments", "-q") == ""  # none: nothing printed, not a header
    assert json.loads(cli(*db, "twins", "extend", twin_id, "--format", "json"))["id"] == twin_id
    cancelled = json.loads(cli(*db, "cancel", queued["id"], "--format", "json"))
    assert cancelled["status"] == "cancelled"
    deleted = json.loads(cli(*db, "delete", twin_id, "--format", "json"))
    assert deleted["status"] == "deleted"

    report = json.loads(cli(*db, "projections", "status", "--format", "json"))
    assert {p["name"] for p in report["projections"]} >= {"twins", "runs", "results"}
    assert all(p["lag"] == 0 for p in report["projections"])

    bodies = json.loads(cli("bodies", "--format", "json"))
    assert "mars" in [b["key"] for b in bodies]
    assert "mars" in cli("bodies", "-q").split()


def test_search_from_the_command_line(database_url: str) -> None:
    db = ["--db", database_url]
    [twin_id] = ids_only(cli(*db, "clone", "mars", "-q"))
    low = ids_only(cli(*db, "run", twin_id, "--years", "3", "--tech-level", "2", "-q"))[0]
    high = ids_only(cli(*db, "run", twin_id, "--years", "3", "--tech-level", "9", "-q"))[0]
    queued = ids_only(cli(*db, "queue", twin_id, "--years", "3"))[0]
    found = cli(*db, "runs", "--where", "params.tech_level >= 5 and status = 'completed'", "-q")
    assert ids_only(found) == [high]
    ordered = cli(*db, "runs", "--order-by", "params.tech_level desc", "-q")
    assert ids_only(ordered) == [high, queued, low]
    rows = json.loads(cli(*db, "runs", "--where", "status != 'queued'", "--format", "json"))
    assert {r["id"] for r in rows} == {low, high}

    first = runner.invoke(app, [*db, "runs", "--limit", "2", "-q"])
    assert first.exit_code == 0 and len(ids_only(first.stdout)) == 2
    cursor = re.search(r"--cursor (\S+)", first.stderr)
    assert cursor, first.stderr
    rest = ids_only(cli(*db, "runs", "--limit", "2", "-q", "--cursor", cursor.group(1)))
    assert ids_only(first.stdout) + rest == [low, high, queued]

    for args, field in [
        (["--where", "status = 'x' ; DROP TABLE simulation_runs"], "where: unexpected"),
        (["--where", "summary.habitability > 0.3 and"], "where: expected"),
        (["--order-by", "nonsense"], "order_by: unknown field 'nonsense'"),
        (["--cursor", "garbage!"], "cursor:"),
        (["--limit", "0"], "limit:"),
        (["--status", "done\x00"], "status: control character"),
        (["--twin", "x" * 10_000], "twin:"),
    ]:
        result = runner.invoke(app, [*db, "runs", *args])
        assert result.exit_code == 2, (args, result.stdout)
        assert result.stderr.startswith(f"error: {field}"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_piped_tables_never_cut_ids_or_digests(database_url: str) -> None:
    db = ["--db", database_url]
    [twin_id] = ids_only(cli(*db, "clone", "mars", "-q"))
    run = json.loads(cli(*db, "run", twin_id, "--years", "2", "--format", "json"))
    narrow = {"COLUMNS": "30"}  # a narrow terminal's width must not apply to a pipe
    shown = cli(*db, "show-run", run["id"], env=narrow)
    assert run["id"] in shown and run["result_digest"] in shown and twin_id in shown
    listing = cli(*db, "runs", env=narrow)
    assert run["id"] in listing and twin_id in listing
    assert twin_id in cli(*db, "twins", env=narrow)
    assert twin_id in cli(*db, "twin", twin_id, env=narrow)


@pytest.mark.parametrize(
    "args",
    [
        ["twins", "--db", "{db}", "--format", "json"],
        ["twins", "--format", "json", "--db={db}"],
        ["--db", "{db}", "twins", "--format", "json"],
    ],
)
def test_db_is_accepted_before_or_after_the_subcommand(database_url: str, args: list[str]) -> None:
    cli("--db", database_url, "clone", "moon", "--name", "Moon A", "-q")
    out = cli(*(arg.replace("{db}", database_url) for arg in args))
    assert [t["name"] for t in json.loads(out)] == ["Moon A"]


def test_hoisting_db_leaves_other_arguments_alone() -> None:
    assert hoist_db(["runs", "--db", "x.db", "-q"]) == ["--db", "x.db", "runs", "-q"]
    assert hoist_db(["runs", "--db=x.db"]) == ["--db=x.db", "runs"]
    assert hoist_db(["runs", "--", "--db", "x"]) == ["runs", "--", "--db", "x"]
    assert hoist_db(["runs", "--db"]) == ["runs", "--db"]  # no value: click reports it


@pytest.mark.parametrize(
    "args",
    [
        ["show-run", "00000000-0000-4000-8000-000000000000", "--format", "xml"],
        ["twin", "00000000-0000-4000-8000-000000000000", "--format", "yaml"],
        ["bench", "--format", "csv"],
        ["queue", "00000000-0000-4000-8000-000000000000", "--format", "table"],
    ],
)
def test_an_unknown_format_is_refused_naming_format(tmp_path: Path, args: list[str]) -> None:
    result = runner.invoke(app, ["--db", str(tmp_path / "x.db"), *args])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: format:"), result.stderr


def test_reports_print_as_json(database_url: str, tmp_path: Path) -> None:
    db = ["--db", database_url]
    [twin_id] = ids_only(cli(*db, "clone", "mars", "-q"))
    [run_id] = ids_only(cli(*db, "run", twin_id, "--years", "2", "-q"))
    archive = tmp_path / "run.jsonl"
    written = json.loads(cli(*db, "archive", run_id, "-o", str(archive), "--format", "json"))
    assert written["events"] > 2 and written["file"] == str(archive)
    imported = json.loads(cli(*db, "import", str(archive), "--format", "json"))
    assert imported["events_written"] == 0 and imported["events_in_file"] == written["events"]
    expired = json.loads(cli(*db, "expire", "--now", "2999-01-01T00:00:00Z", "--format", "json"))
    assert expired["expired"] == 1
    kept = json.loads(
        cli(
            *db,
            "retention",
            "apply",
            "--dry-run",
            "--now",
            "2999-01-02T00:00:00Z",
            "--format",
            "json",
        )
    )
    assert kept["dry_run"] is True and isinstance(kept["results"], int)


def test_json_prints_in_one_layout_whichever_command(database_url: str) -> None:
    """`digest --format json` (and `prove`) printed compact JSON, every other command indented
    JSON: all now print through infrastructure/cli/base.py ``print_json`` (or the tables'
    equivalent), so a script or a person reads one layout."""
    db = ["--db", database_url]
    [twin_id] = ids_only(cli(*db, "clone", "mars", "-q"))
    [run_id] = ids_only(cli(*db, "run", twin_id, "--years", "2", "-q"))
    taken = cli(*db, "digest", "--format", "json")
    kept = json.loads(taken)["digest"]
    for printed in [
        taken,
        cli(*db, "prove", run_id, "--digest", kept),
        cli(*db, "twin", twin_id, "--format", "json"),
        cli(*db, "runs", "--format", "json"),
    ]:
        assert layout(printed) == layout(json.dumps(json.loads(printed), indent=2) + "\n")
    assert "\n  " in taken  # indented, not one line


def layout(text: str) -> list[tuple[int, str]]:
    """Each line's indentation and first character: JSON's layout, whatever writes numbers."""
    return [(len(line) - len(line.lstrip()), line.lstrip()[:1]) for line in text.split("\n")]
