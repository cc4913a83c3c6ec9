"""A run's results as JSON text, joined from the stored JSON text: the HTTP API's fast path.

``projections.queries.results`` decodes every row into Python objects (psycopg parses ~2000
jsonb values for a 1000-year run, then each value is converted), which the API then encodes
again: ~110 ms per 1000-year run, the largest part of a results request (docs/performance.md).
Here the database hands ``data`` over as the text it stores (jsonb::text on PostgreSQL, the
TEXT column on SQLite) and the timestamp already formatted, and the response is joined from
those pieces: the same rows, parsed equal (a test compares them), about ten times faster.
Only values the database produced are joined: ``data`` is JSON it validated, the id is a UUID,
the year an integer, the result type one of three names (a CHECK constraint) and the timestamp
digits.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from domain.errors import NotFound, ValidationError
from projections.results import RESULT_TYPES, SIMULATION_RESULTS
from projections.runs import SIMULATION_RUNS
from projections.store import Store

# isoformat(timespec="microseconds") of a UTC time, as projections.queries.plain writes it
_PG_TIMESTAMP = "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"


def results_json(
    store: Store,
    run_id: UUID,
    *,
    result_type: str | None = None,
    from_year: int | None = None,
    to_year: int | None = None,
) -> bytes:
    """The rows ``queries.results`` returns for these arguments, as one JSON array."""
    if result_type is not None and result_type not in RESULT_TYPES:
        raise ValidationError("type", f"{result_type!r} is not one of {', '.join(RESULT_TYPES)}")
    key = store.uuid(run_id)
    where = ["run_id = %s"]
    params: list[Any] = [key]
    if result_type is not None:
        where.append("result_type = %s")
        params.append(result_type)
    if from_year is not None:
        where.append("year >= %s")
        params.append(from_year)
    if to_year is not None:
        where.append("year <= %s")
        params.append(to_year)
    data = "data::text" if store.postgres else "data"
    created = _PG_TIMESTAMP if store.postgres else "created_at"
    statement = (
        f"SELECT year, result_type, {data}, {created} FROM {{t}} WHERE "
        + " AND ".join(where)
        + " ORDER BY year, result_type"
    )
    with store.reading() as cursor:
        cursor.execute(store.sql("SELECT 1 FROM {t} WHERE id = %s", t=SIMULATION_RUNS.name), [key])
        if cursor.fetchone() is None:
            raise NotFound("run_id", str(run_id))
        cursor.execute(store.sql(statement, t=SIMULATION_RESULTS.name), params)
        rows = cursor.fetchall()
    head = f'{{"run_id":"{run_id}","year":'
    parts = [
        f'{head}{int(year)},"result_type":"{kind}","data":{text},"created_at":"{at}"}}'
        for year, kind, text, at in rows
    ]
    return ("[" + ",".join(parts) + "]").encode()


def results_held(store: Store, run_id: UUID) -> tuple[str, str | None, int] | None:
    """(status, result_digest, result rows held) of a run's row, in one query; None if the
    tables have no such run. For HTTP validators: an ended run's rows change only when
    retention removes some (the count drops) or a rebuild restores them as they were."""
    key = store.uuid(run_id)
    statement = store.sql(
        "SELECT status, result_digest, (SELECT count(*) FROM {r} WHERE run_id = %s) "
        "FROM {t} WHERE id = %s",
        t=SIMULATION_RUNS.name,
        r=SIMULATION_RESULTS.name,
    )
    with store.reading() as cursor:
        cursor.execute(statement, [key, key])
        row = cursor.fetchone()
    if row is None:
        return None
    status, digest, held = row
    return str(status), None if digest is None else str(digest), int(held)
