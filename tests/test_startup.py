"""`twinledger` starts without the heavy modules: `import infrastructure.cli`, `--help` and
`bodies` import neither the database drivers nor eventsourcing's application, the projections,
Dask or the HTTP server; commands are imported when they run (infrastructure/cli/commands.py).
No time is asserted (docs/performance.md, "Starting the CLI", has the numbers)."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import subprocess
import sys

import pytest
import typer.main

from infrastructure.cli.base import app
from infrastructure.cli.commands import COMMANDS, MODULES

HEAVY = (
    "psycopg",
    "eventsourcing.application",
    "eventsourcing.postgres",
    "infrastructure.application",
    "projections.runner",
    "distributed",
    "fastapi",
)


def imported_after(*argv: str) -> set[str]:
    """The modules loaded by `twinledger ARGV` (or by the import alone), in a fresh process."""
    script = (
        "import json, sys\n"
        "from infrastructure.cli import main\n"
        f"sys.argv = ['twinledger', *{list(argv)!r}]\n"
        "try:\n"
        "    main() if len(sys.argv) > 1 else None\n"
        "except SystemExit:\n"
        "    pass\n"
        "sys.stdout = sys.__stdout__\n"
        "print('\\nMODULES=' + json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ)
    )
    line = done.stdout.rsplit("MODULES=", 1)[-1]
    return set(json.loads(line))


def test_importing_the_cli_loads_no_heavy_module() -> None:
    loaded = imported_after()
    assert "infrastructure.cli" in loaded
    assert not [name for name in HEAVY if name in loaded]


def test_help_loads_no_command_module() -> None:
    loaded = imported_after("--help")
    assert not [name for name in HEAVY if name in loaded]
    assert not [m for m in MODULES if f"infrastructure.cli.{m}" in loaded]


def test_bodies_loads_only_its_own_module() -> None:
    loaded = imported_after("bodies")
    assert "infrastructure.cli.twins" in loaded
    assert not [name for name in HEAVY if name in loaded]
    assert not [m for m in MODULES if m != "twins" and f"infrastructure.cli.{m}" in loaded]


@pytest.mark.parametrize(
    "argv",
    [
        ("--help",),
        ("bodies",),
        ("bodies", "-q"),
        ("bodies", "--format", "json"),
        ("bodies", "--help"),
    ],
)
def test_help_and_bodies_load_no_pydantic(argv: tuple[str, ...]) -> None:
    """Typer coerces parameters through pydantic TypeAdapters; plain text and flags are
    coerced without them (infrastructure/cli/base.py, ``_Plain``): pydantic alone was about
    45 ms of `bodies`' start. The input models (infrastructure/inputs.py) stay unloaded too."""
    loaded = imported_after(*argv)
    assert "pydantic" not in loaded
    assert "typer._adapters" not in loaded
    assert "infrastructure.inputs" not in loaded


def test_a_plain_parameter_still_gets_typers_coercion_for_other_values() -> None:
    """``_Plain`` passes text and flags through as given, and hands anything else to typer."""
    from infrastructure.cli.base import _Plain

    option = typer.main.get_command(app).params[0]  # --db, text
    assert option.name == "db"
    assert _Plain(str).coerce("sqlite:///x.db", option, None) == "sqlite:///x.db"
    assert _Plain(str).coerce(None, option, None) is None
    assert _Plain(str).coerce(12, option, None) == "12"  # typer's (pydantic's) coercion


def test_the_command_table_matches_the_commands_the_modules_define() -> None:
    for module in MODULES:
        importlib.import_module(f"infrastructure.cli.{module}")
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    real = {}
    for name, command in group.commands.items():
        text = inspect.cleandoc(command.short_help or command.help or "").split("\n\n")[0]
        real[name] = text
    # (the order --help lists them in is checked by the next test, in a fresh process: here
    # other tests may have imported the modules in another order)
    assert real == {name: text for name, (_, text) in COMMANDS.items()}
    for name, command in group.commands.items():
        module = COMMANDS[name][0]
        if command.callback is not None and not isinstance(command, typer.core.TyperGroup):
            assert command.callback.__module__ == f"infrastructure.cli.{module}", name


def test_help_lists_the_same_text_lazily_and_with_every_module_imported() -> None:
    def help_text(eager: bool) -> str:
        preload = (
            "import importlib\n"
            f"for m in {MODULES!r}: importlib.import_module('infrastructure.cli.' + m)\n"
        )
        script = (
            (preload if eager else "")
            + "import sys\nfrom infrastructure.cli import main\n"
            + "sys.argv = ['twinledger', '--help']\nmain()\n"
        )
        env = {**os.environ, "COLUMNS": "100", "TERM": "dumb"}
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    lazy = help_text(eager=False)
    assert "bodies" in lazy and "projections" in lazy
    assert lazy == help_text(eager=True)


@pytest.mark.parametrize("argv", [("--help",), ("runs", "--help"), ("experiment", "--help")])
def test_help_loads_neither_markdown_nor_pygments(argv: tuple[str, ...]) -> None:
    """Typer's help module imports rich's Markdown and Traceback, which help never uses (our
    markup mode is "rich", pretty exceptions are off); loading them (markdown_it, pygments)
    was about half of `--help`'s CPU (docs/performance.md, "--help")."""
    loaded = imported_after(*argv)
    assert "typer.rich_utils" in loaded  # the help was rendered by typer's rich help
    assert not [name for name in ("markdown_it", "pygments", "rich.markdown") if name in loaded]


def test_help_without_the_stand_ins_is_the_same_text() -> None:
    """The stand-ins change nothing shown: each command's help, rendered after rich.markdown
    and rich.traceback were really imported, is the same text (and they are real afterwards)."""

    def help_text(argv: list[str], real_first: bool) -> str:
        script = (
            ("import rich.markdown, rich.traceback\n" if real_first else "")
            + "import sys\nfrom infrastructure.cli import main\n"
            + f"sys.argv = ['twinledger', *{argv!r}]\n"
            + "try:\n    main()\nexcept SystemExit:\n    pass\n"
            + "import rich.markdown, rich.traceback\n"
            + "assert hasattr(rich.markdown.Markdown, '__rich_console__')\n"
            + "assert hasattr(rich.traceback.Traceback, 'from_exception')\n"
            + "print('REAL-AFTER')\n"
        )
        env = {**os.environ, "COLUMNS": "100", "TERM": "dumb"}
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env
        )
        assert done.stdout.endswith("REAL-AFTER\n"), done.stderr
        return done.stdout

    for argv in (["--help"], ["runs", "--help"], ["experiment", "resume", "--help"], []):
        light = help_text(argv, real_first=False)
        assert "Usage" in light
        assert light == help_text(argv, real_first=True), argv
