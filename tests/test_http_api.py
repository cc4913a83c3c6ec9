"""The HTTP API (infrastructure/http/): driven with an HTTP client on SQLite and PostgreSQL.

Live progress (Server-Sent Events) and the schemathesis run go through a real uvicorn server on
127.0.0.1 and a free port; the rest through FastAPI's TestClient (the same ASGI application).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import httpx
import pytest
import schemathesis
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from infrastructure.http.app import MAX_BODY_BYTES, Settings, create_app

BUDGET = 1_000_000_000_000
API = "/api/v1"


class NoExecutor:
    """Accepts runs and experiments and executes nothing: they stay queued / running."""

    def __init__(self) -> None:
        self.runs: list[UUID] = []
        self.experiments: list[UUID] = []

    def submit(self, run_id: UUID, *, claim_timeout: float | None = None) -> bool:
        self.runs.append(run_id)
        return True

    def submit_experiment(self, experiment_id: UUID) -> bool:
        self.experiments.append(experiment_id)
        return True

    def shutdown(self) -> None:
        pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """A real uvicorn server for ``app`` on 127.0.0.1 and a free port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def client_for(url: str, **options: Any) -> Iterator[TestClient]:
    executor = options.pop("executor", None) or NoExecutor()
    app = create_app(Settings(url=url, **options), executor=executor)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.executor = executor  # type: ignore[attr-defined]
        yield client


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with client_for(database_url) as opened:
        yield opened


def head(client: TestClient | httpx.Client) -> int:
    """The position of the last event in the log (GET /projections)."""
    response = client.get(f"{API}/projections")
    assert response.status_code == 200, response.text
    return int(response.json()["head"])


def clone(client: TestClient | httpx.Client, **fields: Any) -> dict[str, Any]:
    response = client.post(f"{API}/twins", json={"name": "Mars", "body": "mars", **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


def queue(client: TestClient | httpx.Client, twin_id: str, **fields: Any) -> dict[str, Any]:
    body = {"twin_id": twin_id, "pattern": "mars_terraform", "years": 30, "budget_cents": BUDGET}
    response = client.post(f"{API}/runs", json={**body, **fields})
    assert response.status_code == 202, response.text
    return dict(response.json())


def follow(base: str, run_id: str, timeout: float = 120) -> list[tuple[str, dict[str, Any]]]:
    """Every Server-Sent Event of a run's progress stream, until the server closes it."""
    received: list[tuple[str, dict[str, Any]]] = []
    event = ""
    with httpx.stream("GET", f"{base}{API}/runs/{run_id}/progress", timeout=timeout) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                received.append((event, json.loads(line.removeprefix("data: "))))
    return received


# --- the story, over a real server ------------------------------------------------------------


def test_twin_run_progress_results_replay_compare(database_url: str) -> None:
    app = create_app(Settings(url=database_url, workers=2))
    with served(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        assert "mars" in {body["key"] for body in http.get(f"{API}/bodies").json()}
        twin = clone(http)
        created = http.post(f"{API}/twins", json={"name": "Mars B", "body": "mars"})
        assert created.status_code == 201
        assert http.get(created.headers["location"]).json()["name"] == "Mars B"

        response = http.post(
            f"{API}/runs",
            json={
                "twin_id": twin["id"],
                "pattern": "mars_terraform",
                "years": 60,
                "seed": 1,
                "budget_cents": BUDGET,
                "tech_level": 6,
                "priority": "high",
                "params": {},
            },
        )
        assert response.status_code == 202, response.text
        first = response.json()
        assert response.headers["location"] == f"{API}/runs/{first['id']}"
        assert first["status"] == "queued"
        second = queue(http, twin["id"], years=60, seed=2)

        events = follow(base, first["id"])
        kinds = [kind for kind, _ in events]
        assert kinds[-1] == "end" and set(kinds) == {"progress", "end"}
        years = [data["years_recorded"] for kind, data in events if kind == "progress"]
        assert years == sorted(years) and years[-1] == 60
        assert events[-1][1]["status"] == "completed"
        follow(base, second["id"])

        run = http.get(f"{API}/runs/{first['id']}").json()
        assert (run["status"], run["current_year"]) == ("completed", 60)
        assert isinstance(run["total_spend_cents"], int)

        results = http.get(f"{API}/runs/{first['id']}/results", params={"type": "economic"})
        rows = results.json()
        assert [row["year"] for row in rows] == list(range(1, 61))
        assert all(isinstance(row["data"]["balance_cents"], int) for row in rows)
        csv = http.get(f"{API}/runs/{first['id']}/results", params={"format": "csv", "to_year": 2})
        assert csv.headers["content-type"].startswith("text/csv")
        assert csv.text.splitlines()[0] == "run_id,year,result_type,data,created_at"

        verdict = http.post(f"{API}/runs/{first['id']}/replay").json()
        assert verdict["identical"] and verdict["digest"] == run["result_digest"]

        state = http.get(f"{API}/runs/{first['id']}/state", params={"year": 30}).json()
        assert state["year"] == 30 and state["economic"] == rows[29]["data"]

        audit = http.get(f"{API}/runs/{first['id']}/events").json()
        topics = [event["topic"].rsplit(":", 1)[-1] for event in audit]
        assert topics[:2] == ["RunQueued", "RunStarted"] and topics[-1] == "RunCompleted"
        assert topics.count("YearResultRecorded") == 60
        assert audit[0]["state"]["seed"] == 1

        compared = http.get(f"{API}/compare", params={"runs": f"{first['id']},{second['id']}"})
        assert compared.status_code == 200, compared.text
        comparison = compared.json()
        assert comparison["run_ids"] == [first["id"], second["id"]]
        assert "seed" in comparison["differing_parameters"]
        assert comparison["first_divergence"]["year"] >= 1

        found = http.get(
            f"{API}/runs",
            params={"filter": "seed = 2 and status = 'completed'", "order_by": "created_at"},
        ).json()
        assert [r["id"] for r in found["items"]] == [second["id"]]
        listed = http.get(f"{API}/runs", params={"twin": twin["id"], "limit": 1}).json()
        assert len(listed["items"]) == 1 and listed["next_cursor"]
        rest = http.get(
            f"{API}/runs", params={"twin": twin["id"], "cursor": listed["next_cursor"]}
        ).json()
        assert [r["id"] for r in listed["items"] + rest["items"]] == [first["id"], second["id"]]

        health = http.get(f"{API}/health").json()
        assert health["status"] == "ok" and health["lag"] == 0


def test_experiment_runs_in_the_background_and_replays(database_url: str) -> None:
    spec = {
        "name": "search",
        "body": "mars",
        "pattern": "mars_terraform",
        "years": 10,
        "master_seed": 7,
        "samples": 1,
        "max_iterations": 2,
        "objective": {"kind": "maximize_habitability"},
        "base": {"budget_cents": BUDGET},
        "space": {"tech_level": [3, 6]},
    }
    from infrastructure.http.executor import ServerExecutor
    from infrastructure.settings import resolve_database

    database = resolve_database(database_url)
    url = database_url if database.is_postgres else f"sqlite:///{database.sqlite_path}"
    with client_for(database_url, executor=ServerExecutor(url)) as client:
        response = client.post(f"{API}/experiments", json=spec)
        assert response.status_code == 202, response.text
        location = response.headers["location"]
        deadline = time.monotonic() + 120
        while True:
            detail = client.get(location).json()
            if detail["experiment"]["status"] != "running" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert detail["experiment"]["status"] == "completed"
        assert [it["iteration"] for it in detail["iterations"]] == list(
            range(detail["experiment"]["iterations"])
        )
        listed = client.get(f"{API}/experiments").json()["items"]
        assert [e["id"] for e in listed] == [detail["experiment"]["id"]]
        verdict = client.post(f"{location}/replay").json()
        assert verdict["identical"], verdict


# --- refusals: 422 naming the field, 404, 409; nothing written --------------------------------

MISSING = "00000000-0000-4000-8000-000000000000"


def _run(**fields: Any) -> Callable[[str], dict[str, Any]]:
    def body(twin_id: str) -> dict[str, Any]:
        base = {"twin_id": twin_id, "pattern": "mars_terraform", "years": 10, "budget_cents": 1}
        return {key: value for key, value in {**base, **fields}.items() if value is not ...}

    return body


@pytest.mark.parametrize(
    ("make", "status", "field"),
    [
        (_run(pattern="pluto_party"), 422, "pattern"),
        (_run(budget_cents=1.5), 422, "budget_cents"),
        (_run(budget_cents="100"), 422, "budget_cents"),
        (_run(budget_cents=-1), 422, "budget_cents"),
        (_run(years=0), 422, "years"),
        (_run(years=1001), 422, "years"),
        (_run(years=...), 422, "years"),
        (_run(tech_level=11), 422, "tech_level"),
        (_run(priority="urgent"), 422, "priority"),
        (_run(params={"x": "y"}), 422, "params.x"),
        (_run(seed=-5), 422, "seed"),
        (_run(colour="red"), 422, "colour"),
        (_run(twin_id="not-an-id"), 422, "twin_id"),
        (_run(twin_id=MISSING), 404, "twin_id"),
        (_run(initiated_by="\x00"), 422, "initiated_by"),
    ],
)
def test_bad_runs_are_refused_and_nothing_is_written(
    client: TestClient, make: Callable[[str], dict[str, Any]], status: int, field: str
) -> None:
    twin = clone(client)
    before = head(client)
    response = client.post(f"{API}/runs", json=make(twin["id"]))
    assert response.status_code == status, response.text
    assert response.json()["field"] == field
    assert field in response.json()["detail"]
    assert head(client) == before
    assert client.executor.runs == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Mars", "body": "pluto"}, "body"),
        ({"name": "Mars"}, "body"),
        ({"name": "", "body": "mars"}, "name"),
        ({"name": "a\x07b", "body": "mars"}, "name"),
        ({"name": "Mars", "body": "mars", "expires_in": "soon"}, "expires_in"),
        ({"name": "Mars", "body": "mars", "simulation_parameters": {"k": [1]}}, "k"),
        ({"name": "Mars", "body_file": {"key": "x", "name": "X", "state": {}}}, "body_file"),
        ({"name": 5, "body": "mars"}, "name"),
        # NUL anywhere: PostgreSQL cannot store it, so it would stop the twins projection.
        (
            {"name": "M", "body": "mars", "simulation_parameters": {"k": "a\x00b"}},
            "simulation_parameters.k",
        ),
        (
            {"name": "M", "body": "mars", "simulation_parameters": {"k\x00": 1}},
            "simulation_parameters",
        ),
        ({"name": "M", "body": "mars", "description": "\x00"}, "description"),
    ],
)
def test_bad_twins_are_refused(client: TestClient, body: dict[str, Any], field: str) -> None:
    before = head(client)
    response = client.post(f"{API}/twins", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["field"]
    assert head(client) == before


def test_not_found_and_conflicts(client: TestClient) -> None:
    for path in (
        f"twins/{MISSING}",
        f"runs/{MISSING}",
        f"experiments/{MISSING}",
        f"runs/{MISSING}/results",
        f"runs/{MISSING}/events",
    ):
        response = client.get(f"{API}/{path}")
        assert response.status_code == 404, path
        assert response.json()["field"].endswith("_id")
    assert client.get(f"{API}/runs/nope").status_code == 422
    twin = clone(client)
    run = queue(client, twin["id"])
    unverifiable = client.post(f"{API}/runs/{run['id']}/replay")  # queued: nothing recorded
    assert unverifiable.status_code == 409 and unverifiable.json()["field"] == "run_id"
    assert client.post(f"{API}/runs/{run['id']}/cancel", json={"reason": "x"}).status_code == 200
    before = head(client)
    again = client.post(f"{API}/runs/{run['id']}/cancel")
    assert again.status_code == 409 and again.json()["field"] == "run_id"
    assert head(client) == before
    deleted = client.delete(f"{API}/twins/{twin['id']}", params={"reason": "done"})
    assert deleted.status_code == 200 and deleted.json()["status"] == "deleted"
    before = head(client)
    refused = client.post(
        f"{API}/runs",
        json={"twin_id": twin["id"], "pattern": "mars_terraform", "years": 5, "budget_cents": 1},
    )
    assert refused.status_code == 409 and refused.json()["field"] == "twin_id"
    assert client.post(f"{API}/twins/{twin['id']}/extend", json={"by": "1d"}).status_code == 409
    assert client.delete(f"{API}/twins/{twin['id']}").status_code == 409
    assert head(client) == before
    state = client.get(f"{API}/runs/{run['id']}/state", params={"year": 3})
    assert state.status_code == 422 and state.json()["field"] == "to_year"


# --- hostile inputs: 413 or 422, never a 500 ---------------------------------------------------


def _nested(depth: int) -> bytes:
    return b'{"name": ' + b"[" * depth + b"]" * depth + b', "body": "mars"}'


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b'{"name": "a\\u0000b", "body": "mars"}', 422),
        (b'{"name": "\\ud800", "body": "mars"}', 422),
        (b'{"name": "Mars", "body": "mars", "simulation_parameters": {"x": NaN}}', 422),
        (b'{"name": "Mars", "body": "mars", "simulation_parameters": {"x": Infinity}}', 422),
        (b'{"name": "Mars", "body": "mars", "simulation_parameters": {"x": 1e999}}', 422),
        (b'{"name": "Mars", "body": "mars", "simulation_parameters": {"x": -1e999}}', 422),
        (_nested(40), 422),
        (_nested(100_000), 422),
        (b'{"name": "\xff\xfe", "body": "mars"}', 422),
        (b"[1, 2, 3]", 422),
        (b"hello", 422),
        (b'{"name": "Mars", "body": "mars"', 422),
        (b'{"name": "' + b"x" * (MAX_BODY_BYTES + 1) + b'", "body": "mars"}', 413),
    ],
    ids=lambda value: repr(value)[:40] if isinstance(value, bytes) else str(value),
)
def test_hostile_bodies(client: TestClient, content: bytes, status: int) -> None:
    before = head(client)
    response = client.post(
        f"{API}/twins", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    assert head(client) == before


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (
            b'{"twin_id": "T", "pattern": "mars_terraform", "years": 5, "budget_cents": 1e308}',
            "budget_cents",
        ),
        (
            b'{"twin_id": "T", "pattern": "mars_terraform", "years": 5.0, "budget_cents": 1}',
            "years",
        ),
        (
            b'{"twin_id": "T", "pattern": "mars_terraform", "years": 5, "budget_cents": 1,'
            b' "params": {"k": 1e308, "j": NaN}}',
            "body",
        ),
        (
            b'{"twin_id": "T", "pattern": "mars_terraform", "years": 5, "budget_cents": '
            + b"9" * 400
            + b"}",
            "budget_cents",
        ),
    ],
    ids=["1e308 cents", "float years", "NaN param", "400 digits"],
)
def test_hostile_numbers(client: TestClient, content: bytes, field: str) -> None:
    twin = clone(client)
    before = head(client)
    response = client.post(
        f"{API}/runs",
        content=content.replace(b'"T"', json.dumps(twin["id"]).encode()),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert head(client) == before


SPEC: dict[str, Any] = {
    "name": "search",
    "body": "mars",
    "pattern": "mars_terraform",
    "years": 5,
    "master_seed": 1,
    "objective": {"kind": "minimize_cost_to_event", "target_event": "first settlement"},
    "base": {"budget_cents": 1_000_000_000_000, "pattern_params": {"spend_scale": 1.0}},
    "space": {"tech_level": [3, 5]},
}


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("name",), "a\x1b[31mb", "name"),
        (("objective", "target_event"), "first\x85settlement", "objective.target_event"),
        (("base", "pattern_params"), {"spend\x1b": 1.0}, "base.pattern_params"),
        (("pattern",), "mars\x07terraform", "pattern"),
    ],
    ids=["name", "nested", "key", "enum"],
)
def test_an_experiment_spec_names_the_field_holding_a_control_character(
    client: TestClient, path: tuple[str, ...], value: Any, field: str
) -> None:
    """A control character anywhere in a spec was refused naming `body` (the whole request);
    it names the field, as the CLI does for the same spec file."""
    spec = json.loads(json.dumps(SPEC))
    parent = spec
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    before = head(client)
    response = client.post(f"{API}/experiments", json=spec)
    assert response.status_code == 422, response.text
    assert response.json()["field"].startswith(field), response.json()
    assert response.json()["detail"].startswith(f"{response.json()['field']}: ")
    assert head(client) == before


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("early_stop",), {"at_year": 2, "margin": 2**64}, "early_stop.margin"),
        (("early_stop",), {"at_year": 2, "margin": 2**62 + 1}, "early_stop.margin"),
        (("objective", "min_improvement"), 2**64, "objective.min_improvement"),
        (("objective", "min_improvement"), 1e300, "objective.min_improvement"),
    ],
    ids=["margin-2**64", "margin-2**62+1", "min_improvement-2**64", "min_improvement-1e300"],
)
def test_an_experiment_threshold_beyond_the_bound_of_cents_is_refused(
    client: TestClient, path: tuple[str, ...], value: Any, field: str
) -> None:
    """2**64 was accepted as early_stop.margin or objective.min_improvement: bounded as every
    amount of cents is (2**62), named, nothing written."""
    spec = json.loads(json.dumps(SPEC))
    parent = spec
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    before = head(client)
    response = client.post(f"{API}/experiments", json=spec)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field, response.json()
    assert head(client) == before


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/twins?limit=%D9%A1%D9%A2", "limit"),  # Arabic-Indic digits
        ("/runs?limit=%C2%B2", "limit"),  # superscript two
        ("/runs/R/state?year=%EF%BC%93", "year"),  # fullwidth three
        ("/runs/R/results?from_year=%E0%A5%A9", "from_year"),  # Devanagari three
        ("/twins?status=ready%00", "status"),
        ("/runs?pattern=%1B%5B31m", "pattern"),
        ("/runs?status=%FF", "query"),
        ("/twins?limit=0", "limit"),
        ("/twins?limit=1000000", "limit"),
        ("/twins?cursor=%7B%7D", "cursor"),
        ("/runs/R/results?format=xml", "format"),
        ("/runs/R/results?type=weather", "type"),
        ("/runs/R/events?limit=-1", "limit"),
        ("/twins?status=" + "a" * 9000, "query"),
        ("/twins/%00", "twin_id"),
        ("/runs/" + "9" * 5000, "run_id"),
    ],
)
def test_hostile_queries(client: TestClient, path: str, field: str) -> None:
    twin = clone(client)
    run = queue(client, twin["id"])
    response = client.get(API + path.replace("/R/", f"/{run['id']}/"))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    field=st.sampled_from(
        [
            "pattern",
            "years",
            "budget_cents",
            "seed",
            "tech_level",
            "priority",
            "params",
            "custom_spec",
            "initiated_by",
            "twin_id",
        ]
    ),
    value=JSON,
)
def test_any_json_in_a_run_field_is_never_a_server_error(
    client: TestClient, field: str, value: Any
) -> None:
    twin = client.get(f"{API}/twins", params={"limit": 1}).json()["items"]
    twin_id = twin[0]["id"] if twin else clone(client)["id"]
    body = {"twin_id": twin_id, "pattern": "mars_terraform", "years": 5, "budget_cents": 1}
    response = client.post(f"{API}/runs", json={**body, field: value})
    assert response.status_code in (202, 404, 409, 422), response.text
    if response.status_code == 422:
        assert response.json()["field"]


# --- security ---------------------------------------------------------------------------------


def test_token_guards_writes_only(database_url: str) -> None:
    with client_for(database_url, token="s3cret") as client:
        before = head(client)
        refused = client.post(f"{API}/twins", json={"name": "Mars", "body": "mars"})
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        wrong = client.post(
            f"{API}/twins",
            json={"name": "Mars", "body": "mars"},
            headers={"Authorization": "Bearer guess"},
        )
        assert wrong.status_code == 401
        assert head(client) == before
        made = client.post(
            f"{API}/twins",
            json={"name": "Mars", "body": "mars"},
            headers={"Authorization": "Bearer s3cret"},
        )
        assert made.status_code == 201
        assert client.get(f"{API}/twins/{made.json()['id']}").status_code == 200


def test_read_only_refuses_every_write(database_url: str) -> None:
    with client_for(database_url) as writer:
        twin = clone(writer)
    with client_for(database_url, read_only=True) as client:
        before = head(client)
        for method, path in [
            ("POST", "/twins"),
            ("POST", "/runs"),
            ("DELETE", f"/twins/{twin['id']}"),
            ("POST", f"/twins/{twin['id']}/extend"),
            ("POST", "/experiments"),
        ]:
            response = client.request(method, API + path, json={})
            assert response.status_code == 403, (method, path)
        assert head(client) == before
        assert client.get(f"{API}/twins/{twin['id']}").status_code == 200


def test_no_cors_by_default(client: TestClient) -> None:
    response = client.get(f"{API}/health", headers={"Origin": "http://evil.example"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_twin_pages_cover_every_twin_once(client: TestClient) -> None:
    made = {clone(client, name=f"t{index}")["id"] for index in range(5)}
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get(f"{API}/twins", params=params).json()
        seen += [twin["id"] for twin in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(made)


def test_openapi_describes_the_api(client: TestClient) -> None:
    schema = client.get(f"{API}/openapi.json").json()
    paths = set(schema["paths"])
    for path in (
        "/twins",
        "/runs",
        "/runs/{run_id}/progress",
        "/compare",
        "/experiments",
        "/projections",
        "/health",
    ):
        assert f"{API}{path}" in paths


def test_the_docs_page_loads_everything_from_this_server(client: TestClient) -> None:
    """/api/v1/docs works offline: every script, style and icon it names is a path here."""
    page = client.get(f"{API}/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    named = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    named += re.findall(r"""url:\s*['"]([^'"]+)['"]""", page.text)  # the OpenAPI schema
    assert len(named) >= 4, named
    for url in named:
        assert url.startswith("/") and not url.startswith("//"), f"not a local URL: {url}"
        fetched = client.get(url)
        assert fetched.status_code == 200, url
        assert fetched.content, url
    kinds = {url.rsplit(".", 1)[-1]: client.get(url).headers["content-type"] for url in named}
    assert kinds["js"].startswith("text/javascript") and kinds["css"].startswith("text/css")
    policy = page.headers["content-security-policy"]
    scripts = next(part for part in policy.split(";") if part.strip().startswith("script-src"))
    assert "'unsafe-inline'" not in scripts and "'sha256-" in scripts and "http" not in policy
    assert client.get(f"{API}/docs/redoc.standalone.js").status_code == 404  # named files only
    assert f"{API}/docs" not in client.get(f"{API}/openapi.json").json()["paths"]


# --- validators: an ended run's answers do not change ---------------------------------------


def test_an_ended_runs_answers_carry_strong_etags_and_304(database_url: str) -> None:
    from datetime import timedelta

    from infrastructure.retention import Windows
    from infrastructure.service import Ledger

    with Ledger.open(database_url) as ledger:
        twin = ledger.clone_twin(name="Mars", body="mars")
        ended = ledger.queue_run(twin.id, pattern="mars_terraform", years=40, budget_cents=BUDGET)
        ledger.execute_run(ended.id)
        waiting = ledger.queue_run(twin.id, pattern="mars_terraform", years=40, budget_cents=BUDGET)
    asked = [
        ("results", {}),
        ("results", {"type": "economic"}),
        ("results", {"type": "economic", "from_year": "3", "to_year": "9"}),
        ("results", {"format": "csv"}),
        ("events", {}),
        ("events", {"after_version": "5", "limit": "10"}),
        ("state", {"year": "20"}),
    ]
    with client_for(database_url, resume_queued=False) as client:
        tags = {}
        for path, params in asked:
            url = f"{API}/runs/{ended.id}/{path}"
            full = client.get(url, params=params)
            assert full.status_code == 200, full.text
            tag = full.headers["etag"]
            assert tag.startswith('"') and not tag.startswith("W/"), tag  # strong
            assert full.headers["cache-control"] == "no-cache"
            assert client.get(url, params=params).headers["etag"] == tag  # stable
            for held in (tag, f'"other", {tag}', f"W/{tag}", "*"):
                again = client.get(url, params=params, headers={"If-None-Match": held})
                assert again.status_code == 304, (path, params, held)
                assert again.content == b"" and again.headers["etag"] == tag
            stale = client.get(url, params=params, headers={"If-None-Match": '"other"'})
            assert stale.status_code == 200 and stale.content == full.content
            tags[(path, str(params))] = tag
        assert len(set(tags.values())) == len(asked)  # one tag per representation

        for path, params in (("results", {}), ("events", {}), ("state", {"year": "1"})):
            running = client.get(f"{API}/runs/{waiting.id}/{path}", params=params)
            assert "etag" not in running.headers, path  # a run not ended: no validator
        assert "etag" not in client.get(f"{API}/runs/{ended.id}").headers

        with Ledger.open(database_url) as ledger:  # retention removes the results rows
            ledger.apply_retention(windows=Windows(results=timedelta(0)))
        old = tags[("results", "{}")]
        emptied = client.get(f"{API}/runs/{ended.id}/results", headers={"If-None-Match": old})
        assert emptied.status_code == 200 and emptied.json() == []
        assert emptied.headers["etag"] != old
        kept = tags[("events", "{}")]  # the log keeps every event: their tag holds
        events = client.get(f"{API}/runs/{ended.id}/events", headers={"If-None-Match": kept})
        assert events.status_code == 304


# --- schemathesis: generated requests, positive and negative, find no 500 ----------------------


def test_schemathesis_finds_no_server_error(database_url: str) -> None:
    app = create_app(Settings(url=database_url), executor=NoExecutor())
    failures: list[str] = []
    with served(app) as base:
        clone(httpx.Client(base_url=base))
        schema = schemathesis.openapi.from_url(f"{base}{API}/openapi.json")
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.path.endswith("/progress"):
                continue  # a stream that lasts as long as its run: driven above
            for mode in schemathesis.GenerationMode:

                @settings(
                    max_examples=5,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=operation.as_strategy(generation_mode=mode))
                def check(case: Any) -> None:
                    response = case.call()
                    if response.status_code >= 500:
                        failures.append(
                            f"{case.method} {case.formatted_path} {case.query} {case.body!r}: "
                            f"{response.status_code} {response.text[:200]}"
                        )

                # Unsatisfiable: no negative case exists (an operation without inputs).
                with contextlib.suppress(Unsatisfiable):
                    check()
    assert failures == []


# --- twinledger serve -------------------------------------------------------------------------


def test_serve_binds_loopback_and_refuses_an_open_writable_bind(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from infrastructure.cli import app

    started: list[dict[str, Any]] = []

    def fake_run(application: FastAPI, **options: Any) -> None:
        started.append({"app": application, **options})

    monkeypatch.setattr(uvicorn, "run", fake_run)
    monkeypatch.delenv("TWINLEDGER_API_TOKEN", raising=False)
    db = f"sqlite:///{tmp_path}/ledger.db"
    runner = CliRunner()
    done = runner.invoke(app, ["serve", "--db", db, "--read-only"])
    assert done.exit_code == 0, done.output
    assert (started[0]["host"], started[0]["port"]) == ("127.0.0.1", 8000)
    assert started[0]["app"].state.settings.read_only
    refused = runner.invoke(app, ["--db", db, "serve", "--host", "0.0.0.0"])
    assert refused.exit_code == 2 and "host" in refused.output
    assert len(started) == 1
    # a bad --scheduler: one line naming it before the server starts (uvicorn printed a
    # traceback of its failed start-up, where the executor is built)
    refused = runner.invoke(app, ["--db", db, "serve", "--scheduler", "bogus"])
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.startswith("error: scheduler: 'bogus'"), refused.stderr
    assert "Traceback" not in refused.output and len(started) == 1


def test_concurrent_first_requests_all_succeed(database_url: str) -> None:
    """The pool opens its ledgers at the same moment: none may race another's DDL (500)."""
    app = create_app(Settings(url=database_url, pool_size=6), executor=NoExecutor())
    statuses: list[int] = []
    with served(app) as base:
        barrier = threading.Barrier(12)

        def client() -> None:
            with httpx.Client(base_url=base, timeout=60) as http:
                barrier.wait()
                for path in ("/twins", "/runs", "/health"):
                    statuses.append(http.get(API + path).status_code)

        threads = [threading.Thread(target=client) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses == [200] * 36


def test_progress_fans_out_to_every_client(database_url: str) -> None:
    """Several streams on one run all see it end; the server holds one follower for all."""
    app = create_app(Settings(url=database_url))
    with served(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        twin = clone(http)
        run = queue(http, twin["id"], years=200, seed=5)
        streams: list[list[tuple[str, dict[str, Any]]]] = []

        def watch() -> None:
            streams.append(follow(base, run["id"]))

        threads = [threading.Thread(target=watch) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert len(streams) == 4
        for events in streams:
            assert events[-1][0] == "end"
            assert events[-1][1]["years_recorded"] == 200
            assert events[-1][1]["result_digest"].startswith("sha256:")
        assert http.get(f"{API}/health").json()["live_clients"] == 0
        # A stream opened after the end says so at once.
        assert [kind for kind, _ in follow(base, run["id"])] == ["progress", "end"]
        missing = http.get(f"{API}/runs/{MISSING}/progress")
        assert missing.status_code == 404 and missing.json()["field"] == "run_id"


def test_a_lost_database_is_503_and_the_connection_is_replaced(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eventsourcing.persistence import OperationalError

    from infrastructure.service import Ledger

    def gone(self: Ledger) -> list[Any]:
        raise OperationalError("server closed the connection unexpectedly")

    pool = client.app.state.pool  # type: ignore[attr-defined]
    assert client.get(f"{API}/bodies").status_code == 200
    opened = pool._opened
    monkeypatch.setattr(Ledger, "bodies", gone)
    response = client.get(f"{API}/bodies")
    assert response.status_code == 503, response.text
    assert "Traceback" not in response.text and "unavailable" in response.json()["detail"]
    assert pool._opened == opened - 1  # the ledger that met it was closed, not pooled again
    monkeypatch.undo()
    assert client.get(f"{API}/bodies").status_code == 200


def test_projections_report_parked_events(database_url: str) -> None:
    """An event no projection can apply is parked, and GET /projections lists it."""
    import sqlite3
    from uuid import uuid4

    import psycopg
    from psycopg import sql

    from infrastructure.settings import resolve_database

    with client_for(database_url) as client:
        clone(client)
        database = resolve_database(database_url)
        bad = (uuid4(), 1, "domain.twin:TwinCloned", b'{"not": "a twin"}')
        if database.is_postgres:
            with psycopg.connect(database.psycopg_conninfo(), autocommit=True) as connection:
                connection.execute(
                    sql.SQL(
                        "INSERT INTO {} (originator_id, originator_version, topic, state)"
                        " VALUES (%s, %s, %s, %s)"
                    ).format(sql.Identifier(database.schema, "twinledger_events")),
                    bad,
                )
        else:
            with sqlite3.connect(database.sqlite_path) as connection:
                connection.execute(
                    "INSERT INTO stored_events (originator_id, originator_version, topic, state)"
                    " VALUES (?, ?, ?, ?)",
                    (bad[0].hex, *bad[1:]),
                )
        clone(client, name="after")  # the write catches the tables up past the bad event
        report = client.get(f"{API}/projections").json()
        parked = report["parked"]
        assert [(row["projection"], row["originator_id"]) for row in parked] == [
            ("twins", str(bad[0]))
        ]
        twins = next(p for p in report["projections"] if p["name"] == "twins")
        assert twins["parked"] == 1 and twins["lag"] == 0
        assert client.get(f"{API}/health").json()["lag"] == 0
