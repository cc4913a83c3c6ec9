"""Read models: relational tables folded from the event log, on SQLite and on PostgreSQL.

- tables.py: the tables, described once; DDL for each back end
- twins.py, runs.py, results.py: the projections (digital_twins, simulation_runs,
  simulation_results): lean event types and a batch handler each
- base.py: what a projection is; Fold, the load/fold/write-back helper
- decoding.py: lean decoding of stored events; what counts as an event we cannot handle
- tracking.py: each projection's position, written with its rows
- runner.py: Projector (the projections of one database), status, parked events, checksums;
  its jobs: catchup.py (exactly once, parking), rebuild.py (blue/green), follower.py (following
  the log: the loop, and one active follower per store), keep_current.py (read your writes)
- checksum.py: canonical rows and checksums (rebuilds and back ends compared)
- queries.py: the reads the CLI makes

docs/projections.md explains how it works; docs/queries.md is for users writing SQL.
"""
