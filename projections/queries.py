"""The reads the CLI makes, from the read tables only (never from the event log).

Each read is one statement on its own (``Store.read_once``: no transaction around it, one
round trip). Rows come back as plain dicts: ids and timestamps as strings (ISO 8601, UTC),
JSON columns decoded from their canonical text (integers as int, other numbers as float),
numbers as numbers, so they print the same from SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from operator import attrgetter, itemgetter
from typing import Any
from uuid import UUID

import msgspec

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
    rows = store.read_once(store.sql(statement, t=table.name), [value for _, value in where])
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
    """A run's result rows, as the other queries give rows (``data`` parsed).

    Built for large runs: one query, the rows' JSON parsed by one msgspec call for them all
    (canonical text, so integers stay int), timestamps formatted by the database (SQLite
    stores them already in the output's form), the run's id formatted once.
    """
    run, text = _run_id(store, run_id)
    where, args = _result_filter(store, run, result_type, from_year, to_year)
    created = _PG_ISO.format("created_at") if store.postgres else "created_at"
    data = "data::text" if store.postgres else "data"
    statement = (
        f"SELECT year, result_type, {data}, {created} FROM {{t}} WHERE {where} "
        "ORDER BY year, result_type"
    )
    rows = store.read_once(store.sql(statement, t=SIMULATION_RESULTS.name), args)
    if not rows:
        _check_run(store, run, text)
    values = _decode_all([row[2] for row in rows])
    return [
        {"run_id": text, "year": year, "result_type": kind, "data": value, "created_at": at}
        for (year, kind, _, at), value in zip(rows, values, strict=True)
    ]


def series(
    store: Store,
    run_id: str,
    result_type: str = "environmental",
    fields: Sequence[str] | None = None,
    *,
    from_year: int | None = None,
    to_year: int | None = None,
) -> dict[str, Any]:
    """One run's values of one result type as columns, for charts and dashboards::

        {"run_id": ..., "result_type": "environmental", "years": [1, 2, ...],
         "values": {"temperature_k": [210.4, ...], "habitability": [0.01, ...]}}

    ``fields`` names the values wanted (keys of the rows' ``data``; all of them when None);
    only those are parsed. A year without one of them has null there. A field no year has is
    an error naming it (a typo, not a gap).
    """
    if result_type not in RESULT_TYPES:
        raise ValidationError("type", f"{result_type!r} is not one of {', '.join(RESULT_TYPES)}")
    wanted = None if fields is None else _field_names(fields)
    run, text = _run_id(store, run_id)
    where, args = _result_filter(store, run, result_type, from_year, to_year)
    data = "data::text" if store.postgres else "data"
    statement = f"SELECT year, {data} FROM {{t}} WHERE {where} ORDER BY year"
    rows = store.read_once(store.sql(statement, t=SIMULATION_RESULTS.name), args)
    if not rows:
        _check_run(store, run, text)
    years = [row[0] for row in rows]
    joined = _joined([row[1] for row in rows])
    if wanted is None:
        parsed: list[dict[str, Any]] = _decode_many(joined)
        names = sorted(set().union(*parsed))  # canonical JSON: keys in sorted order
        if any(len(value) != len(names) for value in parsed):  # some year lacks a field
            parsed = [{name: value.get(name) for name in names} for value in parsed]
        get = itemgetter(*names) if len(names) > 1 else lambda value: (value[names[0]],)
        picked: list[Any] = list(map(get, parsed)) if names else []
    else:
        names = wanted
        picked = _picker(tuple(wanted))(joined)
    # Rows to columns in one C-level transposition.
    transposed = zip(*picked, strict=True) if picked else ([] for _ in names)
    columns = {name: list(values) for name, values in zip(names, transposed, strict=True)}
    if wanted is not None and rows:
        for name, values in columns.items():
            if _MISSING in values:
                if all(value is _MISSING for value in values):
                    raise ValidationError(
                        "fields", f"{name!r} is not a field of {result_type} results"
                    )
                columns[name] = [None if value is _MISSING else value for value in values]
    return {"run_id": text, "result_type": result_type, "years": years, "values": columns}


_PG_ISO = "to_char({0} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '+00:00'"
"""A timestamptz as ``plain`` formats it (UTC, microseconds), computed by the server."""

_decode_many = msgspec.json.Decoder(list[Any]).decode
_MISSING: Any = msgspec.UNSET


def _joined(texts: list[str]) -> str:
    """Rows' JSON texts as one JSON array: parsed by one call instead of one per row."""
    return "[" + ",".join(texts) + "]"


def _decode_all(texts: list[str]) -> list[Any]:
    return _decode_many(_joined(texts)) if texts else []


@lru_cache(maxsize=64)
def _picker(names: tuple[str, ...]) -> Callable[[str], list[tuple[Any, ...]]]:
    """Decodes a JSON array of objects into tuples of the named keys only (the other keys are
    skipped unparsed; a missing key is ``_MISSING``)."""
    attributes = [f"f{index}" for index in range(len(names))]
    row = msgspec.defstruct(
        "Picked",
        [(attribute, Any, msgspec.UNSET) for attribute in attributes],
        rename=dict(zip(attributes, names, strict=True)),
    )
    decode = msgspec.json.Decoder(list[row]).decode  # type: ignore[valid-type]
    pick = attrgetter(*attributes)
    if len(attributes) == 1:
        return lambda text: [(pick(item),) for item in decode(text)]
    return lambda text: [pick(item) for item in decode(text)]


def _field_names(fields: Sequence[str]) -> list[str]:
    names = list(dict.fromkeys(fields))
    if not names:
        raise ValidationError("fields", "name at least one field (or none for all of them)")
    for name in names:
        if not isinstance(name, str) or not name or len(name) > 200:
            raise ValidationError("fields", f"{name!r} is not a field name")
    return names


def _run_id(store: Store, run_id: str) -> tuple[Any, str]:
    """The run id as the store binds it, and as rows show it."""
    ident = _uuid("run_id", run_id)
    return store.uuid(ident), str(ident)


def _check_run(store: Store, run: Any, text: str) -> None:
    """No result rows: NotFound unless the run exists (then it has no results yet), and a
    clear error for a run that keeps a summary only (persistence summary)."""
    found = store.read_once(
        store.sql("SELECT persistence FROM {t} WHERE id = %s", t=SIMULATION_RUNS.name), [run]
    )
    if not found:
        raise NotFound("run_id", text)
    if found[0][0] == "summary":
        raise ValidationError(
            "run_id",
            f"run {text} keeps a summary only (persistence summary): no year is "
            f"recorded; `twinledger replay {text} --to-year N` re-derives year N",
        )


def _result_filter(
    store: Store, run: Any, result_type: str | None, from_year: int | None, to_year: int | None
) -> tuple[str, list[Any]]:
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
    return " AND ".join(c for c, _ in where), [v for _, v in where]


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
