"""The ``twinledger`` command line: a thin layer over the TwinLedger application.

Errors a user can fix (bad input, unknown ids, refused transitions, a database that refuses
this role) print one line naming the field and exit with code 2; nothing is written. Other
failures exit 1 with one line (docs/operations.md, "Exit codes and error lines").
Each module registers its commands on the shared Typer app (infrastructure/cli/base.py); a
module is imported when one of its commands runs (infrastructure/cli/commands.py), so that
`twinledger --help` and light commands start fast.
"""

from __future__ import annotations

import signal
import sys

from infrastructure.cli.base import app, errors


def main() -> None:
    # `twinledger ... | head`: a reader that closes the pipe ends the command quietly, as it
    # ends cat or grep (SIGPIPE's default action), instead of a BrokenPipeError on stderr.
    # Every command prints through this process's stdout, so this one line covers them all.
    # Database connections are unaffected: libpq and SQLite never raise SIGPIPE.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        app()
    except KeyboardInterrupt:
        errors.print("interrupted")
        sys.exit(130)
