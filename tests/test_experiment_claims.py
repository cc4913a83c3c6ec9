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
import time
from pathlib import Path
from typing import Any

from eventsourcing.utils import get_topic

from domain.errors import NotFound
from domain.experiment import RunPurpose, structured_id, structured_run_id
from domain.run import YearResultRecorded
from infrastructure.application import TwinLedger
from infrastructure.experiments import (
    continue_experiment,
    get_experiment,
    run_experiment,
    start_experiment,
)
from tests.test_experiments import fingerprint, small_spec

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
YEARS = 1000  # about a second a run: the drains meet samples still queued
SAMPLES = 4
CLI = [sys.executable, "-c", "from infrastructure.cli import main; main()"]


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
    last_sample = structured_run_id(
        started.id, structured_id(started.id, 0, RunPurpose.INITIAL, SAMPLES - 1)
    )
    outcome: dict[str, Any] = {}

    def evaluate() -> None:
        try:
            outcome["experiment"] = continue_experiment(ledger, started, workers=1)
        except BaseException as error:  # reported by the assertion below
            outcome["error"] = error

    experiment = threading.Thread(target=evaluate)
    experiment.start()
    # The first drain starts once the first iteration's samples are all queued: it meets them.
    watcher = TwinLedger.open(database_url)
    deadline = time.monotonic() + 120
    while experiment.is_alive() and time.monotonic() < deadline:
        try:
            watcher.get_run(last_sample)
            break
        except NotFound:
            time.sleep(0.05)
    watcher.close()
    drains = []
    while experiment.is_alive():
        drains.append(drain(database_url))
    experiment.join()
    drains.append(drain(database_url))

    assert "error" not in outcome, outcome.get("error")
    for done in drains:
        assert done.returncode == 0, done.stderr[-2000:]
    # The drains took sample runs while the experiment was evaluating them: the contest happened.
    assert any("completed" in done.stdout for done in drains[:-1]), [d.stdout for d in drains]

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
