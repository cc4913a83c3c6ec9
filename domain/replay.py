"""Replay verification, pure: re-simulate a run from its inputs and compare, field by field,
with what was recorded; and fold recorded years into the run's state at a given year.

The comparison walks both values as msgspec builtins (dict keys in sorted order, lists by
index) and compares leaves by their canonical JSON encoding, so 0.0 and -0.0 or 1 and 1.0
count as different, as they would in the digest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from domain.digest import ResultDigest
from domain.engine import ENGINE_VERSION, RunInputs, Simulation
from domain.errors import NothingToVerify, SimulationDiverged, TwinLedgerError
from domain.interventions import FORK_EVENT, HAZARDS, INTERVENTION_EVENT
from domain.run import Persistence, SimulationRun
from domain.values import Economic, Environment, KeyEvent, RunStatus, RunSummary, YearResult

_encoder = msgspec.json.Encoder(order="sorted")


class EngineVersionMismatch(TwinLedgerError):
    """A run recorded by another engine version: its results cannot be expected to match."""

    REPLAY_HINT = (
        "its results are not expected to replay identically; "
        "use --allow-other-engine to replay it anyway"
    )
    EXECUTE_HINT = "executing or resuming it here would mix two engines; queue it again"

    def __init__(self, run_id: str, recorded: str, hint: str = REPLAY_HINT) -> None:
        super().__init__(
            f"engine_version: run {run_id} was recorded by engine {recorded}, but this is "
            f"engine {ENGINE_VERSION}: {hint}"
        )
        self.field = "engine_version"
        self.recorded = recorded


class Divergence(msgspec.Struct, frozen=True, kw_only=True):
    """The first difference: the year (None for the summary, digest or year count), the
    field's path, and both values as canonical JSON."""

    year: int | None
    field: str
    recorded: str
    replayed: str

    def describe(self) -> str:
        where = f"year {self.year}" if self.year is not None else "run"
        return f"{where}, {self.field}: recorded {self.recorded}, replayed {self.replayed}"


class ReplayReport(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of a replay. ``digest`` is the re-simulated results' digest (of the years
    compared, plus the summary when the run completed)."""

    years: int
    complete: bool
    digest: str
    recorded_digest: str | None
    divergence: Divergence | None
    failure: str | None = None  # the recorded engine failure, reproduced by the replay
    parent_note: str | None = None  # for a fork: how its prefix was checked against its parent

    @property
    def identical(self) -> bool:
        return self.divergence is None


def _text(value: Any) -> str:
    return _encoder.encode(value).decode()


def first_difference(recorded: Any, replayed: Any, path: str = "") -> tuple[str, str, str] | None:
    """The first path (in sorted-key, index order) where two builtin values differ."""
    if isinstance(recorded, dict) and isinstance(replayed, dict):
        for key in sorted(set(recorded) | set(replayed)):
            where = f"{path}.{key}" if path else str(key)
            if key not in recorded:
                return where, "(missing)", _text(replayed[key])
            if key not in replayed:
                return where, _text(recorded[key]), "(missing)"
            found = first_difference(recorded[key], replayed[key], where)
            if found is not None:
                return found
        return None
    if isinstance(recorded, list) and isinstance(replayed, list):
        for index in range(max(len(recorded), len(replayed))):
            where = f"{path}[{index}]"
            if index >= len(recorded):
                return where, "(missing)", _text(replayed[index])
            if index >= len(replayed):
                return where, _text(recorded[index]), "(missing)"
            found = first_difference(recorded[index], replayed[index], where)
            if found is not None:
                return found
        return None
    left, right = _text(recorded), _text(replayed)
    return None if left == right else (path, left, right)


def _scheduled(result: YearResult) -> list[str]:
    """The descriptions of a year's key events made by its recorded inputs (interventions,
    scheduled hazards, fork points), which name the input that made them."""
    return [
        event.description
        for event in result.key_events
        if event.name in (INTERVENTION_EVENT, FORK_EVENT) or event.name in HAZARDS
    ]


def compare_year(recorded: YearResult, replayed: YearResult) -> Divergence | None:
    """The first difference of a year; a difference in what the run's inputs scheduled for
    that year (an intervention, a hazard, a fork point) is reported first, by its
    description, so a changed recorded input is named rather than its consequences."""
    scheduled, rescheduled = _scheduled(recorded), _scheduled(replayed)
    if scheduled != rescheduled:
        return Divergence(
            year=recorded.year,
            field="intervention",
            recorded=_text(scheduled) if scheduled else "(none)",
            replayed=_text(rescheduled) if rescheduled else "(none)",
        )
    found = first_difference(msgspec.to_builtins(recorded), msgspec.to_builtins(replayed))
    if found is None:
        return None
    field, left, right = found
    return Divergence(year=recorded.year, field=field, recorded=left, replayed=right)


def failure_message(error: BaseException) -> str:
    """How RunFailed records an engine error (infrastructure/application.py execute_run)."""
    return f"{type(error).__name__}: {error}"


ENGINE_FAILURE = f"{SimulationDiverged.__name__}: "


class ParentPrefix(msgspec.Struct, frozen=True, kw_only=True):
    """A fork's parent as recorded: its years 1..``at_year`` must be the fork's."""

    run_id: str
    at_year: int
    years: list[YearResult]


def replay_recorded(
    run: SimulationRun,
    inputs: RunInputs,
    recorded_years: list[YearResult],
    parent: ParentPrefix | None = None,
) -> ReplayReport:
    """Replay a run as its events recorded it: its years, then its summary and digest if it
    completed, or its engine failure (SimulationDiverged) if it failed on one.

    A run with nothing recorded to compare (queued; or cancelled, running or failed by an
    infrastructure error before its first chunk) raises NothingToVerify: "identical: 0 years"
    would claim a verification that did not happen.
    """
    failure = run.error_message if run.status == RunStatus.FAILED else None
    engine_failure = failure if failure is not None and failure.startswith(ENGINE_FAILURE) else None
    if not recorded_years and run.summary is None and engine_failure is None:
        raise NothingToVerify(str(run.id), str(run.status))
    summary_only = run.persistence == Persistence.SUMMARY
    return replay(
        inputs,
        recorded_years,
        run.summary,
        run.result_digest,
        engine_failure,
        summary_only,
        parent=parent,
    )


def replay(
    inputs: RunInputs,
    recorded_years: Iterable[YearResult],
    recorded_summary: RunSummary | None,
    recorded_digest: str | None,
    recorded_failure: str | None = None,
    summary_only: bool = False,
    *,
    parent: ParentPrefix | None = None,
) -> ReplayReport:
    """Re-simulate from ``inputs`` and compare with the recorded years (all of them, in
    order), then, for a completed run, the summary and the digest, or, for a run that failed
    in the engine, the failure (the same message, so the same year and field). Stops at the
    first divergence.

    For a fork whose parent is in the store (``parent``), the re-simulated years 1..at_year
    are first compared with the parent's recorded years: a difference there is reported with
    the field prefixed ``parent``. A ``summary_only`` run recorded no years: every year is
    re-simulated and the summary and digest checked."""
    simulation = Simulation(inputs)
    digest = ResultDigest()
    count = 0
    if parent is not None:
        prefix = _check_parent(Simulation(inputs), parent)
        if prefix is not None:
            return ReplayReport(
                years=0,
                complete=False,
                digest=digest.hexdigest(),
                recorded_digest=recorded_digest,
                divergence=prefix,
            )

    def report(
        divergence: Divergence | None, complete: bool = False, failure: str | None = None
    ) -> ReplayReport:
        return ReplayReport(
            years=count,
            complete=complete,
            digest=digest.hexdigest(),
            recorded_digest=recorded_digest,
            divergence=divergence,
            failure=failure,
        )

    for recorded in recorded_years:
        if count >= inputs.duration_years:
            return report(
                Divergence(
                    year=recorded.year,
                    field="year",
                    recorded=str(recorded.year),
                    replayed="(beyond the run's duration)",
                )
            )
        try:
            replayed = simulation.step()
        except SimulationDiverged as error:
            return report(
                Divergence(
                    year=recorded.year,
                    field="failure",
                    recorded="(a recorded year)",
                    replayed=_text(failure_message(error)),
                )
            )
        divergence = compare_year(recorded, replayed)
        if divergence is not None:
            return report(divergence)
        digest.add_year(replayed)
        count += 1
    if recorded_failure is not None:
        return _replay_failure(simulation, inputs.duration_years, recorded_failure, report)
    if recorded_summary is None:
        return report(None)
    if summary_only:
        while simulation.year < inputs.duration_years:
            try:
                digest.add_year(simulation.step())
            except SimulationDiverged as error:
                failed = failure_message(error)
                return report(Divergence(year=None, field="failure", recorded="", replayed=failed))
            count += 1
    if count != inputs.duration_years:
        return report(
            Divergence(
                year=None, field="years", recorded=str(count), replayed=str(inputs.duration_years)
            )
        )
    summary = simulation.summary()
    found = first_difference(msgspec.to_builtins(recorded_summary), msgspec.to_builtins(summary))
    if found is not None:
        field, left, right = found
        return report(
            Divergence(year=None, field=f"summary.{field}", recorded=left, replayed=right)
        )
    digest.add_summary(summary)
    if recorded_digest != digest.hexdigest():
        return report(
            Divergence(
                year=None,
                field="result_digest",
                recorded=_text(recorded_digest),
                replayed=_text(digest.hexdigest()),
            ),
            complete=True,
        )
    return report(None, complete=True)


def _check_parent(simulation: Simulation, parent: ParentPrefix) -> Divergence | None:
    """Compare the fork's first ``at_year`` re-simulated years with its parent's record."""
    recorded = [year for year in parent.years if year.year <= parent.at_year]
    if len(recorded) < parent.at_year:
        return Divergence(
            year=None,
            field=f"parent {parent.run_id} years",
            recorded=str(len(recorded)),
            replayed=str(parent.at_year),
        )
    for year in recorded:
        try:
            replayed = simulation.step()
        except SimulationDiverged as error:
            return Divergence(
                year=year.year,
                field=f"parent {parent.run_id} failure",
                recorded="(a recorded year)",
                replayed=_text(failure_message(error)),
            )
        divergence = compare_year(year, replayed)
        if divergence is not None:
            return msgspec.structs.replace(
                divergence, field=f"parent {parent.run_id} {divergence.field}"
            )
    return None


def _replay_failure(
    simulation: Simulation,
    duration_years: int,
    recorded_failure: str,
    report: Callable[..., ReplayReport],
) -> ReplayReport:
    """Simulate on past the recorded years (RunFailed keeps whole chunks only) until the
    engine fails; the failure must be the recorded one, word for word."""
    replayed = "(no failure: the run completed)"
    while simulation.year < duration_years:
        try:
            simulation.step()
        except SimulationDiverged as error:
            replayed = failure_message(error)
            break
    if replayed == recorded_failure:
        return report(None, failure=recorded_failure)
    divergence = Divergence(
        year=None, field="failure", recorded=_text(recorded_failure), replayed=_text(replayed)
    )
    return report(divergence)


class RunStateAtYear(msgspec.Struct, frozen=True, kw_only=True):
    """A run as it stood at the end of ``year``, folded from its recorded years only."""

    year: int
    economic: Economic
    environment: Environment
    total_spend_cents: int
    total_revenue_cents: int
    key_events: list[KeyEvent]


def state_at_year(recorded_years: Iterable[YearResult], year: int) -> RunStateAtYear | None:
    """Fold the recorded years up to ``year``; None if that year was not recorded."""
    spend = revenue = 0
    events: list[KeyEvent] = []
    for result in recorded_years:
        if result.year > year:
            break
        spend += result.economic.spend_cents
        revenue += result.economic.revenue_cents
        events.extend(result.key_events)
        if result.year == year:
            return RunStateAtYear(
                year=year,
                economic=result.economic,
                environment=result.environment,
                total_spend_cents=spend,
                total_revenue_cents=revenue,
                key_events=events,
            )
    return None
