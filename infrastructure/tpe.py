"""The tpe strategy: Bayesian optimisation with Optuna's seeded TPE sampler, behind ``Proposer``.

Optuna is used so that its proposals are a function of the seed and of what it was told, in
order: an in-memory study, ``TPESampler(seed=..., n_startup_trials=N_STARTUP)``, and the
ask/tell interface one trial at a time. Every recorded iteration is told back in iteration
order (its mean objective; both objectives under pareto; FAIL for an infeasible or cut
candidate), so the same history always yields the same next candidate: live, on replay and on
resume. A proposal that repeats a point already tried is told that point's recorded values and
asked again (nothing is evaluated twice). Optuna is imported here only, when a tpe experiment
runs, and its version is recorded in ExperimentStarted (optuna_version): a different version may
propose differently, so replay refuses it unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

from domain.errors import InvalidTransition
from domain.experiment import ExperimentSpec, Judged, Objective
from domain.strategies import Indexes, strategy_seed

N_STARTUP = 5  # random (seeded) trials before TPE models the history; fixed so replay matches
MAX_REPEATS = 100  # consecutive proposals of tried points before the search counts as exhausted


def optuna_version() -> str:
    """The installed Optuna's version, without importing it."""
    return version("optuna")


Told = tuple[tuple[int, ...], tuple[float, ...] | None]


def _told(spec: ExperimentSpec, it: Judged) -> Told:
    """What Optuna is told of an iteration: its values, or None (FAIL)."""
    if it.cut or not it.feasible or it.objective_value is None:
        return tuple(it.indexes), None
    if spec.objective == Objective.PARETO:
        return tuple(it.indexes), (float(it.objective_value), float(it.cost_cents))
    return tuple(it.indexes), (float(it.objective_value),)


class TpeProposer:
    """Proposes with an Optuna study kept in step with the history (rebuilt if it differs)."""

    done_reason = "exhausted"

    def __init__(self) -> None:
        self._study: Any = None
        self._spec: ExperimentSpec | None = None
        self._consumed: list[Told] = []
        self._pending: Any = None  # the trial of the last proposal, told when it is evaluated

    def _reset(self, spec: ExperimentSpec) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(
            seed=strategy_seed(spec.master_seed, "tpe") % 2**32, n_startup_trials=N_STARTUP
        )
        if spec.objective == Objective.PARETO:
            directions = ["maximize", "minimize"]
        elif spec.objective == Objective.MAXIMIZE_HABITABILITY:
            directions = ["maximize"]
        else:
            directions = ["minimize"]
        self._study = optuna.create_study(directions=directions, sampler=sampler)
        self._spec = spec
        self._consumed = []
        self._pending = None

    def propose(self, spec: ExperimentSpec, history: Sequence[Judged]) -> Indexes | None:
        told = [_told(spec, it) for it in history]
        if self._spec != spec or told[: len(self._consumed)] != self._consumed:
            self._reset(spec)
        for n in range(len(self._consumed), len(told)):
            point = self._ask_untried()
            if point is None or point != list(told[n][0]):
                raise InvalidTransition(
                    f"iteration: the tpe strategy proposes {point} at iteration {n}, "
                    f"the record holds {list(told[n][0])}"
                )
            self._tell(self._pending, told[n][1])
            self._pending = None
            self._consumed.append(told[n])
        return self._ask_untried()

    def _ask_untried(self) -> Indexes | None:
        """The next proposed point not tried yet (its trial kept pending), or None."""
        import optuna

        dimensions = self._spec.space.dimensions() if self._spec is not None else []
        distributions = {
            name: optuna.distributions.IntDistribution(0, len(values) - 1)
            for name, values in dimensions
        }
        tried = dict(self._consumed)
        for _ in range(MAX_REPEATS):
            trial = self._pending if self._pending is not None else self._study.ask(distributions)
            self._pending = trial
            point = [int(trial.params[name]) for name, _ in dimensions]
            if tuple(point) not in tried:
                return point
            self._tell(trial, tried[tuple(point)])  # a repeat: told what it gave before
            self._pending = None
        return None

    def _tell(self, trial: Any, values: tuple[float, ...] | None) -> None:
        import optuna

        if values is None:
            self._study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self._study.tell(trial, list(values))
