"""The engine's pseudo-random number generator: SplitMix64, pinned and in pure integer arithmetic.

SplitMix64 is the generator of Steele, Lea & Flood, "Fast splittable pseudorandom number
generators" (OOPSLA 2014), as published by Sebastiano Vigna in splitmix64.c
(https://prng.di.unimi.it/splitmix64.c): a 64-bit state advanced by the golden-ratio increment
and passed through a fixed mixing function. It has period 2**64 and passes BigCrush. It is
written here with Python integers masked to 64 bits, so its outputs are the same on every
machine and every Python version; Python's ``random`` module is deliberately not used (its
algorithm and seeding are implementation details). tests/test_engine.py pins the first
outputs for seed 42 and the reference vector for seed 1234567.

Derived values use only integer arithmetic and exact conversions:
``uniform()`` is the top 53 bits times 2**-53 (exact in a double), ``below(n)`` rejects the
biased tail so every integer is equally likely.
"""

from __future__ import annotations

MASK64 = (1 << 64) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_TWO_POW_MINUS_53 = 1.0 / 9007199254740992.0  # 2**-53, exact

PRNG_NAME = "SplitMix64"


class SplitMix64:
    """SplitMix64 seeded with any integer (reduced modulo 2**64)."""

    __slots__ = ("draws", "state")

    def __init__(self, seed: int) -> None:
        self.state = seed & MASK64
        self.draws = 0

    def next_u64(self) -> int:
        self.state = (self.state + GOLDEN_GAMMA) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * _MIX1) & MASK64
        z = ((z ^ (z >> 27)) * _MIX2) & MASK64
        self.draws += 1
        return z ^ (z >> 31)

    def uniform(self) -> float:
        """A float in [0, 1): the top 53 bits of the next output, scaled exactly."""
        return (self.next_u64() >> 11) * _TWO_POW_MINUS_53

    def between(self, low: float, high: float) -> float:
        """A float in [low, high)."""
        return low + (high - low) * self.uniform()

    def chance(self, probability: float) -> bool:
        """True with the given probability (one draw, always consumed)."""
        return self.uniform() < probability

    def below(self, n: int) -> int:
        """An integer in [0, n), unbiased (rejection of the short tail)."""
        if n <= 0:
            raise ValueError("below: n must be positive")
        limit = (1 << 64) - ((1 << 64) % n)
        while True:
            value = self.next_u64()
            if value < limit:
                return value % n
