"""``twinledger replay``: verify runs by re-simulating them, or show a run's state at a year.

Exit codes: 0 identical (a run that failed in the engine: the same failure again), 1 a
divergence (the first diverging year and field is printed with both values) or a run whose
events cannot be read (a missing version), 2 a user error (bad arguments, unknown run, a run
recorded by another engine version without --allow-other-engine, a run with nothing recorded
to verify, e.g. a queued one). ``--all`` goes on past a run it cannot verify and reports every
one, then exits with the worst. ``--format json`` prints the verdict (``--all``: a list).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from domain.errors import ValidationError
from domain.replay import EngineVersionMismatch
from infrastructure.cli.base import (
    RecordFormat,
    app,
    check_format,
    fail,
    format_cents,
    guarded,
    integer,
    print_json,
    service,
)
from infrastructure.errors import UnreadableStream
from infrastructure.views import ReplayVerdict, Run, RunState


@app.command("replay")
@guarded
def replay_command(
    run_id: Annotated[str | None, typer.Argument(help="The run to verify")] = None,
    to_year: Annotated[
        int | None,
        typer.Option(
            "--to-year",
            parser=integer("to_year"),
            help="Show the run's state at this year from its recorded events only",
        ),
    ] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Verify every completed run")] = False,
    allow_other_engine: Annotated[
        bool,
        typer.Option("--allow-other-engine", help="Replay runs recorded by another engine version"),
    ] = False,
    output: RecordFormat = "table",
    as_json: Annotated[bool, typer.Option("--json", hidden=True, help="= --format json")] = False,
) -> None:
    """Re-simulate a run from its RunQueued and compare every year and the summary."""
    check_format(output)
    json_out = as_json or output == "json"
    if all_runs == (run_id is not None):
        raise ValidationError("run_id", "give a run id or --all, not both and not neither")
    if all_runs and to_year is not None:
        raise ValidationError("to_year", "--to-year needs one run id, not --all")
    with service() as ledger:
        if to_year is not None:
            assert run_id is not None
            state = ledger.state_at_year(run_id, to_year)
            if json_out:
                print_json(state)
            else:
                typer.echo(describe_state(ledger.run(run_id), state))
            return
        if run_id is not None:
            verdict = ledger.replay_run(run_id, allow_other_engine=allow_other_engine)
            if json_out:
                print_json(verdict)
            else:
                typer.echo(describe_report(verdict))
            if not verdict.identical:
                raise typer.Exit(1)
            return
        identical = diverged = refused = unreadable = 0
        verdicts: list[Any] = []
        for outcome in ledger.replay_all(allow_other_engine=allow_other_engine):
            if isinstance(outcome, UnreadableStream):
                unreadable += 1
                verdicts.append({"run_id": str(outcome.ident), "unreadable": outcome.problem})
                if not json_out:
                    typer.echo(f"{outcome.ident} unreadable: {outcome.problem}")
                continue
            if isinstance(outcome, EngineVersionMismatch):
                refused += 1
                verdicts.append({"refused": str(outcome), "recorded_engine": outcome.recorded})
                if not json_out:
                    typer.echo(f"{_run_of(outcome)} refused: recorded by engine {outcome.recorded}")
                continue
            if outcome.identical:
                identical += 1
            else:
                diverged += 1
            verdicts.append(outcome)
            if not json_out:
                typer.echo(f"{outcome.run_id} {describe_report(outcome)}")
        total = identical + diverged + refused + unreadable
        if json_out:
            print_json(verdicts)
        else:
            typer.echo(
                f"{total} completed run(s): {identical} identical, {diverged} diverged, "
                f"{refused} refused" + (f", {unreadable} unreadable" if unreadable else "")
            )
        if diverged or unreadable:
            raise typer.Exit(1)
        if refused:
            fail(
                f"engine_version: {refused} run(s) recorded by another engine version were not "
                "verified (use --allow-other-engine to replay them anyway)",
                2,
            )


def _run_of(refusal: EngineVersionMismatch) -> str:
    """The run a refusal names (its message: "engine_version: run ID was recorded by ...")."""
    words = str(refusal).split()
    return words[2] if len(words) > 2 and words[1] == "run" else "a run"


def describe_report(report: ReplayVerdict) -> str:
    note = f" ({report.parent_note})" if report.parent_note else ""
    divergence = report.divergence
    if divergence is None:
        if report.failure is not None:
            return f"identical: {report.years} years, then the same failure: {report.failure}{note}"
        partial = "" if report.complete else " (run not completed: recorded years only)"
        return f"identical: {report.years} years{partial}, {report.digest}{note}"
    where = f"year {divergence.year}" if divergence.year is not None else "run"
    return (
        f"diverged at {where}, field {divergence.field} "
        f"(after {report.years} identical years): "
        f"recorded {divergence.recorded}, replayed {divergence.replayed}"
    )


def describe_state(run: Run, state: RunState) -> str:
    env = state.environment
    economic = state.economic
    composition = ", ".join(f"{gas} {pct:g}%" for gas, pct in env["composition_pct"].items())
    lines = [
        f"run {run.id} [{run.pattern}] at year {state.year} of {run.duration_years} "
        "(from recorded events, not re-simulated)",
        f"  balance            {format_cents(economic['balance_cents'])}",
        f"  spent this year    {format_cents(economic['spend_cents'])}",
        f"  revenue this year  {format_cents(economic['revenue_cents'])}",
        f"  spent so far       {format_cents(state.total_spend_cents)}",
        f"  revenue so far     {format_cents(state.total_revenue_cents)}",
        f"  temperature        {env['temperature_k']:g} K",
        f"  pressure           {env['pressure_kpa']:g} kPa",
        f"  composition        {composition}",
        f"  liquid water       {env['liquid_water_kg']:g} kg",
        f"  water ice          {env['water_ice_kg']:g} kg",
        f"  biomass            {env['biomass_kg']:g} kg",
        f"  habitability       {env['habitability']:g}",
        f"  key events so far  {len(state.key_events)}",
    ]
    lines.extend(
        f"    year {event['year']:>4}  {event['name']}: {event['description']}"
        for event in state.key_events
    )
    return "\n".join(lines)
