"""The service layer: the one Python API that the CLI, the HTTP API and scripts call.

``Ledger`` wraps the TwinLedger application (commands, infrastructure/application.py) and the
read tables (queries, projections/), so entry points hold no SQL and no aggregate logic: they
parse, call a method here, and print or serialise what it returns (infrastructure/views.py).
Commands validate their inputs with the pydantic models of infrastructure/inputs.py and raise
domain.errors (each names the field); a refused command writes nothing. After every write the
read tables catch up before the method returns, so a caller reads its own writes.

One Ledger holds database connections and is not for concurrent use: open one per thread (the
HTTP server keeps a small pool of them). docs/api.md shows it in use.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeVar
from uuid import UUID

import msgspec
from pydantic import BaseModel, TypeAdapter

from domain.catalog import CATALOG
from domain.errors import NotFound, TwinLedgerError, ValidationError
from domain.experiment import Evaluation
from domain.experiment import Experiment as ExperimentAggregate
from domain.replay import EngineVersionMismatch, ReplayReport
from domain.run import SimulationRun
from domain.twin import DigitalTwin
from domain.values import RunStatus
from infrastructure import pages, views
from infrastructure.application import Clock, Interventions, Progress, TwinLedger, utc_now
from infrastructure.archive import ImportReport, export, import_archive
from infrastructure.codec import named_state
from infrastructure.errors import UnreadableStream
from infrastructure.executors import claimed
from infrastructure.experiments import (
    ExperimentFile,
    continue_experiment,
    get_experiment,
    read_experiment_file,
    replay_experiment,
    resolve_run,
    resume_experiment,
    run_experiment,
    start_experiment,
)
from infrastructure.expiry import DEFAULT_BATCH, ExpiryReport, expire_twins
from infrastructure.inputs import BodyFile, parse_duration, validate
from infrastructure.result_text import results_held, results_json
from infrastructure.retention import RetentionReport, Windows, apply_retention
from infrastructure.settings import Database
from projections import queries
from projections.compare import Comparison, compare_runs
from projections.experiments import EXPERIMENTS
from projections.runner import ProjectionsStopped, Projector, keep_current
from projections.runs import SIMULATION_RUNS
from projections.search import check_equal, search_runs
from projections.store import Store
from projections.tables import Table
from projections.twins import DIGITAL_TWINS

Warn = Callable[[str], None]
Row = TypeVar("Row")
Listed = TypeVar("Listed", bound=BaseModel)
RESULTS = TypeAdapter(list[views.Result])  # one validation for all rows: 2x faster per row
MAX_EVENTS_PAGE = 2000
STRUCTURED_ID_MIN = 37  # longer than a UUID: EXPERIMENT_ID-iterN-PURPOSE[-sampleK]


class ReadTablesBehind(TwinLedgerError):
    """A write succeeded, but the read tables do not show it: a projection is stopped or has
    parked the event (``twinledger projections status``). The write stands; ``ident`` names it."""

    def __init__(self, field: str, ident: str) -> None:
        super().__init__(
            f"{field}: {ident} was written, but the read tables do not show it yet "
            "(a projection is behind: see projections status)"
        )
        self.field = field
        self.ident = ident


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


def _duration(value: timedelta | str, field: str) -> timedelta:
    return parse_duration(value, field) if isinstance(value, str) else value


class Ledger:
    """Commands and queries over one ledger database (see the module docstring)."""

    def __init__(
        self,
        application: TwinLedger,
        *,
        catch_up_reads: bool = True,
        warn: Warn = _stderr,
    ) -> None:
        if application.database is None:
            raise ValueError("the application must be opened on a database (TwinLedger.open)")
        self.application = application
        self.database: Database = application.database
        self.catch_up_reads = catch_up_reads
        self.warn = warn
        self._projector: Projector | None = None
        self._detach = keep_current(application, warn)

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        clock: Clock = utc_now,
        create_tables: bool = True,
        catch_up_reads: bool = True,
        warn: Warn = _stderr,
    ) -> Ledger:
        """Open the ledger at a database URL (infrastructure/settings.py; None: the default).

        ``catch_up_reads`` (default): every query first catches the read tables up to the head of
        the log, so writes by other processes are seen too; a server that follows the log in the
        background turns it off.
        """
        application = TwinLedger.open(url, clock=clock, create_tables=create_tables)
        return cls(application, catch_up_reads=catch_up_reads, warn=warn)

    def close(self) -> None:
        self._detach()
        if self._projector is not None:
            self._projector.close()
            self._projector = None
        self.application.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def projector(self) -> Projector:
        """The read side: the projections and the store the queries read."""
        if self._projector is None:
            self._projector = Projector(self.database)
        return self._projector

    def catch_up(self) -> None:
        """Bring the read tables up to the head of the log (a stopped projection is warned of)."""
        try:
            self.projector.catch_up()
        except ProjectionsStopped as stopped:
            self.warn(f"warning: read tables are behind: {stopped}")

    def _tables(self) -> Store:
        if self.catch_up_reads:
            self.catch_up()
        return self.projector.store

    def _listed(
        self,
        view: type[Listed],
        table: Table,
        at: str,
        equal: Mapping[str, Any],
        limit: int,
        cursor: str | None,
    ) -> views.Page[Listed]:
        """One page of ``table`` in (``at``, id) order, rows whose columns equal the values
        given (None: any), each as ``view``: the shape of every simple list query."""
        for column, value in equal.items():
            if isinstance(value, str):
                check_equal(column, value)  # e.g. --status: refused as runs' are
        where = [(f"{column} = %s", value) for column, value in equal.items() if value is not None]
        rows, after = pages.page(self._tables(), table, at, where, limit=limit, cursor=cursor)
        items = [view.model_validate(row) for row in rows]
        return views.Page[view](items=items, next_cursor=after)  # type: ignore[valid-type]

    def _written(self, read: Callable[[str], Row], field: str, ident: str) -> Row:
        """The row of what was just written; ReadTablesBehind if the tables do not show it."""
        try:
            return read(ident)
        except NotFound:
            raise ReadTablesBehind(field, ident) from None

    def event_count(self) -> int:
        """How many events the log holds (its head position)."""
        return self.application.event_count()

    # --- twins ----------------------------------------------------------------------------------

    def bodies(self) -> list[views.Body]:
        """The built-in reference bodies (docs/catalog.md)."""
        return [
            views.Body(
                key=body.key,
                name=body.name,
                description=body.description,
                solar_system=body.solar_system,
                simulation_type=str(body.simulation_type),
                mean_temperature_k=body.state.atmosphere.mean_temperature_k,
                surface_pressure_kpa=body.state.atmosphere.surface_pressure_kpa,
                surface_gravity_m_s2=body.state.geosphere.surface_gravity_m_s2,
                state=msgspec.to_builtins(body.state),
            )
            for body in CATALOG.values()
        ]

    def clone_twin(
        self,
        *,
        name: str | None = None,
        body: str | None = None,
        body_file: str | Path | Mapping[str, Any] | None = None,
        expires_in: timedelta | str | None = None,
        expires_at: datetime | None = None,
        description: str | None = None,
        created_by: str = "api",
        simulation_type: str | None = None,
        simulation_parameters: dict[str, Any] | None = None,
    ) -> views.Twin:
        """Clone a catalog body, or a body described by a file (a path) or its content (a
        mapping, as in a body file: docs/examples/), into a new twin."""
        described: str | BodyFile | None
        if isinstance(body_file, Mapping):
            try:
                described = validate(BodyFile, dict(body_file), root="body_file")
            except ValidationError as error:
                raise ValidationError(f"body_file.{error.field}", error.message) from None
        else:
            described = None if body_file is None else str(body_file)
        twin_id = self.application.clone_twin(
            name=name,
            body=body,
            body_file=described,
            expires_at=expires_at,
            expires_in=None if expires_in is None else _duration(expires_in, "expires_in"),
            description=description,
            created_by=created_by,
            simulation_type=simulation_type,
            simulation_parameters=simulation_parameters,
        )
        return self._written(self.twin, "twin_id", str(twin_id))

    def extend_twin(self, twin_id: str, *, by: timedelta | str) -> views.Twin:
        """Move a twin's expiry later (TwinExpiryExtended)."""
        self.application.extend_twin(twin_id, by=_duration(by, "by"))
        return self.twin(twin_id)

    def delete_twin(self, twin_id: str, *, reason: str = "", by: str = "api") -> views.Twin:
        """Soft-delete a twin: its events stay, it accepts no more runs (TwinDeleted)."""
        self.application.delete_twin(twin_id, by=by, reason=reason)
        return self.twin(twin_id)

    def twin(self, twin_id: str) -> views.Twin:
        """One twin, from the digital_twins table."""
        key = _uuid("twin_id", twin_id)
        rows, _ = pages.page(
            self._tables(),
            DIGITAL_TWINS,
            "created_at",
            [("id = %s", self._id(key))],
            limit=1,
            cursor=None,
        )
        if not rows:
            raise NotFound("twin_id", str(key))
        return views.Twin.model_validate(rows[0])

    def twins(
        self,
        *,
        status: str | None = None,
        body: str | None = None,
        created_by: str | None = None,
        limit: int = pages.DEFAULT_LIMIT,
        cursor: str | None = None,
    ) -> views.Page[views.Twin]:
        """Twins in creation order, filtered, one page at a time."""
        equal = {"status": status, "source_body": body, "created_by": created_by}
        return self._listed(views.Twin, DIGITAL_TWINS, "created_at", equal, limit, cursor)

    def twin_from_events(self, twin_id: str) -> DigitalTwin:
        """The twin aggregate, folded from its events (the log, not the read tables)."""
        return self.application.get_twin(twin_id)

    # --- runs -----------------------------------------------------------------------------------

    def queue_run(
        self,
        twin_id: str,
        *,
        pattern: str,
        years: int,
        budget_cents: int,
        seed: int | None = None,
        tech_level: int = 5,
        priority: str = "normal",
        params: dict[str, Any] | None = None,
        custom_spec: dict[str, Any] | None = None,
        initiated_by: str = "api",
        interventions: Interventions | None = None,
    ) -> views.Run:
        """Queue a run on a twin (RunQueued records every input; nothing is simulated yet).
        ``interventions``: ``YEAR:KEY=VALUE`` texts or ``{year, key, value, mode}`` objects,
        applied at the start of their years (docs/simulation.md)."""
        run_id = self.application.queue_run(
            twin_id,
            pattern=pattern,
            duration_years=years,
            budget_cents=budget_cents,
            tech_level=tech_level,
            priority=priority,
            pattern_params=params,
            custom_spec=custom_spec,
            seed=seed,
            initiated_by=initiated_by,
            interventions=interventions,
        )
        return self._written(self.run, "run_id", str(run_id))

    def fork_run(
        self,
        run_id: str,
        *,
        at_year: int,
        budget_cents: int | None = None,
        tech_level: int | None = None,
        priority: str | None = None,
        params: dict[str, Any] | None = None,
        seed: int | None = None,
        interventions: Interventions | None = None,
        initiated_by: str = "api",
    ) -> views.Run:
        """Queue a fork of a run (POST /api/v1/runs/{id}/fork): years 1..at_year are the
        parent's, the changes apply from year at_year + 1; execute it like any queued run."""
        fork_id = self.application.fork_run(
            self.resolve_run(run_id),
            at_year=at_year,
            budget_cents=budget_cents,
            tech_level=tech_level,
            priority=priority,
            pattern_params=params,
            seed=seed,
            interventions=interventions,
            initiated_by=initiated_by,
        )
        return self._written(self.run, "run_id", str(fork_id))

    def lineage(self, run_id: str) -> views.RunLineage:
        """A run's interventions, fork lineage, forks made from it and provenance (its events)."""
        run = self.run_from_events(run_id)
        provenance = run.provenance
        return views.RunLineage(
            run_id=str(run.id),
            interventions=[item.text() for item in run.interventions],
            lineage=[
                views.ForkPoint(
                    parent_run_id=str(point.parent_run_id),
                    at_year=point.at_year,
                    changes=msgspec.to_builtins(point.changes),
                    described=point.changes.describe(),
                )
                for point in run.forks
            ],
            forks=[
                views.Fork(run_id=str(child), at_year=at_year)
                for child, at_year in self.application.children_of(run.id)
            ],
            provenance=None
            if provenance is None
            else views.Provenance.model_validate(msgspec.to_builtins(provenance)),
        )

    def run_detail(self, run_id: str) -> views.RunDetail:
        """A run's row with its lineage (``show-run --format json``): the parent and fork year
        it was forked at with the changes, and the forks made from it, in one record."""
        run = self.run(run_id)
        lineage = self.lineage(run.id)
        return views.RunDetail(
            **run.model_dump(),
            forked_from=lineage.lineage[-1] if lineage.lineage else None,
            lineage=lineage,
        )

    def execute_run(
        self, run_id: str, *, chunk_years: int | None = None, on_progress: Progress | None = None
    ) -> views.Run:
        """Execute a queued run here, or resume one a crash left running; blocks until it ends.

        Under the run's fleet-wide claim (infrastructure/executors.py), as every executor:
        RunBusy at once if another process is executing it."""
        key = self.resolve_run(run_id)
        with claimed(self.database, key, timeout=0):
            self.application.execute_run(key, chunk_years=chunk_years, on_progress=on_progress)
        return self.run(run_id)

    def cancel_run(self, run_id: str, *, reason: str = "", by: str = "api") -> views.Run:
        """Cancel a queued or running run; a running executor stops at its next chunk."""
        self.application.cancel_run(self.resolve_run(run_id), reason=reason, by=by)
        return self.run(run_id)

    def resolve_run(self, run_id: str) -> UUID:
        """A run id, or a structured id ``EXPERIMENT_ID-iterN-PURPOSE[-sampleK]``, as a UUID."""
        text = run_id.strip()
        if len(text) >= STRUCTURED_ID_MIN and text[36:37] == "-":
            return resolve_run(self.application, text)
        return _uuid("run_id", text)

    def run(self, run_id: str) -> views.Run:
        """One run, from the simulation_runs table."""
        key = self.resolve_run(run_id)
        rows, _ = pages.page(
            self._tables(),
            SIMULATION_RUNS,
            "queued_at",
            [("id = %s", self._id(key))],
            limit=1,
            cursor=None,
        )
        if not rows:
            self.application.get_run(key)  # an experiment's id: a pointer to its commands
            raise NotFound("run_id", str(key))
        return views.Run.model_validate(rows[0])

    def runs(
        self,
        *,
        where: str | None = None,
        order_by: str | None = None,
        twin: str | None = None,
        status: str | None = None,
        pattern: str | None = None,
        experiment: str | None = None,
        limit: int = pages.DEFAULT_LIMIT,
        cursor: str | None = None,
        fields: tuple[str, str, str] = ("filter", "order_by", "cursor"),
    ) -> views.Page[views.Run]:
        """Runs matching a filter (projections/search.py, docs/queries.md: ``pattern =
        'mars_terraform' and summary.habitability > 0.3``) and exact filters, in ``order_by``
        order (default: when queued), one keyset page at a time. ``fields`` names the filter,
        order and cursor inputs in errors (the API: filter, order_by, cursor)."""
        equal: dict[str, str] = {}
        if twin is not None:
            equal["digital_twin_id"] = str(_uuid("twin", twin))
        if experiment is not None:
            equal["experiment_id"] = str(_uuid("experiment", experiment))
        if status is not None:
            equal["status"] = status
        if pattern is not None:
            equal["pattern"] = pattern
        page = search_runs(
            self._tables(),
            where,
            order_by,
            limit=limit,
            cursor=cursor,
            equal=equal,
            fields=fields,
        )
        return views.Page[views.Run](
            items=[views.Run.model_validate(row) for row in page.rows],
            next_cursor=page.next_cursor,
        )

    def compare(self, run_ids: list[str], *, field: str = "runs") -> Comparison:
        """2 to 6 runs side by side: parameters, summary metrics, the first diverging year and
        each run's series (projections/compare.py)."""
        return compare_runs(self._tables(), run_ids, field, self.application.fork_points)

    def run_from_events(self, run_id: str) -> SimulationRun:
        """The run aggregate, folded from its events (the log, not the read tables)."""
        return self.application.get_run(self.resolve_run(run_id))

    def results(
        self,
        run_id: str,
        *,
        result_type: str | None = None,
        from_year: int | None = None,
        to_year: int | None = None,
    ) -> list[views.Result]:
        """A run's per-year results (economic, environmental, timeline) in year order."""
        rows = queries.results(
            self._tables(),
            str(self.resolve_run(run_id)),
            result_type=result_type,
            from_year=from_year,
            to_year=to_year,
        )
        return RESULTS.validate_python(rows)

    def results_json(
        self,
        run_id: str,
        *,
        result_type: str | None = None,
        from_year: int | None = None,
        to_year: int | None = None,
    ) -> bytes:
        """``results(...)`` as a JSON array, joined from the stored JSON text without decoding
        it (infrastructure/result_text.py): for servers, ten times faster on a long run."""
        return results_json(
            self._tables(),
            self.resolve_run(run_id),
            result_type=result_type,
            from_year=from_year,
            to_year=to_year,
        )

    def events(
        self, run_id: str, *, after_version: int = 0, limit: int = MAX_EVENTS_PAGE
    ) -> list[views.StoredEvent]:
        """A run's stored events after ``after_version``, as recorded: the audit trail."""
        if not 1 <= limit <= MAX_EVENTS_PAGE:
            raise ValidationError("limit", f"must be an integer from 1 to {MAX_EVENTS_PAGE}")
        if after_version < 0:
            raise ValidationError("after_version", "must be 0 or more")
        run = self.run_from_events(run_id)
        stored = self.application.recorder.select_events(
            run.id, gt=after_version or None, limit=limit
        )
        return [
            views.StoredEvent(
                originator_id=str(event.originator_id),
                originator_version=event.originator_version,
                topic=event.topic,
                # named JSON, or a compact state named (infrastructure/codec.py)
                state=named_state(
                    event.topic, bytes(event.state), event.originator_id, event.originator_version
                ),
            )
            for event in stored
        ]

    def ended_run(self, run_id: str) -> EndedRun | None:
        """What an ended run's results, events and states are a function of (the HTTP API's
        validators); None while the read tables do not show it ended, or show no such run."""
        key = self.resolve_run(run_id)
        held = results_held(self._tables(), key)
        if held is None or held[0] not in ENDED:
            return None
        last = self.application.recorder.select_events(key, desc=True, limit=1)
        if not last:  # archived and removed from the log
            return None
        return EndedRun(key, held[0], held[1], held[2], last[0].originator_version)

    def replay_run(self, run_id: str, *, allow_other_engine: bool = False) -> views.ReplayVerdict:
        """Re-simulate a run from its RunQueued and compare every year: identical, or the first
        divergence (year, field, both values) and the digests."""
        key = self.resolve_run(run_id)
        report = self.application.replay_run(key, allow_other_engine=allow_other_engine)
        return _verdict(key, report)

    def replay_all(
        self, *, allow_other_engine: bool = False
    ) -> Iterator[views.ReplayVerdict | EngineVersionMismatch | UnreadableStream]:
        """Replay every completed run; a run recorded by another engine version is yielded as
        the refusal."""
        for run_id, outcome in self.application.replay_all(allow_other_engine=allow_other_engine):
            yield (
                outcome
                if isinstance(outcome, EngineVersionMismatch | UnreadableStream)
                else _verdict(run_id, outcome)
            )

    def state_at_year(self, run_id: str, year: int) -> views.RunState:
        """The run as it stood at the end of ``year``, from its recorded events (time travel)."""
        key = self.resolve_run(run_id)
        state = self.application.state_at_year(key, year)
        return views.RunState(run_id=str(key), **msgspec.to_builtins(state))

    # --- experiments ----------------------------------------------------------------------------

    def experiment_spec(
        self, spec: ExperimentFile | Mapping[str, Any] | str | Path
    ) -> ExperimentFile:
        """A validated experiment spec: from a TOML file's path, or its content as a mapping."""
        if isinstance(spec, ExperimentFile):
            return spec
        if isinstance(spec, Mapping):
            return validate(ExperimentFile, dict(spec), root="spec")
        return read_experiment_file(spec)

    def run_experiment(
        self,
        spec: ExperimentFile | Mapping[str, Any] | str | Path,
        *,
        workers: int | None = None,
        scheduler: str | None = None,
        started_by: str = "api",
        on_iteration: Callable[[Evaluation], None] | None = None,
    ) -> views.ExperimentDetail:
        """Run a whole experiment here (blocks until it ends) and return it; sample runs in
        ``workers`` local processes or on a Dask ``scheduler`` (docs/scale-out.md)."""
        experiment = run_experiment(
            self.application,
            self.experiment_spec(spec),
            workers=workers,
            scheduler=scheduler,
            started_by=started_by,
            on_iteration=on_iteration,
        )
        return self.experiment(str(experiment.id))

    def start_experiment(
        self, spec: ExperimentFile | Mapping[str, Any] | str | Path, *, started_by: str = "api"
    ) -> views.Experiment:
        """Record ExperimentStarted only; ``continue_experiment`` (e.g. in a background worker)
        evaluates it."""
        experiment = start_experiment(
            self.application, self.experiment_spec(spec), started_by=started_by
        )
        return self._written(self.experiment, "experiment_id", str(experiment.id)).experiment

    def continue_experiment(
        self,
        experiment_id: str,
        *,
        workers: int = 1,
        scheduler: str | None = None,
        on_iteration: Callable[[Evaluation], None] | None = None,
    ) -> views.ExperimentDetail:
        """Evaluate a started experiment to its end (sample runs as ``run_experiment`` says)."""
        experiment = get_experiment(self.application, experiment_id)
        continue_experiment(
            self.application,
            experiment,
            workers=workers,
            scheduler=scheduler,
            on_iteration=on_iteration,
        )
        return self.experiment(experiment_id)

    def resume_experiment(
        self,
        experiment_id: str,
        *,
        workers: int = 1,
        scheduler: str | None = None,
        on_iteration: Callable[[Evaluation], None] | None = None,
    ) -> views.ExperimentDetail:
        """Carry on an experiment whose process died (status running) to the end an
        uninterrupted one would have reached (docs/experiments.md, Resume)."""
        experiment = resume_experiment(
            self.application,
            experiment_id,
            workers=workers,
            scheduler=scheduler,
            on_iteration=on_iteration,
        )
        return self.experiment(str(experiment.id))

    def replay_experiment(
        self,
        experiment_id: str,
        *,
        only: str | None = None,
        allow_other_engine: bool = False,
        allow_other_version: bool = False,
    ) -> views.ExperimentVerdict:
        """Re-run the search from ExperimentStarted alone and compare every candidate, digest
        and decision with the record (``only``: "iter5:evaluation[:sample2]");
        ``allow_other_version``: even if recorded by another engine or Optuna version."""
        report = replay_experiment(
            self.application,
            experiment_id,
            only=only,
            allow_other_engine=allow_other_engine,
            allow_other_version=allow_other_version,
        )
        return views.ExperimentVerdict(
            experiment_id=str(_uuid("experiment_id", experiment_id)),
            identical=report.identical,
            iterations=report.iterations,
            runs_checked=report.runs_checked,
            differences=report.differences,
        )

    def experiment(self, experiment_id: str) -> views.ExperimentDetail:
        """One experiment with every iteration, from the read tables."""
        key = _uuid("experiment_id", experiment_id)
        store = self._tables()
        rows, _ = pages.page(
            store, EXPERIMENTS, "started_at", [("id = %s", self._id(key))], limit=1, cursor=None
        )
        if not rows:
            raise NotFound("experiment_id", str(key))
        iterations = queries.experiment_iterations(store, str(key))
        return views.ExperimentDetail(
            experiment=views.Experiment.model_validate(rows[0]),
            iterations=[views.Iteration.model_validate(row) for row in iterations],
        )

    def experiments(
        self,
        *,
        twin: str | None = None,
        status: str | None = None,
        limit: int = pages.DEFAULT_LIMIT,
        cursor: str | None = None,
    ) -> views.Page[views.Experiment]:
        """Experiments in the order they started, filtered, one page at a time."""
        equal = {
            "digital_twin_id": None if twin is None else self._id(_uuid("twin", twin)),
            "status": status,
        }
        return self._listed(views.Experiment, EXPERIMENTS, "started_at", equal, limit, cursor)

    def experiment_from_events(self, experiment_id: str) -> ExperimentAggregate:
        """The experiment aggregate, folded from its events."""
        return get_experiment(self.application, experiment_id)

    # --- lifecycle and archives -----------------------------------------------------------------

    def expire(self, *, now: datetime | None = None, batch: int = DEFAULT_BATCH) -> ExpiryReport:
        """End every twin past its expires_at (TwinExpired), cancelling its runs first."""
        return expire_twins(self.application, self.projector, now=now, batch=batch)

    def apply_retention(
        self, *, now: datetime | None = None, windows: Windows | None = None, dry_run: bool = False
    ) -> RetentionReport:
        """Remove (or count) read-table rows past their retention windows; never events."""
        moment = now if now is not None else self.application.clock()
        return apply_retention(self.projector, moment, windows or Windows(), dry_run=dry_run)

    def archive(
        self, out: IO[bytes], *, run_id: str | None = None, twin_id: str | None = None
    ) -> int:
        """Write the event streams of a run (with its twin) or of a twin and its runs to
        ``out``; returns the number of events."""
        return export(self.application, out, run_id=run_id, twin_id=twin_id)

    def import_archive(
        self, path: str | Path, *, expected_digest: str | None = None
    ) -> ImportReport:
        """Merge an archive into this store, all or nothing (importing twice writes nothing);
        checked against its hash chain and digest, and ``expected_digest`` if given."""
        return import_archive(self.application, path, expected_digest=expected_digest)

    # --- the read side --------------------------------------------------------------------------

    def projections(self) -> views.ProjectionsReport:
        """Each projection's position against the head of the log (no catching up first)."""
        rows = self.projector.status()
        head = max((row.head for row in rows), default=self.event_count())
        return views.ProjectionsReport(
            head=head,
            projections=[
                views.ProjectionState(
                    name=row.name,
                    tables=list(row.tables),
                    position=row.position,
                    head=row.head,
                    lag=row.lag,
                    current_schema=row.current_schema,
                    error=row.error,
                    error_position=row.error_position,
                    blocked_by=list(row.blocked_by),
                    parked=row.parked,
                    skipped=row.skipped,
                )
                for row in rows
            ],
            parked=self._parked(),
        )

    def _parked(self) -> list[views.ParkedEvent]:
        """Parked events (skipped ones too), in log order (at most MAX_PARKED_SHOWN)."""
        return [
            views.ParkedEvent(
                projection=row.projection,
                position=row.position,
                originator_id=row.originator_id,
                originator_version=row.originator_version,
                topic=row.topic,
                error_class=row.error_class,
                error_message=row.error_message,
                parked_at=_iso(row.parked_at),
                skipped_at=None if row.skipped_at is None else _iso(row.skipped_at),
                skipped_by=row.skipped_by,
                skip_reason=row.skip_reason,
            )
            for row in self.projector.parked()[:MAX_PARKED_SHOWN]
        ]

    def _id(self, key: UUID) -> Any:
        return self.projector.store.uuid(key)


MAX_PARKED_SHOWN = 1000
ENDED = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


@dataclass(frozen=True)
class EndedRun:
    """An ended run's stream is closed: its events, states and results rows change only when
    retention removes rows (``results_held`` drops) or an archive removes the stream."""

    run_id: UUID
    status: str
    result_digest: str | None
    results_held: int
    last_version: int


def _iso(moment: datetime) -> str:
    return queries.plain("timestamp", moment)  # type: ignore[no-any-return]


def _uuid(field: str, text: str) -> UUID:
    try:
        return UUID(text.strip())
    except (ValueError, AttributeError):
        raise ValidationError(field, f"{text!r} is not a valid id") from None


def _verdict(run_id: UUID, report: ReplayReport) -> views.ReplayVerdict:
    divergence = report.divergence
    return views.ReplayVerdict(
        run_id=str(run_id),
        identical=report.identical,
        years=report.years,
        complete=report.complete,
        digest=report.digest,
        recorded_digest=report.recorded_digest,
        failure=report.failure,
        parent_note=report.parent_note,
        divergence=None
        if divergence is None
        else views.Divergence(
            year=divergence.year,
            field=divergence.field,
            recorded=divergence.recorded,
            replayed=divergence.replayed,
        ),
    )
