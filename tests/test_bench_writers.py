"""`twinledger bench --writers-profile`, small: where concurrent writers' time goes
(infrastructure/bench/writers_profile.py). Shares are checked to be shares; no speed is asserted."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import fresh_postgres_url

from domain.errors import ValidationError
from infrastructure.bench.writers_profile import profile_all, profile_rows


@pytest.mark.postgres
def test_the_writers_profile_accounts_for_the_writers_time() -> None:
    """`bench --writers-profile`, small: every share is a share, the states of a writer's
    backends cover its sampled time, and the one-writer run never waits for the lock."""
    with fresh_postgres_url() as url:
        profiles = profile_all(url, (1, 2), runs_each=2, years=250)
    one = profiles[0]
    for profile in profiles:
        assert profile.events_per_second > 0 and profile.samples > 0
        assert math.isclose(sum(profile.states.values()), 1.0, abs_tol=0.01)
        assert profile.client_us > 0 and profile.backend_us > 0
        assert profile.append_us <= profile.client_us
        for share in (profile.client_cpu, profile.lock_held, profile.cores_busy, profile.ours):
            assert 0 <= share <= 1.01
    assert one.states["awaiting the table lock"] == 0
    assert len(profile_rows(profiles)) == 26 and all(len(v) == 2 for _, v in profile_rows(profiles))


def test_the_writers_profile_needs_postgresql(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="db: --writers-profile needs PostgreSQL"):
        profile_all(f"sqlite:///{tmp_path}/x.db", (1,), runs_each=1, years=5)
