"""What every command shares: the Typer app, the --db option, error handling, formatting.

Errors a user can fix (bad input, unknown ids, refused transitions) print one line naming the
field and exit with code 2; nothing is written. Other failures exit 1 with one line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import msgspec
import typer
from pydantic import BaseModel
from rich.console import Console
from typer.core import TyperGroup

from domain.errors import TwinLedgerError, ValidationError
from infrastructure.application import TwinLedger
from infrastructure.service import Ledger
from projections.runner import keep_current


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


class DbAnywhere(TyperGroup):
    """The root command group: ``--db`` is accepted after the subcommand too."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_db(args))


app = typer.Typer(
    cls=DbAnywhere,
    help="TwinLedger: an event-sourced ledger for digital-twin simulations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)
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
    application = TwinLedger.open(state.db)
    # Read your writes: the read tables catch up after each write, before anything prints.
    detach = keep_current(application, lambda text: errors.print(text, markup=False))
    try:
        yield application
    finally:
        detach()
        application.close()


def fail(message: str, code: int) -> None:
    errors.print(f"error: {message}", markup=False, highlight=False)
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
        except (typer.Exit, typer.Abort):
            raise
        except Exception as error:  # an unexpected failure: still one line, exit code 1
            fail(f"{type(error).__name__}: {error}", 1)
        raise AssertionError("unreachable")

    return wrapper


def parse_cents(text: str, field: str = "budget_cents") -> int:
    cleaned = text.replace("_", "").strip()
    if not cleaned.isdigit():
        raise ValidationError(
            field, f"{text!r} must be an integer number of GCC cents (no floats, no signs)"
        )
    return int(cleaned)


def parse_params(pairs: list[str]) -> dict[str, float | int]:
    params: dict[str, float | int] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValidationError("param", f"{pair!r} is not KEY=NUMBER")
        try:
            params[key] = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            raise ValidationError(f"pattern_params.{key}", f"{value!r} is not a number") from None
    return params


def format_cents(cents: int) -> str:
    """Integer cents as GCC with two decimals, computed with integers only."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole:,}.{part:02d} GCC"


def to_json(value: Any) -> str:
    return json.dumps(msgspec.to_builtins(value), indent=2)


# --- output for scripts and people ---------------------------------------------------------------

PIPE_WIDTH = 100_000
RECORD_FORMATS = ("table", "json")
RecordFormat = Annotated[str, typer.Option("--format", help="table or json")]
Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="Print only the id (one per line)")]


@contextmanager
def service() -> Iterator[Ledger]:
    """The service layer (infrastructure/service.py) on the --db database."""
    with Ledger.open(state.db, warn=lambda text: errors.print(text, markup=False)) as opened:
        yield opened


def check_format(output: str, allowed: tuple[str, ...] = RECORD_FORMATS) -> None:
    if output not in allowed:
        raise ValidationError("format", f"{output!r} is not one of {', '.join(allowed)}")


def builtins(value: Any) -> Any:
    """A record (pydantic view, msgspec Struct, dataclass) as plain JSON-able values."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [builtins(item) for item in value]
    return msgspec.to_builtins(value)


def print_json(value: Any) -> None:
    """JSON on stdout, unwrapped (plain print: no markup, no line width)."""
    print(json.dumps(builtins(value), indent=2, ensure_ascii=False))
