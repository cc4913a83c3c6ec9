"""Which module defines each command, and the first paragraph of its help: what `twinledger`
needs to list its commands and to run one without importing them all.

Importing every command module (and with them eventsourcing, psycopg, the projections...) took
1.0-1.5 s before any command ran (docs/performance.md, "Starting the CLI"). The group in
infrastructure/cli/base.py lists the commands from this table and imports a command's module
only when that command runs. tests/test_startup.py checks this table against the commands the
modules really define (names, modules, help as `--help` prints it); a command missing here
still works (its module is imported for the listing), and that test names it.
"""

from __future__ import annotations

MODULES = (
    "archive",
    "bench",
    "compare",
    "daemon",
    "experiments",
    "integrity",
    "lifecycle",
    "projections",
    "replay",
    "runs",
    "serve",
    "tables",
    "twins",
)
"""Every module that registers commands (imported all at once for a name not in COMMANDS)."""

COMMANDS: dict[str, tuple[str, str]] = {
    "archive": (
        "archive",
        "Export the complete event streams of a run (with its twin), or of a twin and its runs.",
    ),
    "import": (
        "archive",
        "Load an archive into this store: all or nothing; importing twice writes nothing more.",
    ),
    "bench": (
        "bench",
        "Benchmark on scratch storage beside --db (never the ledger itself); prints the numbers.",
    ),
    "compare": (
        "compare",
        "Compare runs: parameters (* where they differ), metrics, the first differing year.",
    ),
    "daemon": (
        "daemon",
        "Run expiry, retention, replay and chain verification on a schedule, once per fleet.",
    ),
    "runs": (
        "tables",
        "List runs from the simulation_runs table: filtered, ordered, a page at a time.",
    ),
    "experiments": (
        "tables",
        "List experiments, from the experiments table (`experiment show ID` for one).",
    ),
    "results": ("tables", "A run's per-year results, from the simulation_results table."),
    "expire": (
        "lifecycle",
        "End every twin past its expires_at (TwinExpired), cancelling its runs first. Idempotent.",
    ),
    "replay": (
        "replay",
        "Re-simulate a run from its RunQueued and compare every year and the summary.",
    ),
    "queue": (
        "runs",
        "Queue a run without executing it; prints the run id (--format json: the run).",
    ),
    "run": ("runs", "Queue a run on a twin and execute it with a progress bar (on stderr)."),
    "execute": (
        "runs",
        "Execute a queued run, or resume one interrupted by a crash; --queued drains the queue.",
    ),
    "cancel": ("runs", "Cancel a queued or running run (a running one stops at its next chunk)."),
    "digest": (
        "integrity",
        "Check every chain and print the ledger digest (Merkle root over stream heads).",
    ),
    "verify": (
        "integrity",
        "Check every stream's hash chain in one pass (no simulation).",
    ),
    "prove": (
        "integrity",
        "Print a proof (JSON) that the run's events are in the ledger with this digest.",
    ),
    "show-run": (
        "runs",
        "Show one run: its simulation_runs row, with the summary once completed.",
    ),
    "fork": (
        "runs",
        "Fork a run at a year with changes (what if...), then execute the fork.",
    ),
    "demo": (
        "runs",
        "Clone Mars, run mars_terraform for 100 years with a progress bar, print the summary.",
    ),
    "serve": ("serve", "Serve the JSON API under /api/v1 and the dashboard at /; Ctrl-C stops."),
    "bodies": ("twins", "List the built-in reference bodies a twin can be cloned from."),
    "clone": ("twins", "Clone a body into a new digital twin and print it (-q: its id only)."),
    "delete": ("twins", "Soft-delete a twin: it keeps its history and accepts no new runs."),
    "twin": ("twins", "Show one twin (its digital_twins row)."),
    "experiment": ("experiments", "Parameter searches over runs of a twin."),
    "db": ("integrity", "Database administration: roles."),
    "twins": ("tables", "List twins (from the digital_twins table), or `twins extend` one."),
    "retention": ("lifecycle", "Remove old rows from the read tables (never events)."),
    "projections": (
        "projections",
        "The projections that keep the read tables current (docs/projections.md).",
    ),
}
"""Command name: (module in infrastructure/cli, first paragraph of its help), in the order
`--help` lists them. Groups (a name with subcommands) import every module when run."""
