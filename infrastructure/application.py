"""The TwinLedger application: the domain API over one event store.

One eventsourcing Application holds both aggregates, so a command that changes a twin and a
run saves both in one atomic write. Methods validate their inputs (infrastructure/inputs.py)
before making any event; a refused command writes nothing.
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

import msgspec
import psycopg
import psycopg.sql
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import OriginatorVersionError
from eventsourcing.persistence import (
    EventStore,
    IntegrityError,
    InterfaceError,
    MapperDeserialisationError,
    OperationalError,
    PersistenceError,
    Recording,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import Environment, EnvType, get_topic, retry

from domain.aggregate import Aggregate
from domain.catalog import find_body
from domain.digest import ResultDigest
from domain.engine import ENGINE_VERSION, RunInputs, Simulation, check_parameters
from domain.errors import ConcurrentWrite, InvalidTransition, NotFound, ValidationError
from domain.replay import (
    Divergence,
    EngineVersionMismatch,
    ParentPrefix,
    ReplayReport,
    RunStateAtYear,
    replay_recorded,
    state_at_year,
)
from domain.run import Persistence, RunCompleted, RunQueued, SimulationRun, YearResultRecorded
from domain.twin import DigitalTwin
from domain.values import RunStatus, YearResult
from infrastructure import gcpause
from infrastructure.codec import MsgspecMapper, NullTranscoder
from infrastructure.errors import (
    RunInterrupted,
    UndecodableStream,
    UnreadableStream,
    UnusableDatabase,
    first_line,
)
from infrastructure.event_store import LeanEventStore
from infrastructure.inputs import (
    BodyFile,
    CloneTwin,
    QueueRun,
    ReasonText,
    check_pattern_fits,
    parse_id,
    read_body_file,
    validate,
)
from infrastructure.interventions import validate_fork, validate_interventions
from infrastructure.provenance import current_provenance
from infrastructure.settings import Database, resolve_database

Clock = Callable[[], datetime]
AggregateT = TypeVar("AggregateT", bound=Aggregate)
Progress = Callable[[int, int], None]

MIN_CHUNK_YEARS = 50
Interventions = list[str] | list[dict[str, Any]] | list[str | dict[str, Any]]
STRUCTURED_RUN_ID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"-iter\d+-[a-z]+(-sample\d+)?$"
)
TRANSIENT = (OperationalError, InterfaceError)
"""Errors of the connection or of locking (eventsourcing wraps the drivers' in these), raised
after the library's own retries: the store was unavailable, nothing about the data was wrong."""


def default_chunk(duration_years: int) -> int:
    """Years saved per transaction unless told: a quarter of the run, at least 50 years.

    Four saves per long run keep progress visible and bound what a crash loses (a resumed run
    re-simulates it anyway), while a 1000-year run costs 4 commits, not 20 (docs/performance.md).
    """
    return max(MIN_CHUNK_YEARS, -(-duration_years // 4))


class RunLink(NamedTuple):
    """Where a run made by an experiment belongs."""

    experiment_id: UUID
    iteration: int
    sample_index: int | None
    run_purpose: str


def utc_now() -> datetime:
    return datetime.now(UTC)


class TwinLedger(Application[UUID]):
    """Clone twins, queue and execute runs, read them back."""

    name = "TwinLedger"
    env = {
        "MAPPER_TOPIC": get_topic(MsgspecMapper),
        "TRANSCODER_TOPIC": get_topic(NullTranscoder),
    }

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        clock: Clock = utc_now,
        database: Database | None = None,
    ) -> None:
        super().__init__(env)
        self.clock = clock
        self.database = database
        self.after_write: list[Callable[[], None]] = []
        self.last_write_durable = True
        """False while the after-write hooks of a save that did not wait for the disk run (a
        run's intermediate chunk): keep_current (projections/keep_current.py) then leaves the
        catching up to the next durable write, or to the end of the command."""
        self.last_recordings: list[Recording[UUID]] = []
        """While the after-write hooks of a save run: its events with their positions in the
        log (keep_current projects them without reading them back)."""

    def construct_event_store(self) -> EventStore[UUID]:
        """The library's event store, its per-event objects built directly (event_store.py)."""
        return LeanEventStore(mapper=self.mapper, recorder=self.recorder)

    def construct_env(self, name: str, env: EnvType | None = None) -> Environment:
        """The library's settings: the class's and the constructor's only, never the process
        environment, whose POSTGRES_*, COMPRESSOR_TOPIC, CIPHER_TOPIC, TWINLEDGER_* ... would
        change how events are stored (infrastructure/settings.py, docs/operations.md)."""
        return Environment(name, {**type(self).env, **(env or {})})

    @classmethod
    def open(
        cls, url: str | None = None, *, clock: Clock = utc_now, create_tables: bool = True
    ) -> TwinLedger:
        """Open the ledger at a database URL (see infrastructure/settings.py).

        The tables are created only if the store does not exist yet (PostgreSQL: under the
        schema's advisory lock, infrastructure/postgres.py), so concurrent processes never
        race in the catalog. ``create_tables=False`` skips even that check (worker processes).
        A database that cannot be opened raises UnusableDatabase naming it.
        """
        database = resolve_database(url)
        env = database.eventsourcing_env()
        try:
            if not create_tables:
                env["CREATE_TABLE"] = "no"
            elif database.is_postgres:
                from infrastructure.postgres import setting_up

                with setting_up(database) as exists:
                    if exists:
                        env["CREATE_TABLE"] = "no"
                    return cls(env, clock=clock, database=database)
            elif _sqlite_store_exists(database.sqlite_path):
                env["CREATE_TABLE"] = "no"
            return cls(env, clock=clock, database=database)
        except (psycopg.Error, sqlite3.Error, PersistenceError, OSError) as error:
            raise UnusableDatabase(database.describe(), first_line(error)) from None

    # --- writing -----------------------------------------------------------------------------

    def _save(self, *aggregates: Aggregate, **kwargs: Any) -> None:
        with gcpause.paused():  # the save and the catch-up, without collector pauses
            try:
                recordings = self.save(*aggregates, **kwargs)
            except IntegrityError as error:
                names = ", ".join(f"{type(a).__name__} {a.id}" for a in aggregates)
                raise ConcurrentWrite(
                    f"another writer changed {names} first; nothing was written, try again"
                ) from error
            # For after-write hooks: whether the write waited for the disk, and what it wrote.
            self.last_write_durable = bool(kwargs.get("durable", True))
            self.last_recordings = recordings
            try:
                for hook in self.after_write:
                    hook()
            finally:
                self.last_write_durable = True  # hooks called for other writes: a durable one
                self.last_recordings = []

    def save_and_notify(self, *aggregates: Aggregate) -> None:
        """Save aggregates in one write (ConcurrentWrite on a conflict), then after-write hooks."""
        self._save(*aggregates)

    # --- twins -------------------------------------------------------------------------------

    def clone_twin(
        self,
        *,
        name: str | None = None,
        body: str | None = None,
        body_file: str | BodyFile | None = None,
        expires_at: datetime | None = None,
        expires_in: timedelta | None = None,
        description: str | None = None,
        created_by: str = "cli",
        simulation_type: str | None = None,
        simulation_parameters: dict[str, Any] | None = None,
    ) -> UUID:
        """Clone a catalog body (``body``) or a described one (``body_file``: a file's path, or
        a BodyFile already validated) into a twin.

        ``name`` defaults to the body's name when not given (None); a given name is validated.
        """
        if (body is None) == (body_file is None):
            raise ValidationError("body", "give exactly one of a catalog body or a body file")
        now = self.clock()
        if expires_at is None:
            expires_at = now + (expires_in if expires_in is not None else timedelta(days=30))
        described = (
            body_file
            if body_file is None or isinstance(body_file, BodyFile)
            else read_body_file(body_file)
        )
        if name is None:
            reference = None if body is None else find_body(body)
            name = described.name if described else reference.name if reference else body
        data: dict[str, Any] = {
            "body": body,
            "body_file": described,
            "name": name,
            "description": description,
            "created_by": created_by,
            "simulation_type": simulation_type,
            "simulation_parameters": simulation_parameters or {},
            "expires_at": expires_at,
        }
        request = validate(CloneTwin, data)
        if request.expires_at <= now:
            raise ValidationError("expires_at", f"{request.expires_at.isoformat()} is in the past")
        if request.body is not None:
            reference = find_body(request.body)
            assert reference is not None  # checked by CloneTwin
            key, state = reference.key, reference.state
            solar_system, default_type = reference.solar_system, reference.simulation_type
            default_description = reference.description
        else:
            assert request.body_file is not None
            described = request.body_file
            key, state = described.key, described.body_state()
            solar_system, default_type = described.solar_system, described.simulation_type
            default_description = described.description
        twin = DigitalTwin.clone(
            name=request.name,
            description=request.description
            if request.description is not None
            else default_description,
            source_body=key,
            solar_system=solar_system,
            created_by=request.created_by,
            simulation_type=request.simulation_type or default_type,
            state=state,
            simulation_parameters=dict(request.simulation_parameters),
            expires_at=request.expires_at,
        )
        self._save(twin)
        return twin.id

    def get_twin(self, twin_id: UUID | str) -> DigitalTwin:
        return self.get_aggregate(DigitalTwin, "twin_id", twin_id)

    def delete_twin(self, twin_id: UUID | str, *, by: str = "cli", reason: str = "") -> None:
        """Soft-delete a twin: its events stay, it accepts no more runs."""
        text = validate(ReasonText, {"reason": reason, "by": by})
        twin = self.get_twin(twin_id)
        if twin.active_runs:
            raise InvalidTransition(
                f"twin_id: twin {twin.id} has {len(twin.active_runs)} run(s) under way; "
                "cancel them first"
            )
        twin.delete(self.clock(), text.by, text.reason)
        self._save(twin)

    def extend_twin(self, twin_id: UUID | str, *, by: timedelta) -> datetime:
        """Move a twin's expiry later by ``by``; returns the new expires_at."""
        if by <= timedelta(0):
            raise ValidationError("by", "must be a positive duration")
        twin = self.get_twin(twin_id)
        now = self.clock()
        base = twin.expires_at if twin.expires_at is not None and twin.expires_at > now else now
        twin.extend_expiry(base + by, now)
        self._save(twin)
        return base + by

    # --- runs --------------------------------------------------------------------------------

    def queue_run(
        self,
        twin_id: UUID | str,
        *,
        pattern: str,
        duration_years: int,
        budget_cents: int,
        tech_level: int = 5,
        priority: str = "normal",
        pattern_params: dict[str, Any] | None = None,
        custom_spec: dict[str, Any] | None = None,
        seed: int | None = None,
        initiated_by: str = "cli",
        link: RunLink | None = None,
        interventions: Interventions | None = None,
        run_id: UUID | None = None,
        persistence: str = "full",
    ) -> UUID:
        """Queue a run on a twin; RunQueued records everything needed to execute it.

        ``link`` ties the run to an experiment (experiment id, iteration, sample, purpose);
        ``run_id`` gives the run a known id (experiments derive it from the structured id);
        ``persistence`` "summary" keeps no YearResultRecorded (docs/experiments.md).
        ``interventions`` are ``YEAR:KEY=VALUE`` texts or ``{year, key, value}`` objects
        (infrastructure/interventions.py), applied at the start of their years.
        """
        try:
            level = Persistence(persistence)
        except ValueError:
            message = f"{persistence!r} is not full or summary"
            raise ValidationError("persistence", message) from None
        request = validate(
            QueueRun,
            {
                "pattern": pattern,
                "duration_years": duration_years,
                "budget_cents": budget_cents,
                "tech_level": tech_level,
                "priority": priority,
                "pattern_params": pattern_params or {},
                "custom_spec": custom_spec,
                "seed": seed,
                "initiated_by": initiated_by,
            },
        )
        parameters = request.run_parameters()
        check_parameters(request.pattern, parameters)
        scheduled = validate_interventions(
            interventions or [], pattern=request.pattern, duration_years=request.duration_years
        )
        twin = self.get_twin(twin_id)
        twin.check_accepts_runs(self.clock())
        check_pattern_fits(request.pattern, twin.simulation_type, str(twin.id))
        run = SimulationRun.queue(
            twin_id=twin.id,
            source_body=twin.source_body,
            twin_state=twin.state,
            pattern=request.pattern,
            duration_years=request.duration_years,
            parameters=parameters,
            seed=request.seed if request.seed is not None else secrets.randbits(63),
            engine_version=ENGINE_VERSION,
            initiated_by=request.initiated_by,
            **(link._asdict() if link is not None else {}),
            interventions=scheduled,
            provenance=current_provenance(),
            run_id=run_id,
            persistence=level,
        )
        self._save(run)
        return run.id

    # --- forks (docs/simulation.md, "Forks and interventions") --------------------------------

    def fork_run(
        self,
        parent_id: UUID | str,
        *,
        at_year: int,
        budget_cents: int | None = None,
        tech_level: int | None = None,
        priority: str | None = None,
        pattern_params: dict[str, Any] | None = None,
        seed: int | None = None,
        interventions: Interventions | None = None,
        initiated_by: str = "cli",
    ) -> UUID:
        """Queue a fork of a run: years 1..at_year are the parent's, the changes apply from
        the start of year at_year + 1. Its RunQueued holds the parent's inputs, the parent's
        lineage and this fork point, so it replays without the parent.

        The service function of POST /api/v1/runs/{id}/fork: its JSON body's fields are these
        keyword arguments (``interventions`` as texts or ``{year, key, value, mode}`` objects);
        a ValidationError (422) names the field and nothing is written."""
        by = validate(ReasonText, {"by": initiated_by}).by
        parent = self.get_run(parent_id)
        if parent.engine_version != ENGINE_VERSION:
            raise EngineVersionMismatch(
                str(parent.id),
                parent.engine_version,
                "a fork re-simulates its parent's years with this engine; fork a run of this one",
            )
        data: dict[str, Any] = {
            "at_year": at_year,
            "budget_cents": budget_cents,
            "tech_level": tech_level,
            "priority": priority,
            "pattern_params": pattern_params or {},
            "seed": seed,
        }
        fork = validate_fork(
            data,
            interventions or [],
            parent_run_id=parent.id,
            pattern=parent.pattern,
            duration_years=parent.duration_years,
        )
        if parent.years_recorded < fork.at_year:
            raise ValidationError(
                "at_year",
                f"run {parent.id} has {parent.years_recorded} year(s) recorded "
                f"({parent.status}); a fork at year {fork.at_year} needs its years "
                f"1..{fork.at_year}",
            )
        twin = self.get_twin(parent.twin_id)
        twin.check_accepts_runs(self.clock())
        run = SimulationRun.queue(
            twin_id=parent.twin_id,
            source_body=parent.source_body,
            twin_state=parent.twin_state,
            pattern=parent.pattern,
            duration_years=parent.duration_years,
            parameters=parent.parameters,
            seed=parent.seed,
            engine_version=ENGINE_VERSION,
            initiated_by=by,
            interventions=list(parent.interventions),
            forks=[*parent.forks, fork],
            provenance=current_provenance(),
        )
        self._save(run)
        return run.id

    def children_of(self, run_id: UUID | str, page_size: int = 500) -> list[tuple[UUID, int]]:
        """The forks made from a run: (fork run id, fork year), in the order they were
        queued. Scans RunQueued in the log, decoding only each one's lineage."""
        parent = self.resolve_run_id(run_id)
        topic = get_topic(RunQueued)
        found: list[tuple[UUID, int]] = []
        position: int | None = None
        while True:
            notifications = self.recorder.select_notifications(
                start=position, limit=page_size, topics=[topic], inclusive_of_start=False
            )
            plain = not (self.mapper.cipher or self.mapper.compressor)
            for notification in notifications:
                lineage: list[Any] = (
                    _lineage_decoder.decode(notification.state).forks
                    if plain
                    else getattr(self.mapper.to_domain_event(notification), "forks", [])
                )
                if lineage and lineage[-1].parent_run_id == parent:
                    found.append((UUID(str(notification.originator_id)), lineage[-1].at_year))
            if len(notifications) < page_size:
                return found
            position = notifications[-1].id

    def fork_points(self, run_id: UUID) -> list[tuple[UUID, int]]:
        """A run's fork lineage, oldest first, as (parent run id, fork year), from its RunQueued
        alone (version 1, decoding only the lineage): [] for a run that is not a fork."""
        stored = self.recorder.select_events(run_id, lte=1)
        if not stored or stored[0].topic != get_topic(RunQueued):
            raise NotFound("run_id", str(run_id))
        plain = not (self.mapper.cipher or self.mapper.compressor)
        points: list[Any] = (
            _lineage_decoder.decode(stored[0].state).forks
            if plain
            else getattr(self.mapper.to_domain_event(stored[0]), "forks", [])
        )
        return [(UUID(str(point.parent_run_id)), point.at_year) for point in points]

    # --- run ids -------------------------------------------------------------------------------

    def resolve_run_id(self, ref: UUID | str) -> UUID:
        """A run's id from its UUID or its structured id ``{experiment}-iter{N}-{purpose}
        [-sample{K}]`` (docs/experiments.md): the one resolver every command uses."""
        if isinstance(ref, UUID):
            return ref
        text = str(ref).strip()
        if STRUCTURED_RUN_ID.match(text) is None:
            return parse_id(text, "run_id")
        from domain.experiment import Experiment
        from infrastructure.experiments import runs_of

        experiment = self.get_aggregate(Experiment, "run_id", text[:36])
        runs = runs_of(experiment)
        if text not in runs:
            raise NotFound("run_id", text)
        return runs[text]

    def get_run(self, run_id: UUID | str) -> SimulationRun:
        """A run by id or structured id; an experiment's id is refused with a pointer to the
        experiment commands."""
        key = self.resolve_run_id(run_id)
        try:
            return self.get_aggregate(SimulationRun, "run_id", key)
        except NotFound:
            from domain.experiment import Experiment

            try:
                self.get_aggregate(Experiment, "experiment_id", key)
            except NotFound:
                raise NotFound("run_id", str(key)) from None
            raise ValidationError(
                "run_id",
                f"{key} is an experiment, not a run: use `twinledger experiment replay {key}` "
                f"to verify it, `twinledger experiment show {key}` to see it",
            ) from None

    def execute_run(
        self,
        run_id: UUID | str,
        *,
        chunk_years: int | None = None,
        on_progress: Progress | None = None,
    ) -> SimulationRun:
        """Execute a queued run, or resume one left running by a crash.

        Years are saved in chunks of ``chunk_years`` (default: ``default_chunk``): readers see
        progress, and a crash loses
        at most the chunk in flight. Resuming re-simulates from RunQueued (deterministic) and
        records only the years not yet recorded. A cancel written by another process is seen
        at the next chunk boundary.
        """
        if chunk_years is not None and chunk_years < 1:
            raise ValidationError("chunk_years", "must be at least 1")
        run = self.get_run(run_id)
        chunk = chunk_years or default_chunk(run.duration_years)
        if run.ended:
            raise InvalidTransition(f"run_id: run {run.id} has already ended ({run.status})")
        if run.engine_version != ENGINE_VERSION:
            raise EngineVersionMismatch(
                str(run.id), run.engine_version, EngineVersionMismatch.EXECUTE_HINT
            )
        now = self.clock()

        def start(run: SimulationRun, twin: DigitalTwin) -> None:
            run.start()
            twin.start_run(run.id, now)

        try:
            run = self._change_run_and_twin(run.id, start)
        except TRANSIENT as error:  # not started: the run stays as it was
            raise RunInterrupted(run.id, first_line(error)) from error
        except InvalidTransition as refusal:
            reason = str(refusal)
            if not reason.startswith("twin_id"):
                raise
            self._change_run_and_twin(run.id, lambda r, t: r.cancel(reason, "twinledger"))
            raise

        simulation = Simulation(run_inputs(run))
        digest = ResultDigest()
        failure: str | None = None
        keeps_years = run.persistence == Persistence.FULL
        try:
            while simulation.year < run.duration_years:
                try:  # the engine's work: an error here is the run's own, recorded as RunFailed
                    result = simulation.step()
                    digest.add_year(result)
                    if result.year > run.years_recorded and keeps_years:
                        run.record_year(result)
                except Exception as error:
                    failure = f"{type(error).__name__}: {error}"
                    break
                if result.year % chunk == 0 or result.year == run.duration_years:
                    if not self._save_chunk(run, durable=result.year == run.duration_years):
                        return self.get_run(run.id)
                    if on_progress is not None:
                        on_progress(run.years_recorded, run.duration_years)
            if failure is None:
                try:
                    summary = simulation.summary()
                    digest.add_summary(summary)
                except Exception as error:
                    failure = f"{type(error).__name__}: {error}"
            if failure is not None:
                message = failure
                return self._end_run(run, lambda r, t: r.fail(message))
            result_digest = digest.hexdigest()
            return self._end_run(run, lambda r, t: r.complete(summary, result_digest))
        except TRANSIENT as error:
            # The database, not the run, failed: saved chunks stay, and the run stays running
            # so that ``execute`` resumes it (re-simulating deterministically: same digest).
            raise RunInterrupted(run.id, first_line(error)) from error

    def _save_chunk(self, run: SimulationRun, *, durable: bool = True) -> bool:
        """Save recorded years; False if the run was ended (cancelled) by another writer.

        ``durable=False`` (every chunk but the last) lets PostgreSQL commit without waiting
        for its log flush (infrastructure/pg_recorder.py says why that loses nothing)."""
        try:
            self._save(run, durable=durable)
        except ConcurrentWrite:
            stored = self.get_run(run.id)
            if stored.ended:
                return False
            raise
        return True

    def _end_run(
        self, run: SimulationRun, change: Callable[[SimulationRun, DigitalTwin], None]
    ) -> SimulationRun:
        """Complete or fail the run executed here, from the aggregate in memory.

        Reloading it would read its ~1000 events again (31-44 ms a 1000-year run,
        docs/performance.md). The run in memory is at the version this process saved last;
        if another writer moved it since (a cancel), the save conflicts, nothing is written,
        and the change is applied the usual way, to freshly loaded run and twin. So it is when
        the run holds years not saved (a failure drops the chunk in flight)."""
        if run.pending_events:
            dropped: SimulationRun = self._change_run_and_twin(run.id, change)
            return dropped
        twin = self.get_twin(run.twin_id)
        change(run, twin)
        if run.ended:
            twin.end_run(run.id, run.status)
        try:
            self._save(run, twin)
        except ConcurrentWrite:
            reloaded: SimulationRun = self._change_run_and_twin(run.id, change)
            return reloaded
        return run

    @retry(ConcurrentWrite, max_attempts=10, wait=0.01)
    def _change_run_and_twin(
        self, run_id: UUID, change: Callable[[SimulationRun, DigitalTwin], None]
    ) -> SimulationRun:
        """Apply ``change`` to freshly loaded run and twin and save both in one write.

        Runs of one twin may execute in several processes at once, and each start or end also
        changes the twin's status, so a conflict on the twin is expected: reload and retry.
        When the run has ended, its twin stops following it in the same write.
        """
        run = self.get_run(run_id)
        twin = self.get_twin(run.twin_id)
        change(run, twin)
        if run.ended:
            twin.end_run(run.id, run.status)
        self._save(run, twin)
        return run

    def cancel_run(self, run_id: UUID | str, *, reason: str = "", by: str = "cli") -> None:
        """Cancel a queued or running run; a running executor stops at its next chunk."""
        text = validate(ReasonText, {"reason": reason, "by": by})
        run = self.get_run(run_id)
        self._change_run_and_twin(run.id, lambda r, t: r.cancel(text.reason, text.by))

    def recorded_years(self, run_id: UUID | str) -> Iterator[YearResult]:
        """The year results as recorded in the run's events, in order."""
        run = self.get_run(run_id)
        for event in self.repository.event_store.get(run.id):
            if isinstance(event, YearResultRecorded):
                yield event.to_result()

    def years_of(self, run: SimulationRun) -> Iterator[YearResult]:
        """A run's years: as recorded, or, for a completed summary-level run, re-derived by
        re-simulating it (the same years: the digest was checked when it completed)."""
        if run.persistence == Persistence.FULL or run.status != RunStatus.COMPLETED:
            yield from self.recorded_years(run.id)
            return
        if run.engine_version != ENGINE_VERSION:
            raise EngineVersionMismatch(str(run.id), run.engine_version)
        simulation = Simulation(run_inputs(run))
        while simulation.year < run.duration_years:
            yield simulation.step()

    # --- replay (docs/simulation.md) ----------------------------------------------------------

    def replay_run(self, run_id: UUID | str, *, allow_other_engine: bool = False) -> ReplayReport:
        """Re-simulate a run from its RunQueued alone and compare every recorded year, then
        the summary and the digest of a completed run. A run recorded by another engine
        version is refused unless ``allow_other_engine``. A stored event that no longer
        decodes is reported as a divergence."""
        try:
            run = self.get_run(run_id)
            if run.engine_version != ENGINE_VERSION and not allow_other_engine:
                raise EngineVersionMismatch(str(run.id), run.engine_version)
            years = list(self.recorded_years(run.id))
            parent = self._parent_prefix(run)
        except (MapperDeserialisationError, UndecodableStream) as error:
            divergence = Divergence(
                year=None, field="stored_event", recorded=str(error), replayed="(not decodable)"
            )
            return ReplayReport(
                years=0, complete=False, digest="", recorded_digest=None, divergence=divergence
            )
        report = replay_recorded(run, run_inputs(run), years, parent)
        if run.fork is not None:
            fork = run.fork
            note = (
                f"prefix checked against parent {fork.parent_run_id} years 1..{fork.at_year}"
                if parent is not None
                else f"parent {fork.parent_run_id} is not in this store: the fork was "
                "re-simulated from its own record, its prefix not compared with the parent's"
            )
            report = msgspec.structs.replace(report, parent_note=note)
        return report

    def _parent_prefix(self, run: SimulationRun) -> ParentPrefix | None:
        """A fork's parent's recorded years 1..at_year, if the parent is in this store."""
        fork = run.fork
        if fork is None:
            return None
        try:
            years = [
                year
                for year in self.recorded_years(fork.parent_run_id)
                if year.year <= fork.at_year
            ]
        except NotFound:
            return None
        return ParentPrefix(run_id=str(fork.parent_run_id), at_year=fork.at_year, years=years)

    def state_at_year(self, run_id: UUID | str, year: int) -> RunStateAtYear:
        """The run's state at the end of ``year``, folded from its recorded events only."""
        run = self.get_run(run_id)
        state = None if year < 1 else state_at_year(self.years_of(run), year)
        if state is None:
            recorded = f"1 to {run.years_recorded}" if run.years_recorded else "none"
            raise ValidationError(
                "to_year", f"run {run.id} has no year {year} recorded (recorded: {recorded})"
            )
        return state

    def completed_run_ids(self, page_size: int = 500) -> Iterator[UUID]:
        """Every completed run, in the order they completed (scans the log for RunCompleted)."""
        topic = get_topic(RunCompleted)
        position: int | None = None
        while True:
            notifications = self.recorder.select_notifications(
                start=position, limit=page_size, topics=[topic], inclusive_of_start=False
            )
            for notification in notifications:
                yield UUID(str(notification.originator_id))
            if len(notifications) < page_size:
                return
            position = notifications[-1].id

    def replay_all(
        self, *, allow_other_engine: bool = False
    ) -> Iterator[tuple[UUID, ReplayReport | EngineVersionMismatch | UnreadableStream]]:
        """Replay every completed run; a run refused for its engine version, or whose events
        cannot be read, is reported so, and the others are replayed all the same."""
        for run_id in list(self.completed_run_ids()):
            try:
                yield run_id, self.replay_run(run_id, allow_other_engine=allow_other_engine)
            except (EngineVersionMismatch, UnreadableStream) as refusal:
                yield run_id, refusal

    # --- helpers -----------------------------------------------------------------------------

    def get_aggregate(self, cls: type[AggregateT], field: str, ident: UUID | str) -> AggregateT:
        """The aggregate of class ``cls`` with this id; errors name ``field``."""
        key = parse_id(ident, field)
        try:
            aggregate: Any = self.repository.get(key)
        except AggregateNotFoundError:
            raise NotFound(field, str(key)) from None
        except OriginatorVersionError as error:
            found, expected = error.args[:2]
            raise UnreadableStream(
                field.removesuffix("_id"),
                key,
                f"its stored events skip version {expected} (the next stored is {found}); "
                "an event is missing from the log",
            ) from None
        except MapperDeserialisationError as error:
            raise UndecodableStream(field.removesuffix("_id"), key, first_line(error)) from None
        if not isinstance(aggregate, cls):
            raise NotFound(field, str(key))
        return aggregate

    def event_count(self) -> int:
        """How many events the log holds (a count: ids have gaps where a write rolled back)."""
        statement = "SELECT count(*) FROM {}"
        if isinstance(self.recorder, PostgresApplicationRecorder):
            table = psycopg.sql.Identifier(
                self.recorder.datastore.schema, self.recorder.events_table_name
            )
            with self.recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(psycopg.sql.SQL(statement).format(table))
                row: Any = cursor.fetchone()
                return int(row["count"])
        if isinstance(self.recorder, SQLiteApplicationRecorder):
            with self.recorder.datastore.transaction(commit=False) as lite:
                lite.execute(statement.format(self.recorder.events_table_name))
                return int(lite.fetchone()[0])
        raise TypeError(f"event_count: no count for {type(self.recorder).__name__}")


def _sqlite_store_exists(path: str) -> bool:
    """True if the SQLite file holds the event table and its chain records (a file that is not
    a database raises; a store without them gets them when opened, converted from the per-event
    hashes of earlier releases or computed: docs/integrity.md)."""
    if path.startswith("file:") or not os.path.exists(path):
        return False
    connection = sqlite3.connect(path, timeout=30)
    try:
        row = connection.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
            " AND name IN ('stored_events', 'stored_event_chain')"
        ).fetchone()
        return bool(row[0] == 2)
    finally:
        connection.close()


def run_inputs(run: SimulationRun) -> RunInputs:
    """The engine's inputs, taken from the run's RunQueued alone."""
    return RunInputs(
        state=run.twin_state,
        pattern=run.pattern,
        duration_years=run.duration_years,
        parameters=run.parameters,
        seed=run.seed,
        interventions=run.interventions,
        forks=run.forks,
    )


class _ForkLean(msgspec.Struct):
    parent_run_id: UUID
    at_year: int


class _Lineage(msgspec.Struct):
    forks: list[_ForkLean] = msgspec.field(default_factory=list)


_lineage_decoder = msgspec.json.Decoder(_Lineage)
