"""Comparing runs (projections/compare.py and `twinledger compare`) on SQLite and PostgreSQL.

The first diverging year is checked against the runs' events (an independent path: the log,
not the read tables the comparison reads).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from domain.errors import NotFound, ValidationError
from infrastructure.cli import app
from infrastructure.service import Ledger
from projections.compare import Comparison, _first_divergence, compare_runs, fork_relations

runner = CliRunner()
BUDGET = 1_000_000_000_000


@pytest.fixture
def service(database_url: str) -> Iterator[Ledger]:
    with Ledger.open(database_url) as ledger:
        yield ledger


def finished(ledger: Ledger, twin_id: str, **options: Any) -> str:
    queued = ledger.queue_run(
        twin_id,
        pattern=options.pop("pattern", "mars_terraform"),
        years=options.pop("years", 12),
        budget_cents=options.pop("budget_cents", BUDGET),
        seed=options.pop("seed", 1),
        **options,
    )
    return ledger.execute_run(queued.id).id


def compare(ledger: Ledger, *run_ids: str) -> Comparison:
    ledger.catch_up()
    return compare_runs(ledger.projector.store, list(run_ids))


def first_divergence_from_events(ledger: Ledger, run_ids: list[str]) -> int | None:
    recorded = [list(ledger.application.recorded_years(run_id)) for run_id in run_ids]
    for year_results in zip(*recorded, strict=False):  # the years every run recorded
        plain = [msgspec.to_builtins(result) for result in year_results]
        if any(value != plain[0] for value in plain):
            return int(year_results[0].year)
    return None


def test_runs_with_the_same_inputs_do_not_diverge(service: Ledger) -> None:
    twin = service.clone_twin(name="Mars", body="mars").id
    a = finished(service, twin, years=15)
    b = finished(service, twin, years=15)
    comparison = compare(service, a, b)
    assert comparison.run_ids == [a, b]
    assert comparison.first_divergence is None
    assert comparison.common_years == 15
    assert comparison.differing_parameters == []
    digest = next(row for row in comparison.metrics if row.name == "result_digest")
    assert not digest.differs and digest.values[0].startswith("sha256:")
    assert [s.years for s in comparison.series] == [list(range(1, 16))] * 2


def test_the_first_diverging_year_and_the_differing_parameters(service: Ledger) -> None:
    twin = service.clone_twin(name="Mars", body="mars").id
    base = finished(service, twin, years=20, seed=3)
    other_seed = finished(service, twin, years=20, seed=4)
    more_tech = finished(service, twin, years=12, seed=3, tech_level=8)
    comparison = compare(service, base, other_seed, more_tech)

    assert comparison.differing_parameters == ["duration_years", "seed", "tech_level"]
    seeds = next(row for row in comparison.parameters if row.name == "seed")
    assert seeds.values == [3, 4, 3]
    assert comparison.common_years == 12

    expected = first_divergence_from_events(service, [base, other_seed, more_tech])
    assert expected is not None
    divergence = comparison.first_divergence
    assert divergence is not None and divergence.year == expected
    kind, _, key = divergence.field.partition(".")
    assert kind in ("economic", "environmental", "key_events")
    if kind != "key_events":  # the values named are the recorded ones, run by run
        series = {s.run_id: s for s in comparison.series}
        column = [getattr(series[run], kind)[key.split(".")[0]] for run in comparison.run_ids]
        if "." not in key:
            assert divergence.values == [values[expected - 1] for values in column]
        assert len(set(map(json.dumps, divergence.values))) > 1

    # The series are the recorded years, value for value.
    years = list(service.application.recorded_years(base))
    series = comparison.series[0]
    assert series.years == [y.year for y in years]
    assert series.environmental["temperature_k"] == [y.environment.temperature_k for y in years]
    assert series.economic["balance_cents"] == [y.economic.balance_cents for y in years]
    assert all(isinstance(v, int) for v in series.economic["spend_cents"])
    assert [e["name"] for e in series.key_events] == [e.name for y in years for e in y.key_events]


def test_a_queued_run_compares_over_no_common_years(service: Ledger) -> None:
    twin = service.clone_twin(name="Mars", body="mars").id
    done = finished(service, twin, years=5)
    queued = service.queue_run(twin, pattern="mars_terraform", years=5, budget_cents=BUDGET).id
    comparison = compare(service, done, queued)
    assert comparison.common_years == 0 and comparison.first_divergence is None
    status = next(row for row in comparison.metrics if row.name == "status")
    assert status.values == ["completed", "queued"] and status.differs
    assert comparison.series[1].years == []


def test_bad_run_lists_are_refused_naming_runs(service: Ledger) -> None:
    twin = service.clone_twin(name="Mars", body="mars").id
    run = finished(service, twin, years=3)
    before = service.event_count()
    store = service.projector.store
    for run_ids, message in [
        ([run], "give 2 to 6 run ids, not 1"),
        ([run] * 7, "give 2 to 6 run ids, not 7"),
        ([run, run.upper()], "is given twice"),
        ([run, "nope"], "'nope' is not a valid run id"),
        ([run, "x" * 10_000], "is not a valid run id"),
        ([run, "'; DROP TABLE simulation_runs; --"], "is not a valid run id"),
    ]:
        with pytest.raises(ValidationError) as caught:
            compare_runs(store, run_ids)
        assert caught.value.field == "runs" and message in caught.value.message
        assert len(str(caught.value)) < 300
    with pytest.raises(NotFound) as missing:
        compare_runs(store, [run, "00000000-0000-4000-8000-000000000000"])
    assert missing.value.field == "run_id"
    assert service.event_count() == before


def test_compare_from_the_command_line(service: Ledger, database_url: str) -> None:
    twin = service.clone_twin(name="Mars", body="mars").id
    a = finished(service, twin, years=8, seed=1)
    b = finished(service, twin, years=8, seed=2)
    result = runner.invoke(app, ["compare", a, b, "--db", database_url, "--format", "json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["run_ids"] == [a, b]
    assert data["differing_parameters"] == ["seed"]
    assert data["first_divergence"]["year"] == first_divergence_from_events(service, [a, b])
    assert len(data["series"][0]["years"]) == 8

    table = runner.invoke(app, ["--db", database_url, "compare", a, b])
    assert table.exit_code == 0, table.stderr
    assert f"run 1: {a}" in table.stdout and f"run 2: {b}" in table.stdout
    assert "* seed" in table.stdout and "first diverging year:" in table.stdout
    digests = [service.run(a).result_digest, service.run(b).result_digest]
    assert all(digest and digest in table.stdout for digest in digests)

    bad = runner.invoke(app, ["--db", database_url, "compare", a])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: runs:")


def forked(ledger: Ledger, parent: str, **changes: Any) -> str:
    return ledger.execute_run(ledger.fork_run(parent, **changes).id).id


def relations(forks: list[Any]) -> list[tuple[str, str, str, int, bool]]:
    return [
        (f["run_id"], f["ancestor_run_id"], f["parent_run_id"], f["at_year"], f["direct"])
        for f in forks
    ]


def test_the_comparison_says_which_run_is_a_fork_of_which(
    service: Ledger, database_url: str
) -> None:
    from test_http_api import client_for

    twin = service.clone_twin(name="Mars", body="mars").id
    root = finished(service, twin, years=12, seed=1)
    child = forked(service, root, at_year=5, tech_level=8)
    grandchild = forked(service, child, at_year=9, seed=7)
    other = finished(service, twin, years=12, seed=1)  # same inputs as root, no relation

    comparison = service.compare([grandchild, root, child, other])
    expected = [
        (grandchild, root, child, 5, False),
        (grandchild, child, child, 9, True),
        (child, root, root, 5, True),
    ]
    assert comparison.forks is not None
    assert relations([msgspec.to_builtins(f) for f in comparison.forks]) == expected
    assert service.compare([root, other]).forks == []
    pair = service.compare([root, child])
    assert pair.first_divergence is not None and pair.first_divergence.year > 5
    assert compare(service, root, child).forks is None  # read tables alone: not looked up

    shown = runner.invoke(
        app, ["--db", database_url, "compare", grandchild, root, child, "--format", "json"]
    )
    assert shown.exit_code == 0, shown.stderr
    assert relations(json.loads(shown.stdout)["forks"]) == expected
    table = runner.invoke(app, ["--db", database_url, "compare", root, child, grandchild])
    assert table.exit_code == 0, table.stderr
    assert "run 2 is a fork of run 1 after year 5, changing tech_level=8\n" in table.stdout
    assert "run 3 is a fork of run 2 after year 9" in table.stdout
    assert f"run 3 descends from run 1 (forked from {child}), sharing its years 1..5" in (
        table.stdout
    )
    plain = runner.invoke(app, ["--db", database_url, "compare", root, other])
    assert plain.exit_code == 0 and " fork " not in plain.stdout

    with client_for(database_url) as http:
        response = http.get("/api/v1/compare", params={"runs": f"{root},{child}"})
        assert response.status_code == 200, response.text
        assert relations(response.json()["forks"]) == [(child, root, root, 5, True)]


def test_a_fork_made_before_its_parents_fork_year_shares_only_that_much() -> None:
    root, child, grandchild = uuid4(), uuid4(), uuid4()
    lineages = {root: [], child: [(root, 10)], grandchild: [(root, 10), (child, 4)]}
    found = fork_relations([root, child, grandchild], lineages)
    assert [(f.run_id, f.ancestor_run_id, f.at_year, f.direct) for f in found] == [
        (str(child), str(root), 10, True),
        (str(grandchild), str(root), 4, False),
        (str(grandchild), str(child), 4, True),
    ]


# --- the divergence rule, as a property ---------------------------------------------------------

values = st.one_of(st.integers(-3, 3), st.sampled_from([0.5, 1.5]), st.text("ab", max_size=2))
records = st.fixed_dictionaries(
    {
        "economic": st.dictionaries(st.sampled_from(["spend_cents", "balance_cents"]), values),
        "environmental": st.dictionaries(
            st.sampled_from(["temperature_k", "composition_pct"]),
            values | st.dictionaries(st.sampled_from(["O2", "N2"]), values, max_size=2),
        ),
    },
    optional={"timeline": st.fixed_dictionaries({"key_events": st.lists(values, max_size=2)})},
)


@settings(max_examples=200, deadline=None)
@given(
    runs=st.integers(2, 4).flatmap(
        lambda n: st.lists(st.lists(records, min_size=0, max_size=5), min_size=n, max_size=n)
    )
)
def test_the_first_divergence_is_the_first_common_year_that_differs(
    runs: list[list[dict[str, Any]]],
) -> None:
    years = [{index + 1: record for index, record in enumerate(run)} for run in runs]
    common = min(len(run) for run in runs)
    divergence = _first_divergence(years, common)

    def same(year: int) -> bool:
        plain = [
            (
                r[year]["economic"],
                r[year]["environmental"],
                r[year].get("timeline", {}).get("key_events", []),
            )
            for r in years
        ]
        return all(p == plain[0] for p in plain)

    differing = [year for year in range(1, common + 1) if not same(year)]
    if not differing:
        assert divergence is None
        return
    assert divergence is not None and divergence.year == differing[0]
    assert len(divergence.values) == len(runs)
    assert any(value != divergence.values[0] for value in divergence.values)
