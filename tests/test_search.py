"""The run filter language (projections/search.py) on SQLite and PostgreSQL.

Rows are written straight into simulation_runs (varied values, NULLs, ties, values of the wrong
JSON type) so that the compiled SQL can be checked against a Python filter over the same rows.
"""

from __future__ import annotations

import functools
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.errors import ValidationError
from infrastructure.application import TwinLedger
from infrastructure.settings import resolve_database
from projections import search
from projections.runner import Projector
from projections.runs import SIMULATION_RUNS
from projections.search import (
    And,
    Compare,
    Field,
    In,
    IsNull,
    Node,
    Not,
    Or,
    OrderKey,
    parse_filter,
    parse_order_by,
    search_runs,
)
from projections.store import Store

PATTERNS = ("mars_terraform", "venus_industrial", "titan_fuel", "it's", "é_unicode")
STATUSES = ("queued", "running", "completed", "failed", "cancelled")


def synthetic_runs(twin_id: str, count: int = 40) -> list[dict[str, Any]]:
    """Runs with every shape a filter meets: NULLs, ties, missing keys, wrong JSON types."""
    rng = random.Random(11)
    start = datetime(2030, 1, 1, tzinfo=UTC)
    rows = []
    for index in range(count):
        status = STATUSES[index % len(STATUSES)]
        completed = status == "completed"
        score = rng.choice([0.1, 0.3, 0.30000000000000004, 0.5, 0.9]) if completed else None
        params: dict[str, Any] = {
            "budget_cents": rng.choice([10**9, 5 * 10**11, 10**12]),
            "tech_level": rng.choice([1, 5, 5, 7, 10]),
            "priority": rng.choice(["low", "normal", "high"]),
            "pattern_params": {"mirror_area_km2": rng.choice([0.5, 2.0, 7.25])},
        }
        if index % 7 == 3:
            params["tech_level"] = "7"  # the wrong type: no numeric comparison matches it
        if index % 9 == 4:
            del params["pattern_params"]["mirror_area_km2"]
        results = (
            {
                "years": 100,
                "success_metrics": {
                    "habitability_score": score,
                    "timeline_efficiency": rng.choice([0.25, 0.75]),
                    "resource_efficiency": 0.5,
                    "cost_efficiency": rng.choice([0.1, 0.2]),
                },
                "end_state": {"temperature_k": rng.choice([210.5, 250.0]), "composition_pct": {}},
                "total_spend_cents": 1000 * index,
            }
            if completed
            else None
        )
        queued = start + timedelta(hours=rng.choice([0, 1, 2, 3]))  # ties on purpose
        rows.append(
            {
                "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "digital_twin_id": twin_id,
                "source_body": "mars",
                "pattern": rng.choice(PATTERNS),
                "duration_years": rng.choice([10, 100, 1000]),
                "parameters": params,
                "budget_cents": params["budget_cents"],
                "seed": rng.randrange(2**40),
                "engine_version": "1",
                "status": status,
                "progress": 1.0 if completed else rng.choice([0.0, 0.5]),
                "current_year": rng.choice([0, 5, 100]),
                "queued_at": queued,
                "started_at": None if status == "queued" else queued + timedelta(minutes=1),
                "completed_at": queued + timedelta(minutes=5) if completed else None,
                "updated_at": queued,
                "error_message": "boom" if status == "failed" else None,
                "results": results,
                "result_digest": f"sha256:{index:064x}" if completed else None,
                "habitability_score": score,
                "total_spend_cents": 1000 * index if completed else None,
                "total_revenue_cents": 10 * index if completed else None,
                "final_balance_cents": -5 * index if completed else None,
                "initiated_by": "test",
                "experiment_id": None,
                "iteration": None,
                "sample_index": None,
                "run_purpose": None,
                "persistence": "full",
            }
        )
    return rows


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    ledger = TwinLedger.open(database_url)
    twin_id = str(ledger.clone_twin(name="Mars", body="mars", created_by="test"))
    ledger.close()
    database = resolve_database(database_url)
    with Projector(database) as projector:
        projector.catch_up()
    store = Store(database)
    kinds = SIMULATION_RUNS.kinds()
    names = SIMULATION_RUNS.column_names
    rows = synthetic_runs(twin_id)
    with store.transaction() as cursor:
        statement = store.sql(
            "INSERT INTO {t} ("
            + ", ".join(f'"{n}"' for n in names)
            + ") VALUES ("
            + ", ".join(["%s"] * len(names))
            + ")",
            t="simulation_runs",
        )
        for row in rows:
            cursor.execute(statement, [store.to_db(kinds[n], row[n]) for n in names])
    try:
        yield store
    finally:
        store.close()


def every_row(store: Store) -> list[dict[str, Any]]:
    page = search_runs(store, limit=1000)
    assert page.next_cursor is None
    return page.rows


# --- the Python filter: what the language means ------------------------------------------------


def field_value(field: Field, row: dict[str, Any]) -> Any:
    value = row[field.column]
    for key in field.path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def compare(field: Field, op: str, literal: Any, row: dict[str, Any]) -> bool:
    value = field_value(field, row)
    if value is None:
        return False
    if field.path and (
        isinstance(literal, str) != isinstance(value, str)
        or not (isinstance(value, str) or is_number(value))
    ):
        return False
    if field.kind == "timestamp":
        value = datetime.fromisoformat(value)
        literal = datetime.fromisoformat(literal)
    return {
        "=": value == literal,
        "!=": value != literal,
        "<": value < literal,
        "<=": value <= literal,
        ">": value > literal,
        ">=": value >= literal,
    }[op]


def matches(node: Node, row: dict[str, Any]) -> bool:
    if isinstance(node, Compare):
        return compare(node.field, node.op, node.value, row)
    if isinstance(node, In):
        return any(compare(node.field, "=", value, row) for value in node.values)
    if isinstance(node, IsNull):
        return field_value(node.field, row) is None
    if isinstance(node, Not):
        return not matches(node.item, row)
    if isinstance(node, And):
        return all(matches(item, row) for item in node.items)
    assert isinstance(node, Or)
    return any(matches(item, row) for item in node.items)


def python_order(keys: tuple[OrderKey, ...], rows: list[dict[str, Any]]) -> list[str]:
    def sort_value(key: OrderKey, row: dict[str, Any]) -> Any:
        value = field_value(key.field, row)
        if key.field.path and not is_number(value):
            return None
        return value

    def order(a: dict[str, Any], b: dict[str, Any]) -> int:
        for key in keys:
            x, y = sort_value(key, a), sort_value(key, b)
            if x == y:
                continue
            if x is None:
                return 1  # NULLs last, in either direction
            if y is None:
                return -1
            result = -1 if x < y else 1
            return -result if key.descending else result
        return 0

    return [row["id"] for row in sorted(rows, key=functools.cmp_to_key(order))]


def full(keys: tuple[OrderKey, ...]) -> tuple[OrderKey, ...]:
    return search._full_order(keys)


# --- examples -----------------------------------------------------------------------------------


def ids(store: Store, where: str | None = None, order_by: str | None = None) -> list[str]:
    return [row["id"] for row in search_runs(store, where, order_by, limit=1000).rows]


def test_the_issue_example_matches_what_it_says(store: Store) -> None:
    rows = every_row(store)
    where = (
        "pattern = 'mars_terraform' and summary.habitability > 0.3 and params.tech_level >= 5"
        " and status = 'completed'"
    )
    expected = [
        r["id"]
        for r in rows
        if r["pattern"] == "mars_terraform"
        and r["habitability_score"] is not None
        and r["habitability_score"] > 0.3
        and isinstance(r["parameters"]["tech_level"], int)
        and r["parameters"]["tech_level"] >= 5
        and r["status"] == "completed"
    ]
    found = ids(store, where, "summary.habitability desc, created_at")
    assert sorted(found) == sorted(expected)
    scores = [next(r for r in rows if r["id"] == i)["habitability_score"] for i in found]
    assert scores == sorted(scores, reverse=True)


def test_values_are_parameters_never_sql(store: Store) -> None:
    before = len(every_row(store))
    for text in ("x'; DROP TABLE simulation_runs; --", "%s", "{t}", "$1", "it''s", "'"):
        quoted = "'" + text.replace("'", "''") + "'"
        assert ids(store, f"pattern = {quoted}") == []
        assert ids(store, f"params.priority = {quoted} or error_message = {quoted}") == []
    assert len(every_row(store)) == before
    assert len(ids(store, "pattern = 'it''s'")) == sum(
        1 for r in every_row(store) if r["pattern"] == "it's"
    )


def test_not_counts_a_missing_value_as_not_matching(store: Store) -> None:
    rows = every_row(store)
    low = set(ids(store, "not summary.habitability > 0.3"))
    assert low == {
        r["id"]
        for r in rows
        if r["habitability_score"] is None or not r["habitability_score"] > 0.3
    }
    assert set(ids(store, "summary.habitability is null")) == {
        r["id"] for r in rows if r["results"] is None
    }
    wrong_type = {r["id"] for r in rows if r["parameters"]["tech_level"] == "7"}
    assert wrong_type and not wrong_type & set(ids(store, "params.tech_level >= 0"))
    assert wrong_type <= set(ids(store, "params.tech_level = '7'"))


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("status = 'completed", "unterminated string at position 10"),
        ("status = 'x'; DROP TABLE simulation_runs", "';' at position 13"),
        ("status = 'a\x00b'", "'\\x00' at position 12"),
        ("current_year > \u0661\u0662\u0663", "'\u0661' at position 16"),
        ("current_year > ²", "'²' at position 16"),
        ("status = 'x' and", "found the end"),
        ("stauts = 'x'", "unknown field 'stauts' at position 1"),
        ("params.tech-level = 5", "'-' at position 12"),
        ("summary.a.b.c.d.e > 1", "summary.a.b.c.d.e"),
        ("status > 5", "'5' at position 10: status is text"),
        ("current_year = 'five'", "current_year is a number"),
        ("id < '00000000-0000-0000-0000-000000000000'", "only =, != and in"),
        ("id = 'nope'", "'nope' at position 6 is not a valid id"),
        ("queued_at > 'yesterday'", "not an ISO 8601 time"),
        ("current_year > 99999999999999999999", "outside the 64-bit range"),
        ("current_year > 1e999", "too large"),
        ("(" * 40 + "status = 'x'" + ")" * 40, "nested more than 32 levels"),
        ("not " * 40 + "status = 'x'", "nested more than 32 levels"),
        ("(" * 5000, "characters long; the limit is 4000"),
        ("status = 'x' or " * 70 + "status = 'y'", "more than 64 conditions"),
        ("", "is empty"),
        ("status", "expected a comparison"),
        ("status = ", "expected a value"),
        ("(status = 'x'", "expected `)` closing the `(` at position 1"),
        ("status = 'x')", "')' at position 13"),
        ("summary.\ud800 > 1", "control character"),
        ("params.pattern_params.x = 1", "params.NAME takes one name"),
        (
            "parameters = 'x'",
            "'parameters' at position 1 holds JSON: name a value in it, e.g. params",
        ),
        ("results is null", "holds JSON: name a value in it, e.g. summary.NAME"),
    ],
)
def test_a_bad_filter_names_the_token_and_its_position(text: str, token: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_filter(text)
    assert caught.value.field == "filter"
    assert token in caught.value.message, caught.value.message


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("habitability desc", "unknown field 'habitability'"),
        ("created_at sideways", "'sideways' at position 12"),
        ("created_at, created_at", "'created_at' at position 13 is given twice"),
        ("a, b, c, d, e", "unknown field"),
        ("status, pattern, seed, progress, current_year", "more than 4 keys"),
        ("", "is empty"),
    ],
)
def test_a_bad_order_names_the_token(text: str, token: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_order_by(text)
    assert caught.value.field == "order_by"
    assert token in caught.value.message, caught.value.message


def test_search_refuses_bad_limits_and_cursors(store: Store) -> None:
    for limit in (0, -1, 1001, True):
        with pytest.raises(ValidationError, match="limit"):
            search_runs(store, limit=limit)
    page = search_runs(store, order_by="seed desc", limit=3)
    assert page.next_cursor is not None
    for cursor in ("", "!!!", "e30", "x" * 5000, page.next_cursor[:-2] + "AA", "bnVsbA"):
        with pytest.raises(ValidationError) as caught:
            search_runs(store, order_by="seed desc", cursor=cursor)
        assert caught.value.field == "cursor"
    with pytest.raises(ValidationError, match="another order_by"):
        search_runs(store, order_by="seed asc", cursor=page.next_cursor)


def test_cli_equal_filters_combine_with_the_filter(store: Store) -> None:
    rows = every_row(store)
    found = search_runs(store, "current_year >= 5", equal={"status": "completed"}, limit=1000)
    assert {r["id"] for r in found.rows} == {
        r["id"] for r in rows if r["status"] == "completed" and r["current_year"] >= 5
    }
    with pytest.raises(ValidationError) as caught:
        search_runs(store, equal={"digital_twin_id": "nope"})
    assert caught.value.field == "digital_twin_id" and "'nope'" in caught.value.message
    for hostile in ("done\x00", "\ud800", "x" * 201):
        with pytest.raises(ValidationError) as caught:
            search_runs(store, equal={"status": hostile})
        assert caught.value.field == "status"


# --- properties -------------------------------------------------------------------------------

COLUMN_FIELDS = {
    "text": ["status", "pattern", "source_body", "error_message", "result_digest", "run_purpose"],
    "number": [
        "current_year",
        "duration_years",
        "progress",
        "seed",
        "budget_cents",
        "iteration",
        "total_spend_cents",
        "summary.habitability",
        "summary.final_balance_cents",
    ],
    "timestamp": ["created_at", "started_at", "completed_at"],
    "json": [
        "params.tech_level",
        "params.priority",
        "params.mirror_area_km2",
        "params.budget_cents",
        "summary.timeline_efficiency",
        "summary.end_state.temperature_k",
        "summary.years",
        "summary.missing_key",
    ],
}
safe_text = st.text(
    st.characters(blacklist_categories=("Cc", "Cs")), max_size=12
) | st.sampled_from([*PATTERNS, *STATUSES, "low", "high", "7", "boom"])
numbers = (
    st.integers(-(2**63), 2**63 - 1)
    | st.integers(-5, 2000)
    | st.sampled_from([0.3, 0.30000000000000004, 0.5, 2.0, 7.25, 250.0, 1e15])
    | st.floats(allow_nan=False, allow_infinity=False, width=64)
)
times = st.datetimes(min_value=datetime(2029, 12, 31), max_value=datetime(2030, 1, 2)).map(
    lambda moment: moment.replace(tzinfo=UTC).isoformat()
)


def literal(value: str | int | float) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


@st.composite
def conditions(draw: st.DrawFn) -> str:
    group = draw(st.sampled_from(list(COLUMN_FIELDS)))
    name = draw(st.sampled_from(COLUMN_FIELDS[group]))
    values = {
        "text": safe_text,
        "number": numbers,
        "timestamp": times,
        "json": safe_text | numbers,
    }[group]
    form = draw(st.sampled_from(["compare", "in", "not in", "is null", "is not null"]))
    if form == "compare":
        op = draw(st.sampled_from(["=", "!=", "<>", "<", "<=", ">", ">="]))
        return f"{name} {op} {literal(draw(values))}"
    if form.endswith("in"):
        items = draw(st.lists(values, min_size=1, max_size=4))
        return f"{name} {form} ({', '.join(literal(v) for v in items)})"
    return f"{name} {form.upper() if draw(st.booleans()) else form}"


def expressions() -> st.SearchStrategy[str]:
    return st.recursive(
        conditions(),
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from([" and ", " or ", " AND "]), inner).map("".join),
            inner.map(lambda text: f"not ({text})"),
            inner.map(lambda text: f"({text})"),
        ),
        max_leaves=8,
    )


order_fields = st.sampled_from(
    [
        "created_at",
        "summary.habitability",
        "params.tech_level",
        "params.mirror_area_km2",
        "pattern",
        "status",
        "seed",
        "completed_at",
        "summary.timeline_efficiency",
        "id",
    ]
)
orders = st.lists(
    st.tuples(order_fields, st.sampled_from(["", " asc", " desc"])),
    min_size=1,
    max_size=3,
    unique_by=lambda pair: pair[0],
).map(lambda keys: ", ".join(name + direction for name, direction in keys))

PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY
@given(where=expressions())
def test_sql_matches_the_python_filter(store: Store, where: str) -> None:
    rows = every_row(store)
    tree = parse_filter(where)
    assert set(ids(store, where)) == {r["id"] for r in rows if matches(tree, r)}


@PROPERTY
@given(where=st.none() | expressions(), order_by=orders, limit=st.integers(1, 7))
def test_pages_follow_the_python_order_without_gaps_or_repeats(
    store: Store, where: str | None, order_by: str, limit: int
) -> None:
    rows = every_row(store)
    if where is not None:
        tree = parse_filter(where)
        rows = [r for r in rows if matches(tree, r)]
    expected = python_order(full(parse_order_by(order_by)), rows)
    seen: list[str] = []
    after = None
    for _ in range(60):
        page = search_runs(store, where, order_by, limit=limit, cursor=after)
        assert len(page.rows) <= limit
        seen.extend(row["id"] for row in page.rows)
        after = page.next_cursor
        if after is None:
            break
    assert seen == expected


hostile = st.text(max_size=60) | st.sampled_from(
    ["'; DROP TABLE simulation_runs; --", "\x00", "१२३", "((((((", "status = '\x00'", "%s %s"]
)


@PROPERTY
@given(where=hostile, order_by=st.none() | st.text(max_size=30))
def test_any_text_is_a_page_or_a_named_error(
    store: Store, where: str, order_by: str | None
) -> None:
    try:
        search_runs(store, where, order_by)
    except ValidationError as error:
        assert error.field in ("filter", "order_by")
        assert error.message
    assert len(every_row(store)) == 40
