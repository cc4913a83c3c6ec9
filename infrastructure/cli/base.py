"""What every command shares: the Typer app, the --db option, error handling, formatting.

Errors a user can fix (bad input, unknown ids, refused transitions, a database that refuses
this role) print one line naming the field and exit with code 2; nothing is written. Other
failures exit 1 with one line (docs/operations.md, "Exit codes and error lines").
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from domain.errors import TwinLedgerError, ValidationError
from infrastructure.errors import StoreError

if TYPE_CHECKING:
    from infrastructure.application import TwinLedger
    from infrastructure.service import Ledger

# Heavy modules (the application, eventsourcing, psycopg, the projections, the input models)
# are imported inside the functions that use them: `twinledger --help` and light commands
# start without them (docs/performance.md, "Starting the CLI").


class _Plain:
    """Typer's coercion of a plain text or flag parameter, without pydantic.

    Typer (0.2x) coerces parameters through a pydantic TypeAdapter it builds when the
    parameter is first processed; importing pydantic for that is about 45 ms of a light
    command's start (`bodies`, docs/performance.md). For text and flags, which a command line,
    an environment variable or a default hands over as ``str`` or ``bool`` (or None), the
    adapter returns the value as given, so this does too; anything else goes to typer's own
    coercion."""

    def __init__(self, kind: type) -> None:
        self.kind = kind

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None or type(value) is self.kind:
            return value
        from typer._coercion import build_runtime_param

        return build_runtime_param(param.type_descriptor).coerce(value, param=param, ctx=ctx)


def plain_without_pydantic(params: list[Any]) -> None:
    """Give the single-valued ``str`` and ``bool`` parameters among ``params`` the coercion of
    ``_Plain`` (typer's internals as of 0.2x; with others this does nothing, and
    tests/test_startup.py, which checks that `bodies` loads no pydantic, says so)."""
    for param in params:
        descriptor = getattr(param, "type_descriptor", None)
        if (
            getattr(param, "_runtime_param", False) is None
            and descriptor is not None
            and descriptor.annotation in (str, bool)
            and not descriptor.is_choice
            and not param.multiple
            and param.nargs == 1
        ):
            param._runtime_param = _Plain(descriptor.annotation)


class _Deferred(type):
    """A stand-in for a rich class that typer's help module imports but help never uses: it
    imports the real class when it is used (called, or an attribute read)."""

    def _real(cls) -> Any:
        import importlib

        return getattr(importlib.import_module(cls.__module__), cls.__name__)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._real()(*args, **kwargs)

    def __getattr__(cls, name: str) -> Any:
        return getattr(cls._real(), name)


# What typer.rich_utils imports and help leaves unused: Markdown (rich_markup_mode="markdown";
# ours is "rich") and Traceback (pretty exceptions; ours are off). Importing them loads
# markdown_it and pygments: about half of the help's cost (docs/performance.md, "--help").
_UNUSED_IN_HELP = (("rich.markdown", "Markdown"), ("rich.traceback", "Traceback"))


def import_help_lightly() -> None:
    """Import typer's rich help module with stand-ins for the modules of ``_UNUSED_IN_HELP``
    (not yet imported): the same help, rendered the same way, without their import. The
    stand-ins leave ``sys.modules`` at once, so any later import gets the real modules."""
    import types

    if "typer.rich_utils" in sys.modules:
        return
    stand_ins = {}
    for module, name in _UNUSED_IN_HELP:
        if module not in sys.modules:
            stand_in = types.ModuleType(module)
            setattr(stand_in, name, _Deferred(name, (), {"__module__": module}))
            stand_ins[module] = sys.modules[module] = stand_in
    try:
        import typer.rich_utils  # noqa: F401
    finally:
        for module, stand_in in stand_ins.items():
            if sys.modules.get(module) is stand_in:
                del sys.modules[module]


def _asks_for_help(args: Any) -> bool:
    listed = list(sys.argv[1:] if args is None else args)
    return not listed or "--help" in listed


class OneLineErrors(TyperGroup):
    """Usage errors (a bad flag value, a missing argument) print one line and exit 2, like
    every other user error; a --flag value parser may raise a ledger error naming its field."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        if _asks_for_help(kwargs.get("args", args[0] if args else None)):
            import_help_lightly()
        if not kwargs.get("standalone_mode", True):
            return super().main(*args, **kwargs)
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except typer.TyperException as error:  # typer's click usage errors
            text = error.format_message() if hasattr(error, "format_message") else str(error)
            if type(error).__name__ == "NoArgsIsHelpError":  # the help text, as asked
                errors.print(text, markup=False, highlight=False)
            else:
                say(f"error: {' '.join(text.split())}")
            sys.exit(getattr(error, "exit_code", 2))
        except TwinLedgerError as error:  # from a flag value parser (see ``integer``)
            say(f"error: {error}")
            sys.exit(2)
        except typer.Abort:
            say("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    # --- commands imported when they run (infrastructure/cli/commands.py) ---------------------

    _listing = False  # formatting the help: list commands from the table, import nothing

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        from infrastructure.cli.commands import COMMANDS, MODULES

        if not self._listing or any(
            module not in {m for m, _ in COMMANDS.values()} for module in MODULES
        ):
            self._load(MODULES)  # a module the table does not know: list what it defines
        return [*COMMANDS, *(name for name in self.commands if name not in COMMANDS)]

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        plain_without_pydantic(self.get_params(ctx))  # (with the --help option)
        return super().parse_args(ctx, args)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = self._get_command(ctx, cmd_name)
        if command is not None:
            plain_without_pydantic(command.get_params(ctx))
        return command

    def _get_command(self, ctx: Any, cmd_name: str) -> Any:
        from infrastructure.cli.commands import COMMANDS, MODULES

        command = self.commands.get(cmd_name)
        if command is not None and not (isinstance(command, TyperGroup) and not _all_loaded()):
            return command
        if cmd_name in COMMANDS:
            module, help_text = COMMANDS[cmd_name]
            if self._listing:
                return TyperCommand(cmd_name, help=help_text)
            groups = cmd_name not in self._plain_commands(module)
            self._load(MODULES if groups else (module,))
        else:
            self._load(MODULES)
        return self.commands.get(cmd_name)

    def _plain_commands(self, module: str) -> set[str]:
        import importlib

        importlib.import_module(f"infrastructure.cli.{module}")
        return {
            info.name or (info.callback.__name__.replace("_", "-") if info.callback else "")
            for info in app.registered_commands
        }

    def _load(self, modules: tuple[str, ...]) -> None:
        """Import command modules and add the commands they register to this group."""
        import importlib

        for module in modules:
            importlib.import_module(f"infrastructure.cli.{module}")
        built = typer.main.get_command(app)
        assert isinstance(built, TyperGroup)
        for name, command in built.commands.items():
            # a group is rebuilt: more modules may have added subcommands to it (_all_loaded)
            if name not in self.commands or isinstance(command, TyperGroup):
                self.commands[name] = command


def _all_loaded() -> bool:
    """Whether every command module is imported: a group (`twins`) gets subcommands from
    several modules (`twins extend` from lifecycle), so one found before then may lack some
    (in a process that ran other commands first, as tests do)."""
    from infrastructure.cli.commands import MODULES

    return all(f"infrastructure.cli.{module}" in sys.modules for module in MODULES)


def hoist_db(args: list[str]) -> list[str]:
    """``--db URL`` (or ``--db=URL``) moved in front, wherever it was given (not after ``--``)."""
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest.extend(args[index:])
            break
        if arg == "--db" and index + 1 < len(args):
            front += args[index : index + 2]
            index += 2
            continue
        if arg.startswith("--db="):
            front.append(arg)
        else:
            rest.append(arg)
        index += 1
    return front + rest


class DbAnywhere(OneLineErrors):
    """The root command group: one-line usage errors, and ``--db`` accepted after the
    subcommand too."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_db(args))


app = typer.Typer(
    cls=DbAnywhere,
    help="TwinLedger: an event-sourced ledger for digital-twin simulations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# No rich markup anywhere: names, paths, patterns and messages print as given ("Mars [red]x",
# "[mars_terraform]"), in lines and in table cells alike; styles come from the renderables.
console = Console(markup=False)
errors = Console(stderr=True, markup=False)
T = TypeVar("T")

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="TWINLEDGER_DATABASE_URL",
        help="Database: a SQLite path (default ./twinledger.db) or postgresql://...",
        show_envvar=True,
    ),
]


class State:
    db: str | None = None


state = State()


@app.callback()
def _global(db: DbOption = None) -> None:
    state.db = db
    for stream in (console, errors):  # piped or redirected: never cut a line (an id, a digest)
        if not stream.is_terminal:
            stream.width = PIPE_WIDTH


@contextmanager
def ledger() -> Iterator[TwinLedger]:
    from infrastructure.application import TwinLedger
    from projections.runner import keep_current

    application = TwinLedger.open(state.db)
    # Read your writes: the read tables catch up after each write, before anything prints.
    detach = keep_current(application, lambda text: errors.print(text, markup=False))
    try:
        yield application
    finally:
        detach()
        application.close()


def say(line: str) -> None:
    """One line on stderr, never wrapped or styled (control characters are escaped)."""
    errors.print(
        line.encode("unicode_escape").decode() if _unprintable(line) else line,
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _unprintable(text: str) -> bool:
    return any(ord(char) < 32 or 127 <= ord(char) < 160 for char in text)


def fail(message: str, code: int) -> None:
    say(f"error: {message}")
    raise typer.Exit(code)


def guarded(command: Callable[..., T]) -> Callable[..., T]:
    """Turn ledger errors into one-line messages and exit codes instead of tracebacks."""
    import functools

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return command(*args, **kwargs)
        except TwinLedgerError as error:
            fail(str(error), 2)
        except StoreError as error:  # not the user's input; nothing half-done (docs/operations.md)
            fail(str(error), 1)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as error:
            message, code = unexpected(error)
            fail(message, code)
        raise AssertionError("unreachable")

    return wrapper


def unexpected(error: Exception) -> tuple[str, int]:
    """An error no command expects, as one line and an exit code (docs/operations.md, Exit
    codes): a database's error names the command, the database (password masked) and the
    database's own first line (exit 2 if it refuses this user, 1 if it failed); a file's names
    the file (exit 1); anything else is a bug, named by its class (exit 1)."""
    from infrastructure.errors import database_failure, first_line

    found = database_failure(error, _where(), f"`{_doing()}`")
    if found is not None:
        return found
    if isinstance(error, OSError) and error.strerror:
        name = f"{error.filename}: " if error.filename is not None else ""
        return f"{name}{error.strerror}", 1
    return f"unexpected {type(error).__name__}: {first_line(error)}", 1


def _where() -> str:
    """The --db database as messages name it (password masked)."""
    from infrastructure.settings import mask_password, resolve_database

    try:
        return resolve_database(state.db).describe()
    except TwinLedgerError:
        return mask_password(state.db or "the database")


def _doing() -> str:
    """The running command as typed, less its arguments: `twinledger experiment resume`."""
    try:  # typer 0.2x carries its own click (the command runs in its context)
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover (typer on the click package)
        from click import get_current_context  # type: ignore[no-redef]

    context = get_current_context(silent=True)
    names: list[str] = []
    while context is not None and context.parent is not None:
        names.insert(0, context.info_name or "")
        context = context.parent
    return " ".join(["twinledger", *names])


def parse_cents(text: str, field: str = "budget_cents") -> int:
    """Integer GCC cents in ASCII digits (no floats, no '_', no Unicode digits)."""
    from infrastructure.inputs import parse_int

    if not text.isascii() or not text.isdigit():
        raise ValidationError(
            field,
            f"{text[:40]!r} must be an integer number of GCC cents in ASCII digits "
            "(no floats, no signs, no separators)",
        )
    return parse_int(text, field)


def parse_params(pairs: list[str]) -> dict[str, float | int]:
    """--param KEY=NUMBER pairs; the keys and ranges are checked by the pattern."""
    from infrastructure.inputs import parse_number

    params: dict[str, float | int] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValidationError("param", f"{pair[:40]!r} is not KEY=NUMBER")
        params[key] = parse_number(value, f"pattern_params.{key}"[:80])
    return params


def integer(
    field: str, low: int | None = None, high: int | None = None
) -> Callable[[str | int], int]:
    """A typer ``parser`` for an integer flag: ASCII digits only (infrastructure/inputs.py
    parse_int), within [low, high] when given; a refusal names ``field``."""

    def parse(text: str | int) -> int:
        from infrastructure.inputs import parse_int

        value = text if isinstance(text, int) else parse_int(text, field)
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"[{low if low is not None else '...'}, {high if high is not None else '...'}]"
            raise ValidationError(field, f"{value} is outside {bounds}")
        return value

    return parse


def number(field: str, low: float, high: float) -> Callable[[str | float], float]:
    """A typer ``parser`` for a decimal flag in ASCII (no nan, inf or Unicode digits), within
    [low, high]; a refusal names ``field``."""

    def parse(text: str | float) -> float:
        from infrastructure.inputs import parse_number

        value = float(text if isinstance(text, int | float) else parse_number(text, field))
        if not low <= value <= high:
            raise ValidationError(field, f"{value:g} is outside [{low:g}, {high:g}]")
        return value

    return parse


def format_cents(cents: int) -> str:
    """Integer cents as GCC with two decimals, computed with integers only."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole:,}.{part:02d} GCC"


def to_json(value: Any) -> str:
    import msgspec

    return json.dumps(msgspec.to_builtins(value), indent=2)


# --- output for scripts and people ---------------------------------------------------------------

PIPE_WIDTH = 100_000
RECORD_FORMATS = ("table", "json")
RecordFormat = Annotated[str, typer.Option("--format", help="table or json")]
Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="Print only the id (one per line)")]


@contextmanager
def service() -> Iterator[Ledger]:
    """The service layer (infrastructure/service.py) on the --db database."""
    from infrastructure.service import Ledger

    with Ledger.open(state.db, warn=lambda text: errors.print(text, markup=False)) as opened:
        yield opened


def check_format(output: str, allowed: tuple[str, ...] = RECORD_FORMATS) -> None:
    if output not in allowed:
        raise ValidationError("format", f"{output!r} is not one of {', '.join(allowed)}")


def builtins(value: Any) -> Any:
    """A record (pydantic view, msgspec Struct, dataclass) as plain JSON-able values."""
    import msgspec

    pydantic = sys.modules.get("pydantic")  # a pydantic view means pydantic is loaded already
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [builtins(item) for item in value]
    return msgspec.to_builtins(value)


def print_json(value: Any) -> None:
    """JSON on stdout, unwrapped (plain print: no markup, no line width)."""
    print(json.dumps(builtins(value), indent=2, ensure_ascii=False))
