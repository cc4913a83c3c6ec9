"""The reads the CLI makes, from the read tables only (never from the event log).

Rows come back as plain dicts: ids and timestamps as strings (ISO 8601, UTC), JSON columns
decoded from their canonical text (integers as int, other numbers as float), numbers as
numbers, so they print the same from SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from domain.errors import NotFound, ValidationError
from projections.canonical import decode
from projections.experiments import EXPERIMENT_ITERATIONS, EXPERIMENTS
from projections.results import RESULT_TYPES, SIMULATION_RESULTS
from projections.runs import SIMULATION_RUNS
from projections.store import Store
from projections.tables import Table
from projections.twins import DIGITAL_TWINS


def plain(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "uuid":
        return str(value)
    if kind == "timestamp":
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
        return moment.astimezone(UTC).isoformat(timespec="microseconds")
    if kind == "json":
        return decode(value) if isinstance(value, str | bytes) else value
    return value


def _select(
    store: Store, table: Table, where: list[tuple[str, Any]], order: str
) -> list[dict[str, Any]]:
    kinds = table.kinds()
    # JSON as its stored (canonical) text, not as the driver would decode it.
    cast = "::text" if store.postgres else ""
    names = ", ".join(
        f'"{c}"{cast}' if kinds[c] == "json" else f'"{c}"' for c in table.column_names
    )
    clause = " AND ".join(condition for condition, _ in where)
    statement = f"SELECT {names} FROM {{t}}" + (f" WHERE {clause}" if clause else "")
    statement += f" ORDER BY {order}"
    with store.reading() as cursor:
        cursor.execute(store.sql(statement, t=table.name), [value for _, value in where])
        rows = cursor.fetchall()
    return [
        {
            name: plain(kinds[name], value)
            for name, value in zip(table.column_names, row, strict=True)
        }
        for row in rows
    ]


def _uuid(field: str, text: str) -> UUID:
    try:
        return UUID(text.strip())
    except ValueError:
        raise ValidationError(field, f"{text!r} is not a valid id") from None


def twins(store: Store, *, status: str | None = None) -> list[dict[str, Any]]:
    where = [] if status is None else [("status = %s", status)]
    return _select(store, DIGITAL_TWINS, where, "created_at, id")


def runs(
    store: Store,
    *,
    twin: str | None = None,
    status: str | None = None,
    pattern: str | None = None,
) -> list[dict[str, Any]]:
    where: list[tuple[str, Any]] = []
    if twin is not None:
        where.append(("digital_twin_id = %s", store.uuid(_uuid("twin", twin))))
    if status is not None:
        where.append(("status = %s", status))
    if pattern is not None:
        where.append(("pattern = %s", pattern))
    return _select(store, SIMULATION_RUNS, where, "queued_at, id")


def results(
    store: Store,
    run_id: str,
    *,
    result_type: str | None = None,
    from_year: int | None = None,
    to_year: int | None = None,
) -> list[dict[str, Any]]:
    run = store.uuid(_uuid("run_id", run_id))
    found = _select(store, SIMULATION_RUNS, [("id = %s", run)], "id")
    if not found:
        raise NotFound("run_id", run_id.strip())
    if found[0]["persistence"] == "summary":
        raise ValidationError(
            "run_id",
            f"run {run_id.strip()} keeps a summary only (persistence summary): no year is "
            f"recorded; `twinledger replay {run_id.strip()} --to-year N` re-derives year N",
        )
    where: list[tuple[str, Any]] = [("run_id = %s", run)]
    if result_type is not None:
        if result_type not in RESULT_TYPES:
            raise ValidationError(
                "type", f"{result_type!r} is not one of {', '.join(RESULT_TYPES)}"
            )
        where.append(("result_type = %s", result_type))
    if from_year is not None:
        where.append(("year >= %s", from_year))
    if to_year is not None:
        where.append(("year <= %s", to_year))
    return _select(store, SIMULATION_RESULTS, where, "year, result_type")


def experiments(
    store: Store, *, twin: str | None = None, status: str | None = None
) -> list[dict[str, Any]]:
    where: list[tuple[str, Any]] = []
    if twin is not None:
        where.append(("digital_twin_id = %s", store.uuid(_uuid("twin", twin))))
    if status is not None:
        where.append(("status = %s", status))
    return _select(store, EXPERIMENTS, where, "started_at, id")


def experiment_iterations(store: Store, experiment_id: str) -> list[dict[str, Any]]:
    """Every iteration of an experiment, in order (accepted or not)."""
    experiment = store.uuid(_uuid("experiment_id", experiment_id))
    if not _select(store, EXPERIMENTS, [("id = %s", experiment)], "id"):
        raise NotFound("experiment_id", experiment_id.strip())
    return _select(store, EXPERIMENT_ITERATIONS, [("experiment_id = %s", experiment)], "iteration")
