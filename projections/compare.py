"""Compare 2 to 6 runs: parameters side by side, summary metrics, the first diverging year, and
each run's per-year series (docs/queries.md, Compare).

Read from the read tables only (simulation_runs, simulation_results), in one snapshot. The first
diverging year is the first year, among the years every run has recorded, whose recorded
results (economic, environmental or key events) are not the same in every run; ``field`` names
the first value that differs there, and ``values`` gives it run by run. Runs that agree on every
common year have no divergence, whatever their lengths (``common_years`` says how far they
were compared).

``forks`` says which compared run descends from which (a fork, or a fork of a fork): the run's
fork lineage is in its RunQueued, not in the read tables, so the caller passes ``lineage``
(the service layer reads each run's RunQueued); without it ``forks`` is None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from domain.errors import NotFound, ValidationError
from projections.queries import plain
from projections.runs import SIMULATION_RUNS
from projections.store import Store

MIN_RUNS = 2
MAX_RUNS = 6
MAX_RUN_ID_CHARS = 100
METRICS = (  # summary metrics, in the order shown: money is integer cents
    "status",
    "current_year",
    "habitability_score",
    "timeline_efficiency",
    "resource_efficiency",
    "cost_efficiency",
    "total_spend_cents",
    "total_revenue_cents",
    "final_balance_cents",
    "result_digest",
)
SUCCESS_METRICS = ("timeline_efficiency", "resource_efficiency", "cost_efficiency")


@dataclass(frozen=True)
class Row:
    """One parameter or metric, run by run (in the order the runs were given)."""

    name: str
    values: list[Any]
    differs: bool


@dataclass(frozen=True)
class Divergence:
    year: int
    field: str  # e.g. environmental.temperature_k, economic.spend_cents, key_events
    values: list[Any]  # that field's value in each run


@dataclass(frozen=True)
class Series:
    """One run's per-year results, column by column (the shape charts want)."""

    run_id: str
    years: list[int]
    economic: dict[str, list[Any]]
    environmental: dict[str, list[Any]]
    key_events: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ForkRelation:
    """Compared run ``run_id`` descends from compared run ``ancestor_run_id``: its years
    1..at_year are the ancestor's. ``parent_run_id`` is the run it was forked from (the ancestor
    itself when ``direct``, else a fork in between, compared or not)."""

    run_id: str
    ancestor_run_id: str
    parent_run_id: str
    at_year: int
    direct: bool


@dataclass(frozen=True)
class Comparison:
    run_ids: list[str]
    parameters: list[Row]
    metrics: list[Row]
    common_years: int
    differing_parameters: list[str]
    first_divergence: Divergence | None
    series: list[Series]
    forks: list[ForkRelation] | None = None  # None: compared without ``lineage``


Lineage = Callable[[UUID], list[tuple[UUID, int]]]
"""A run's fork points, oldest first: (parent run id, fork year); [] for a run not forked."""


def parse_run_ids(run_ids: list[str], field_name: str = "runs") -> list[UUID]:
    """2 to 6 distinct run ids; anything else is refused naming ``field_name``."""
    if not MIN_RUNS <= len(run_ids) <= MAX_RUNS:
        raise ValidationError(
            field_name, f"give {MIN_RUNS} to {MAX_RUNS} run ids, not {len(run_ids)}"
        )
    keys: list[UUID] = []
    for text in run_ids:
        shown = text if len(text) <= MAX_RUN_ID_CHARS else text[:MAX_RUN_ID_CHARS] + "..."
        try:
            key = UUID(text.strip())
        except (ValueError, AttributeError):
            raise ValidationError(field_name, f"{shown!r} is not a valid run id") from None
        if key in keys:
            raise ValidationError(field_name, f"run {key} is given twice")
        keys.append(key)
    return keys


def compare_runs(
    store: Store, run_ids: list[str], field_name: str = "runs", lineage: Lineage | None = None
) -> Comparison:
    keys = parse_run_ids(run_ids, field_name)
    names = SIMULATION_RUNS.column_names
    kinds = SIMULATION_RUNS.kinds()
    marks = ", ".join(["%s"] * len(keys))
    ids = [store.uuid(key) for key in keys]
    with store.reading() as cursor:
        cursor.execute(
            store.sql(
                f"SELECT {', '.join(names)} FROM {{t}} WHERE id IN ({marks})",
                t=SIMULATION_RUNS.name,
            ),
            ids,
        )
        found = {}
        for values in cursor.fetchall():
            row = {n: plain(kinds[n], v) for n, v in zip(names, values, strict=True)}
            found[row["id"]] = row
        missing = next((key for key in keys if str(key) not in found), None)
        if missing is not None:
            raise NotFound("run_id", str(missing))
        cursor.execute(
            store.sql(
                "SELECT run_id, year, result_type, data FROM {t}"
                f" WHERE run_id IN ({marks}) ORDER BY run_id, year, result_type",
                t="simulation_results",
            ),
            ids,
        )
        results: dict[str, dict[int, dict[str, Any]]] = {str(key): {} for key in keys}
        for run_id, year, result_type, data in cursor.fetchall():
            results[plain("uuid", run_id)].setdefault(year, {})[result_type] = plain("json", data)
    runs = [found[str(key)] for key in keys]
    years = [results[str(key)] for key in keys]
    common = min(run["current_year"] for run in runs)
    parameters = _rows([_parameters(run) for run in runs])
    return Comparison(
        run_ids=[str(key) for key in keys],
        parameters=parameters,
        metrics=_rows([_metrics(run) for run in runs]),
        common_years=common,
        differing_parameters=[row.name for row in parameters if row.differs],
        first_divergence=_first_divergence(years, common),
        series=[_series(str(key), by_year) for key, by_year in zip(keys, years, strict=True)],
        forks=None if lineage is None else fork_relations(keys, {k: lineage(k) for k in keys}),
    )


def fork_relations(
    keys: list[UUID], lineages: dict[UUID, list[tuple[UUID, int]]]
) -> list[ForkRelation]:
    """Every (descendant, ancestor) pair among the compared runs, in the order they were given.

    A fork of a fork carries every fork point since its root run, oldest first; the years it
    shares with an ancestor end at the smallest fork year from the point that left that
    ancestor on (a fork made before its parent's own fork year shares only that much)."""
    compared = set(keys)
    relations = []
    for key in keys:
        points = lineages[key]
        for index, (parent, _) in enumerate(points):
            if parent in compared and parent != key:
                relations.append(
                    ForkRelation(
                        run_id=str(key),
                        ancestor_run_id=str(parent),
                        parent_run_id=str(points[-1][0]),
                        at_year=min(year for _, year in points[index:]),
                        direct=index == len(points) - 1,
                    )
                )
    return relations


def _parameters(run: dict[str, Any]) -> dict[str, Any]:
    parameters = run["parameters"] or {}
    flat: dict[str, Any] = {
        "twin": run["digital_twin_id"],
        "source_body": run["source_body"],
        "pattern": run["pattern"],
        "duration_years": run["duration_years"],
        "seed": run["seed"],
        "budget_cents": run["budget_cents"],
        "tech_level": parameters.get("tech_level"),
        "priority": parameters.get("priority"),
        "engine_version": run["engine_version"],
    }
    for name, value in sorted((parameters.get("pattern_params") or {}).items()):
        flat[f"pattern_params.{name}"] = value
    if parameters.get("custom_spec") is not None:
        flat["custom_spec"] = parameters["custom_spec"]
    return flat


def _metrics(run: dict[str, Any]) -> dict[str, Any]:
    success = ((run["results"] or {}).get("success_metrics")) or {}
    return {name: success.get(name) if name in SUCCESS_METRICS else run[name] for name in METRICS}


def _rows(per_run: list[dict[str, Any]]) -> list[Row]:
    names: list[str] = []
    for run in per_run:
        names.extend(name for name in run if name not in names)
    rows = []
    for name in names:
        values = [run.get(name) for run in per_run]
        rows.append(Row(name, values, any(value != values[0] for value in values)))
    return rows


def _first_difference(path: str, values: list[Any]) -> tuple[str, list[Any]] | None:
    """The first field (depth first, in key order) whose value is not the same in every run."""
    if all(value == values[0] for value in values):
        return None
    if all(isinstance(value, dict) for value in values):
        keys: list[str] = []
        for value in values:
            keys.extend(key for key in value if key not in keys)
        for key in keys:
            found = _first_difference(f"{path}.{key}", [value.get(key) for value in values])
            if found is not None:
                return found
    return path, values


def _first_divergence(years: list[dict[int, dict[str, Any]]], common: int) -> Divergence | None:
    for year in range(1, common + 1):
        recorded = [by_year.get(year, {}) for by_year in years]
        for result_type in ("economic", "environmental"):
            found = _first_difference(result_type, [r.get(result_type) for r in recorded])
            if found is not None:
                return Divergence(year, *found)
        events = [(r.get("timeline") or {}).get("key_events", []) for r in recorded]
        if any(value != events[0] for value in events):
            return Divergence(year, "key_events", events)
    return None


def _series(run_id: str, by_year: dict[int, dict[str, Any]]) -> Series:
    years = sorted(year for year, kinds in by_year.items() if "economic" in kinds)
    columns: dict[str, dict[str, list[Any]]] = {"economic": {}, "environmental": {}}
    for result_type, table in columns.items():
        for year in years:
            for key in by_year[year].get(result_type) or {}:
                table.setdefault(key, [])
        for key, column in table.items():
            column.extend((by_year[year].get(result_type) or {}).get(key) for year in years)
    events = [
        event
        for year in sorted(by_year)
        for event in (by_year[year].get("timeline") or {}).get("key_events", [])
    ]
    return Series(run_id, years, columns["economic"], columns["environmental"], events)
