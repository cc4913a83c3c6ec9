"""Search strategies: how an experiment proposes its next candidate (docs/experiments.md).

A strategy is a pure function of the spec (with its master seed) and the iterations decided so
far: given the same history it proposes the same candidate. That is what lets an experiment be
replayed and resumed: the proposals are recomputed from the recorded iterations. Random draws use
SplitMix64 (domain/prng.py) seeded from the master seed, never a global random state.

The tpe strategy (Optuna's TPE sampler) lives in infrastructure/tpe.py, behind the same
``Proposer`` interface, and is injected: domain/ stays pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

from domain.experiment import (
    ExperimentSpec,
    Judged,
    best_of,
    next_candidate,
)
from domain.prng import SplitMix64

Indexes = list[int]


class Proposer(Protocol):
    """Proposes the next candidate (an index into each dimension), or None when done."""

    done_reason: str  # the completion reason when it proposes None

    def propose(self, spec: ExperimentSpec, history: Sequence[Judged]) -> Indexes | None: ...


def strategy_seed(master_seed: int, strategy: str) -> int:
    """SHA-256 of "MASTER:strategy:NAME", first 8 bytes, top bit cleared (as sample seeds)."""
    digest = hashlib.sha256(f"{master_seed}:strategy:{strategy}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def grid_size(spec: ExperimentSpec) -> int:
    size = 1
    for _, values in spec.space.dimensions():
        size *= len(values)
    return size


class HillClimb:
    """First-improvement hill climbing over the grid: the first untried neighbour of the best."""

    done_reason = "converged"

    def propose(self, spec: ExperimentSpec, history: Sequence[Judged]) -> Indexes | None:
        return next_candidate(spec, [list(it.indexes) for it in history], best_of(history))


class RandomSearch:
    """Grid points drawn uniformly, each dimension in order, skipping points already tried.

    The draws come from one SplitMix64 stream seeded by ``strategy_seed(master, "random")``;
    the next candidate is the first point of that stream not yet tried, so it depends only on
    the seed and on which points were tried.
    """

    done_reason = "exhausted"

    def propose(self, spec: ExperimentSpec, history: Sequence[Judged]) -> Indexes | None:
        tried = {tuple(it.indexes) for it in history}
        if len(tried) >= grid_size(spec):
            return None
        sizes = [len(values) for _, values in spec.space.dimensions()]
        prng = SplitMix64(strategy_seed(spec.master_seed, "random"))
        while True:
            point = [prng.below(size) for size in sizes]
            if tuple(point) not in tried:
                return point


def latin_hypercube(spec: ExperimentSpec) -> list[Indexes]:
    """A Latin hypercube design of ``max_iterations`` points on the grid.

    For n points, [0, 1) is cut into n equal strata per dimension and every stratum is used
    exactly once (a Fisher-Yates permutation per dimension); within its stratum a point is
    x = (s + u / 2**32) / n for a 32-bit draw u, and takes grid index floor(x * L) of the L
    values. Integer arithmetic only: ((s * 2**32 + u) * L) // (n * 2**32).
    """
    n = spec.max_iterations
    prng = SplitMix64(strategy_seed(spec.master_seed, "latin_hypercube"))
    columns = []
    for _, values in spec.space.dimensions():
        size = len(values)
        strata = list(range(n))
        for i in range(n - 1, 0, -1):  # Fisher-Yates
            j = prng.below(i + 1)
            strata[i], strata[j] = strata[j], strata[i]
        columns.append(
            [(((s << 32) + (prng.next_u64() >> 32)) * size) // (n << 32) for s in strata]
        )
    return [list(point) for point in zip(*columns, strict=True)]


class LatinHypercube:
    """The points of ``latin_hypercube(spec)`` in order, skipping repeats of a point tried."""

    done_reason = "exhausted"

    def propose(self, spec: ExperimentSpec, history: Sequence[Judged]) -> Indexes | None:
        tried = {tuple(it.indexes) for it in history}
        for point in latin_hypercube(spec):  # cheap: max_iterations points
            if tuple(point) not in tried:
                return point
        return None
