#!/usr/bin/env bash
# What if: a run with scheduled interventions, forks of it, and their replays.
# Runs in a few seconds on SQLite: bash docs/examples/what-if.sh [DATABASE]
set -euo pipefail
db=${1:-what-if.db}
tl() { twinledger --db "$db" "$@"; }
id() { grep -oE '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' | head -1; }

twin=$(tl clone mars --name "Mars (what if)" | id)

# The base run: 150 years, with a budget top-up, a dust storm and better technology scheduled.
base=$(tl queue "$twin" --years 150 --seed 42 \
  --intervene 60:budget_cents=+500000000000 \
  --intervene 80:hazard=dust_storm \
  --intervene 100:param.tech_level=7)
tl execute "$base" > /dev/null

# What if technology 9 from year 50? The same luck (no --seed): years 1..50 are the base's.
tech=$(tl fork "$base" --at-year 50 --tech-level 9 --queue-only)
tl execute "$tech" > /dev/null

# What if other luck after year 50, and an asteroid in year 120?
luck=$(tl fork "$base" --at-year 50 --seed 7 --intervene 120:hazard=asteroid_impact --queue-only)
tl execute "$luck" > /dev/null

tl show-run "$base"                     # interventions, forks made from it, provenance
tl show-run "$tech"                     # forked from the base after year 50, the changes
tl replay "$tech"                       # prefix checked against the base, then the tail
tl replay "$luck"
tl compare "$base" "$tech"              # where the fork parts from its parent: year 51
tl results "$tech" --type timeline      # the fork's key events, its fork point included
