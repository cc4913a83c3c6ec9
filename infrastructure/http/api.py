"""The JSON API's routes under /api/v1 (docs/http.md): parse, call the service layer, send.

Request bodies are pydantic models of JSON *shapes* (strict types: a float is never taken for
an integer, a number never for a string); the rules (ranges, patterns, money, text) are those
of infrastructure/inputs.py, applied by the service layer, so the CLI and the API refuse the
same inputs with the same messages. Routes are plain functions: FastAPI runs them in its thread
pool, each with a Ledger of the pool for the length of the request.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)

from domain.errors import ValidationError
from infrastructure import views
from infrastructure.experiments import ExperimentFile
from infrastructure.http.caching import entity_tag, mark, not_modified
from infrastructure.http.sse import MAX_CLIENTS, LogFollower, progress_stream
from infrastructure.pages import DEFAULT_LIMIT, MAX_LIMIT
from infrastructure.service import MAX_EVENTS_PAGE, Ledger
from projections.compare import Comparison


class Problem(BaseModel):
    """Every error's body (docs/http.md, Errors)."""

    detail: str = Field(description="what is wrong, starting with the field: 'years: ...'")
    field: str | None = Field(description="the input at fault: budget_cents, twin_id, body, ...")
    errors: list[dict[str, str]] | None = Field(
        None, description="422 from request parsing: every field, message and type"
    )


router = APIRouter(
    responses={
        401: {"model": Problem, "description": "a write without the right bearer token"},
        403: {"model": Problem, "description": "a write on a read-only server"},
        404: {"model": Problem, "description": "an id that names nothing"},
        409: {"model": Problem, "description": "a conflict: an ended twin or run, ..."},
        413: {"model": Problem, "description": "a body over the size limit"},
        422: {"model": Problem, "description": "bad input, naming the field"},
        503: {"model": Problem, "description": "the database is unavailable or busy"},
    }
)

JsonScalar = StrictStr | StrictInt | StrictFloat | StrictBool
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="rows per page")]
Cursor = Annotated[
    str | None, Query(max_length=4096, description="next_cursor of the previous page")
]
Text = Annotated[str | None, Query(max_length=200)]
RUN_FIELDS = {"duration_years": "years", "pattern_params": "params"}


@contextmanager
def body_field_names() -> Iterator[None]:
    """A run's errors name the body's fields (``years``, ``params``), not the service's."""
    try:
        yield
    except ValidationError as error:
        head, _, rest = error.field.partition(".")
        renamed = RUN_FIELDS.get(head, head) + ("." + rest if rest else "")
        raise ValidationError(renamed, error.message) from None


NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "an ended run's answer, unchanged: If-None-Match named its ETag"}
}


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CloneTwinIn(_Shape):
    """POST /twins: give ``body`` (a catalog key, GET /bodies) or ``body_file`` (the content of
    a body file: docs/examples/body.json)."""

    name: StrictStr
    body: StrictStr | None = None
    body_file: dict[str, Any] | None = None
    expires_in: StrictStr = Field("30d", description="lifetime: 30d, 12h or 90m")
    description: StrictStr | None = None
    created_by: StrictStr = "api"
    simulation_type: StrictStr | None = None
    simulation_parameters: dict[str, JsonScalar] = {}


class ExtendIn(_Shape):
    by: StrictStr = Field("30d", description="how much later: 30d, 12h or 90m")


class RunIn(_Shape):
    """POST /runs: the run's recorded inputs (money in integer GCC cents)."""

    twin_id: StrictStr
    pattern: StrictStr = Field(description="mars_terraform, venus_industrial, titan_fuel, ...")
    years: StrictInt = Field(description="duration, 1 to 1000")
    budget_cents: StrictInt
    seed: StrictInt | None = None
    tech_level: StrictInt = 5
    priority: StrictStr = "normal"
    params: dict[str, StrictFloat] = {}
    custom_spec: dict[str, Any] | None = None
    initiated_by: StrictStr = "api"
    interventions: list[StrictStr | dict[str, Any]] = Field(
        default=[],
        description="YEAR:KEY=VALUE texts or {year, key, value, mode} objects (docs/simulation.md)",
    )


class ForkIn(_Shape):
    """POST /runs/{id}/fork: years 1..at_year are the parent's; the changes apply after."""

    at_year: StrictInt
    budget_cents: StrictInt | None = None
    tech_level: StrictInt | None = None
    priority: StrictStr | None = None
    params: dict[str, StrictFloat] = {}
    seed: StrictInt | None = None
    interventions: list[StrictStr | dict[str, Any]] = []
    initiated_by: StrictStr = "api"


class CancelIn(_Shape):
    reason: StrictStr = ""
    by: StrictStr = "api"


class Health(BaseModel):
    status: str
    database: str
    head: int
    lag: int
    read_only: bool
    live_clients: int


@contextmanager
def use(request: Request) -> Iterator[Ledger]:
    with request.app.state.pool.ledger() as ledger:
        yield ledger


def _location(response: Response, path: str) -> None:
    response.headers["Location"] = f"/api/v1/{path}"


# --- bodies and twins -------------------------------------------------------------------------


@router.get("/bodies", response_model=list[views.Body], tags=["twins"])
def bodies(request: Request) -> list[views.Body]:
    """The built-in reference bodies a twin can be cloned from."""
    with use(request) as ledger:
        return ledger.bodies()


@router.post("/twins", status_code=201, response_model=views.Twin, tags=["twins"])
def clone_twin(request: Request, response: Response, twin: CloneTwinIn) -> views.Twin:
    """Clone a body into a new twin (TwinCloned). 201 with Location."""
    with use(request) as ledger:
        made = ledger.clone_twin(
            name=twin.name,
            body=twin.body,
            body_file=twin.body_file,
            expires_in=twin.expires_in,
            description=twin.description,
            created_by=twin.created_by,
            simulation_type=twin.simulation_type,
            simulation_parameters=twin.simulation_parameters,
        )
    _location(response, f"twins/{made.id}")
    return made


@router.get("/twins", response_model=views.Page[views.Twin], tags=["twins"])
def list_twins(
    request: Request,
    status: Text = None,
    body: Text = None,
    created_by: Text = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> views.Page[views.Twin]:
    """Twins in creation order, one page at a time (keyset: pass next_cursor back)."""
    with use(request) as ledger:
        return ledger.twins(
            status=status, body=body, created_by=created_by, limit=limit, cursor=cursor
        )


@router.get("/twins/{twin_id}", response_model=views.Twin, tags=["twins"])
def get_twin(request: Request, twin_id: str) -> views.Twin:
    with use(request) as ledger:
        return ledger.twin(twin_id)


@router.post("/twins/{twin_id}/extend", response_model=views.Twin, tags=["twins"])
def extend_twin(request: Request, twin_id: str, extend: ExtendIn) -> views.Twin:
    """Move the twin's expiry later (TwinExpiryExtended)."""
    with use(request) as ledger:
        return ledger.extend_twin(twin_id, by=extend.by)


@router.delete("/twins/{twin_id}", response_model=views.Twin, tags=["twins"])
def delete_twin(
    request: Request,
    twin_id: str,
    reason: Annotated[str, Query(max_length=2000)] = "",
    by: Annotated[str, Query(max_length=200)] = "api",
) -> views.Twin:
    """Soft-delete: the twin keeps its history and accepts no new runs (TwinDeleted). 409 while
    runs are under way."""
    with use(request) as ledger:
        return ledger.delete_twin(twin_id, reason=reason, by=by)


# --- runs -------------------------------------------------------------------------------------


@router.post("/runs", status_code=202, response_model=views.Run, tags=["runs"])
def queue_run(request: Request, response: Response, run: RunIn) -> views.Run:
    """Queue a run (RunQueued) and hand it to the background executor. 202 with Location:
    follow GET /runs/{id}/progress or poll GET /runs/{id}."""
    with use(request) as ledger, body_field_names():
        queued = ledger.queue_run(
            run.twin_id,
            pattern=run.pattern,
            years=run.years,
            budget_cents=run.budget_cents,
            seed=run.seed,
            tech_level=run.tech_level,
            priority=run.priority,
            params=run.params,
            custom_spec=run.custom_spec,
            initiated_by=run.initiated_by,
            interventions=run.interventions,
        )
    request.app.state.executor.submit(UUID(queued.id))
    _location(response, f"runs/{queued.id}")
    return queued


@router.get("/runs", response_model=views.Page[views.Run], tags=["runs"])
def list_runs(
    request: Request,
    filter: Annotated[
        str | None,
        Query(
            max_length=4000,
            description="e.g. pattern = 'mars_terraform' and summary.habitability > 0.3 "
            "and params.tech_level >= 5 (docs/queries.md, Search)",
        ),
    ] = None,
    order_by: Annotated[
        str | None, Query(max_length=400, description="e.g. summary.habitability desc")
    ] = None,
    twin: Text = None,
    status: Text = None,
    pattern: Text = None,
    experiment: Text = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> views.Page[views.Run]:
    """Runs matching the filter language, in order_by order (default: when queued), one page at
    a time (keyset: pass next_cursor back)."""
    with use(request) as ledger:
        return ledger.runs(
            where=filter,
            order_by=order_by,
            twin=twin,
            status=status,
            pattern=pattern,
            experiment=experiment,
            limit=limit,
            cursor=cursor,
        )


@router.get("/compare", response_model=Comparison, tags=["runs"])
def compare(
    request: Request,
    runs: Annotated[str, Query(max_length=1000, description="2 to 6 run ids, comma-separated")],
) -> Comparison:
    """Runs side by side: parameters, summary metrics, the first diverging year, series."""
    with use(request) as ledger:
        return ledger.compare([part for part in runs.split(",") if part.strip()])


@router.get("/runs/{run_id}", response_model=views.Run, tags=["runs"])
def get_run(request: Request, run_id: str) -> views.Run:
    with use(request) as ledger:
        return ledger.run(run_id)


@router.post("/runs/{run_id}/fork", status_code=202, response_model=views.Run, tags=["runs"])
def fork_run(request: Request, response: Response, run_id: str, fork: ForkIn) -> views.Run:
    """Fork a run at a year with changes (a RunQueued carrying the parent's inputs and the fork
    point) and hand it to the background executor; 202 with Location, like POST /runs."""
    with use(request) as ledger, body_field_names():
        forked = ledger.fork_run(
            run_id,
            at_year=fork.at_year,
            budget_cents=fork.budget_cents,
            tech_level=fork.tech_level,
            priority=fork.priority,
            params=fork.params,
            seed=fork.seed,
            interventions=fork.interventions,
            initiated_by=fork.initiated_by,
        )
    request.app.state.executor.submit(UUID(forked.id))
    _location(response, f"runs/{forked.id}")
    return forked


@router.get("/runs/{run_id}/lineage", response_model=views.RunLineage, tags=["runs"])
def run_lineage(request: Request, run_id: str) -> views.RunLineage:
    """The run's interventions, fork lineage, forks made from it and provenance."""
    with use(request) as ledger:
        return ledger.lineage(run_id)


@router.post("/runs/{run_id}/cancel", response_model=views.Run, tags=["runs"])
def cancel_run(request: Request, run_id: str, cancel: CancelIn | None = None) -> views.Run:
    """Cancel a queued or running run (RunCancelled); 409 if it has ended."""
    cancel = cancel or CancelIn()
    with use(request) as ledger:
        return ledger.cancel_run(run_id, reason=cancel.reason, by=cancel.by)


@router.get(
    "/runs/{run_id}/results",
    response_model=list[views.Result],
    tags=["runs"],
    responses={200: {"content": {"text/csv": {}}}, **NOT_MODIFIED},
)
def results(
    request: Request,
    run_id: str,
    type: Text = None,
    from_year: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    to_year: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> Response:
    """Per-year results (economic, environmental, timeline), as JSON or CSV (JSON columns as
    JSON text). An ended run's carry an ETag: send it back in If-None-Match for 304."""
    with use(request) as ledger:
        ended = ledger.ended_run(run_id)
        tag = None
        if ended is not None:
            tag = entity_tag(
                "results",
                ended.run_id,
                ended.last_version,
                ended.result_digest,
                ended.results_held,  # retention removes rows: the tag changes
                type,
                from_year,
                to_year,
                format,
            )
        unchanged = not_modified(request, tag)
        if unchanged is not None:
            return unchanged
        if format == "json":
            body = ledger.results_json(
                run_id, result_type=type, from_year=from_year, to_year=to_year
            )
            response = Response(body, media_type="application/json")
        else:
            rows = ledger.results(run_id, result_type=type, from_year=from_year, to_year=to_year)
            response = Response(csv_text([row.model_dump() for row in rows]), media_type="text/csv")
    mark(response, tag)
    return response


def csv_text(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV with a header; JSON values (objects, lists) as JSON text."""
    import json

    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    key: json.dumps(value) if isinstance(value, dict | list) else value
                    for key, value in row.items()
                }
            )
    return buffer.getvalue()


@router.get(
    "/runs/{run_id}/events",
    response_model=list[views.StoredEvent],
    tags=["runs"],
    responses=NOT_MODIFIED,
)
def events(
    request: Request,
    response: Response,
    run_id: str,
    after_version: Annotated[int, Query(ge=0, le=2**31)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS_PAGE)] = MAX_EVENTS_PAGE,
) -> Any:
    """The run's stored events, as recorded (the audit trail); page with after_version. An
    ended run's carry an ETag: send it back in If-None-Match for 304."""
    with use(request) as ledger:
        ended = ledger.ended_run(run_id)
        tag = (
            None
            if ended is None
            else entity_tag("events", ended.run_id, ended.last_version, after_version, limit)
        )
        unchanged = not_modified(request, tag)
        if unchanged is not None:
            return unchanged
        found = ledger.events(run_id, after_version=after_version, limit=limit)
    mark(response, tag)
    return found


@router.get(
    "/runs/{run_id}/state", response_model=views.RunState, tags=["runs"], responses=NOT_MODIFIED
)
def state(
    request: Request,
    response: Response,
    run_id: str,
    year: Annotated[int, Query(ge=1, le=1_000_000)],
) -> Any:
    """Time travel: the run at the end of ``year``, from its recorded events only. An ended
    run's carry an ETag: send it back in If-None-Match for 304."""
    with use(request) as ledger:
        ended = ledger.ended_run(run_id)
        tag = None if ended is None else entity_tag("state", ended.run_id, ended.last_version, year)
        unchanged = not_modified(request, tag)
        if unchanged is not None:
            return unchanged
        found = ledger.state_at_year(run_id, year)
    mark(response, tag)
    return found


@router.post("/runs/{run_id}/replay", response_model=views.ReplayVerdict, tags=["runs"])
def replay(request: Request, run_id: str, allow_other_engine: bool = False) -> views.ReplayVerdict:
    """Re-simulate the run from its RunQueued and compare every year: identical, or the first
    divergence. Writes nothing."""
    with use(request) as ledger:
        return ledger.replay_run(run_id, allow_other_engine=allow_other_engine)


@router.get(
    "/runs/{run_id}/progress",
    tags=["runs"],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def progress(request: Request, run_id: str) -> StreamingResponse:
    """Server-Sent Events: ``progress`` {status, years_recorded, duration_years, progress} each
    time the run's recorded years change, ``end`` when it has ended (the stream then closes)."""
    follower: LogFollower = request.app.state.follower

    def read() -> dict[str, Any]:
        with use(request) as ledger:
            run = ledger.run(run_id)
        return {
            "run_id": run.id,
            "status": run.status,
            "years_recorded": run.current_year,
            "duration_years": run.duration_years,
            "progress": run.progress,
            "ended": run.status in ("completed", "failed", "cancelled"),
            "result_digest": run.result_digest,
        }

    await run_in_threadpool(read)  # 404/422 as JSON before the stream starts
    if follower.clients >= MAX_CLIENTS:
        from infrastructure.http.app import Busy

        raise Busy()

    async def next_row() -> dict[str, Any]:
        return await run_in_threadpool(read)

    return StreamingResponse(
        progress_stream(follower, next_row),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# --- experiments ------------------------------------------------------------------------------


@router.post("/experiments", status_code=202, response_model=views.Experiment, tags=["experiments"])
def start_experiment(
    request: Request, response: Response, spec: ExperimentFile
) -> views.Experiment:
    """Start an experiment from a spec (the fields of a spec file, docs/experiments.md): 202
    with Location; the background executor evaluates it."""
    with use(request) as ledger:
        started = ledger.start_experiment(spec, started_by="api")
    request.app.state.executor.submit_experiment(UUID(started.id))
    _location(response, f"experiments/{started.id}")
    return started


@router.get("/experiments", response_model=views.Page[views.Experiment], tags=["experiments"])
def list_experiments(
    request: Request,
    twin: Text = None,
    status: Text = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> views.Page[views.Experiment]:
    with use(request) as ledger:
        return ledger.experiments(twin=twin, status=status, limit=limit, cursor=cursor)


@router.get(
    "/experiments/{experiment_id}", response_model=views.ExperimentDetail, tags=["experiments"]
)
def get_experiment(request: Request, experiment_id: str) -> views.ExperimentDetail:
    """The experiment and every iteration, accepted or rejected."""
    with use(request) as ledger:
        return ledger.experiment(experiment_id)


@router.post(
    "/experiments/{experiment_id}/replay",
    response_model=views.ExperimentVerdict,
    tags=["experiments"],
)
def replay_experiment(
    request: Request, experiment_id: str, allow_other_engine: bool = False
) -> views.ExperimentVerdict:
    """Re-run the search from ExperimentStarted and compare every candidate, digest and
    decision. Writes nothing; takes as long as the experiment's simulations."""
    with use(request) as ledger:
        return ledger.replay_experiment(experiment_id, allow_other_engine=allow_other_engine)


# --- the read side and health -----------------------------------------------------------------


@router.get("/projections", response_model=views.ProjectionsReport, tags=["server"])
def projections(request: Request) -> views.ProjectionsReport:
    """Each projection's position, the head of the log, the lag, parked events."""
    with use(request) as ledger:
        return ledger.projections()


@router.get("/health", response_model=Health, tags=["server"])
def health(request: Request) -> Health:
    """The server answers and reaches its database; lag is the largest projection lag."""
    with use(request) as ledger:
        report = ledger.projections()
        backend = ledger.database.backend
    follower: LogFollower = request.app.state.follower
    return Health(
        status="ok" if not follower.last_error else "degraded",
        database=backend,
        head=report.head,
        lag=max((p.lag for p in report.projections), default=0),
        read_only=request.app.state.settings.read_only,
        live_clients=follower.clients,
    )
