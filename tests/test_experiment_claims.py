"""An experiment evaluated in-process and ``execute --queued`` at once: each sample run once.

The experiment (one worker: samples execute in this process) and a loop of ``twinledger execute
--queued`` processes contend for the same queued sample runs; every executor takes the run's
claim (infrastructure/executors.py), so whoever gets it executes and the other finds it ended.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.utils import get_topic
from typer.testing import CliRunner

from domain.errors import ExperimentBusy, InvalidTransition
from domain.run import YearResultRecorded
from infrastructure.application import TwinLedger
from infrastructure.cli import app
from infrastructure.executors import experiment_claim, experiments_to_resume
from infrastructure.experiments import (
    continue_experiment,
    get_experiment,
    resume_experiment,
    run_experiment,
    start_experiment,
)
from tests.test_experiments import fingerprint, small_spec

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
YEARS = 1000  # about a second a run: the drains meet samples still queued
SAMPLES = 4
CLI = [sys.executable, "-c", "from infrastructure.cli import main; main()"]


DRAINER = """
import sys, time
from pathlib import Path
from infrastructure.executors import execute_claimed, runs_to_execute
from infrastructure.settings import resolve_database
url, stop = sys.argv[1], Path(sys.argv[2])
database, met = resolve_database(url), 0
print("ready", flush=True)
while not stop.exists():
    found = runs_to_execute(database)
    met += len(found)
    for run_id in found:
        execute_claimed(url, run_id)
    time.sleep(0.01)
print("met", met)
"""


def drain(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "execute", "--queued", "--db", url],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_an_in_process_experiment_and_execute_queued_execute_each_sample_once(
    database_url: str, tmp_path: Path
) -> None:
    spec = small_spec(years=YEARS, samples=SAMPLES, max_iterations=3)
    ledger = TwinLedger.open(database_url)
    started = start_experiment(ledger, spec, started_by="test")
    outcome: dict[str, Any] = {}

    def evaluate() -> None:
        try:
            outcome["experiment"] = continue_experiment(ledger, started, workers=1)
        except BaseException as error:  # reported by the assertion below
            outcome["error"] = error

    # A drainer process polls the queue the whole time (no start-up delay to lose the race on
    # a quiet machine), executing what it finds through the same claims as `execute --queued`.
    stop = tmp_path / "stop"
    drainer = subprocess.Popen(
        [sys.executable, "-c", DRAINER, database_url, str(stop)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert drainer.stdout is not None and drainer.stdout.readline() == "ready\n"
    experiment = threading.Thread(target=evaluate)
    experiment.start()
    experiment.join()
    stop.touch()
    met, errors = drainer.communicate(timeout=300)
    assert drainer.returncode == 0, errors[-2000:]
    final = drain(database_url)  # the CLI's own drain: nothing left for it

    assert "error" not in outcome, outcome.get("error")
    assert final.returncode == 0 and "no queued runs" in final.stdout, final
    # The drainer met sample runs while the experiment was evaluating them: the contest happened.
    assert int(met.split()[-1]) > 0, (met, errors[-2000:])

    evaluated = get_experiment(ledger, outcome["experiment"].id)
    year_topic = get_topic(YearResultRecorded)
    sample_ids = [s.run_id for it in evaluated.iterations for s in it.samples]
    assert len(sample_ids) == SAMPLES * len(evaluated.iterations) > 0
    for run_id in sample_ids:
        run = ledger.get_run(run_id)
        assert run.status == "completed"
        stored = ledger.recorder.select_events(run_id)
        versions = [event.originator_version for event in stored]
        assert versions == list(range(1, len(versions) + 1))  # contiguous, none twice
        assert sum(event.topic == year_topic for event in stored) == run.duration_years
        assert [year.year for year in ledger.years_of(run)] == list(range(1, YEARS + 1))

    alone = TwinLedger.open(f"sqlite:///{tmp_path}/alone.db")
    serial = run_experiment(alone, spec)
    assert fingerprint(ledger, evaluated) == fingerprint(alone, get_experiment(alone, serial.id))
    alone.close()
    ledger.close()


# --- one evaluator of an experiment at a time (its claim) -------------------------------------


def test_a_resume_is_refused_while_another_process_evaluates_the_experiment(
    database_url: str, tmp_path: Path
) -> None:
    """The evaluator holds the experiment's claim: `experiment resume` (the CLI, the server's
    start) is refused while it lives, by name, exit 2, nothing recorded; once the claim is free
    (the evaluator died), the resume carries it to the uninterrupted result."""
    spec = small_spec()
    ledger = TwinLedger.open(database_url)
    try:
        started = start_experiment(ledger, spec, started_by="test")
        assert ledger.database is not None
        database = ledger.database
        live = experiment_claim(database, started.id)  # a live evaluator, as far as anyone knows
        assert live.try_acquire()
        try:
            assert experiments_to_resume(database) == []
            with pytest.raises(ExperimentBusy, match="being evaluated by another process"):
                resume_experiment(ledger, started.id)
            refused = CliRunner().invoke(
                app, ["--db", database_url, "experiment", "resume", str(started.id)]
            )
            assert refused.exit_code == 2, refused.stderr
            assert refused.stderr.splitlines() == [
                f"error: experiment_id: experiment {started.id} is being evaluated by another "
                "process right now"
            ]
            assert len(ledger.recorder.select_events(started.id)) == 1  # ExperimentStarted
        finally:
            live.release()  # the evaluator died
        assert experiments_to_resume(database) == [str(started.id)]
        resumed = resume_experiment(ledger, started.id)
        assert resumed.status == "completed"
        assert experiments_to_resume(database) == []
        alone = TwinLedger.open(f"sqlite:///{tmp_path}/alone.db")
        try:
            serial = run_experiment(alone, spec)
            assert fingerprint(ledger, get_experiment(ledger, started.id)) == fingerprint(
                alone, get_experiment(alone, serial.id)
            )
        finally:
            alone.close()
    finally:
        ledger.close()


def test_an_experiment_is_claimed_before_it_is_recorded_started(database_url: str) -> None:
    """`experiment run` takes the claim before ExperimentStarted is saved: a server starting
    meanwhile never finds it orphaned. An evaluation that takes the claim of an experiment
    another evaluator ended meanwhile records nothing (refused: not running)."""
    ledger = TwinLedger.open(database_url)
    seen: dict[str, Any] = {}
    try:
        assert ledger.database is not None
        database = ledger.database

        def on_started(experiment: Any) -> None:
            seen["orphaned"] = experiments_to_resume(database)
            seen["free"] = experiment_claim(database, experiment.id).try_acquire()

        done = run_experiment(ledger, small_spec(max_iterations=2), on_started=on_started)
        assert seen == {"orphaned": [], "free": False}
        events = len(ledger.recorder.select_events(done.id))
        with pytest.raises(InvalidTransition, match="is completed, not running"):
            continue_experiment(ledger, done)
        assert len(ledger.recorder.select_events(done.id)) == events
    finally:
        ledger.close()


def test_a_busy_experiment_is_a_conflict_over_http() -> None:
    from infrastructure.http.app import _status

    assert _status(ExperimentBusy("experiment_id: busy")) == 409


def test_unclaimed_probes_claims_without_taking_them(ledger: TwinLedger) -> None:
    """``unclaimed`` names the ids whose claim nobody holds, in order, and leaves every
    claim as it found it: held ones still held, free ones free for the next taker (on
    PostgreSQL all probed on one connection, in one statement)."""
    import uuid

    from infrastructure.executors import run_claim, unclaimed

    database = ledger.database
    ids = [str(uuid.uuid4()) for _ in range(5)]
    held = [run_claim(database, ids[1]), run_claim(database, ids[3])]
    for claim in held:
        assert claim.try_acquire()
    try:
        assert unclaimed(database, ids, run_claim) == [ids[0], ids[2], ids[4]]
        assert unclaimed(database, ids, run_claim) == [ids[0], ids[2], ids[4]]  # nothing kept
        for ident in (ids[0], ids[2], ids[4]):
            taker = run_claim(database, ident)
            assert taker.try_acquire()  # let go by the probe
            taker.release()
        assert all(claim.held for claim in held)
    finally:
        for claim in held:
            claim.release()
    assert unclaimed(database, ids, run_claim) == ids
    assert unclaimed(database, [], run_claim) == []
