"""Every exception class the project defines survives pickling: a run worker's error crosses a
process pool (spawned processes, Dask) pickled, and must arrive as the same error (type,
message, every attribute), or the caller sees a TypeError from unpickling instead.

Python pickles an exception as ``type(error)(*error.args)``: wrong for a class whose
``__init__`` takes other parameters than the message it passes up (``ValidationError(field,
message)``). domain/errors.py ``Picklable`` pickles the args and attributes instead.
"""

from __future__ import annotations

import importlib
import inspect
import multiprocessing
import pickle
import pkgutil
import typing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import ValidationError

PACKAGES = ("domain", "infrastructure", "projections")


def project_exceptions() -> list[type[BaseException]]:
    """Every exception class defined in the project's packages (each module imported)."""
    found: dict[str, type[BaseException]] = {}
    for package in PACKAGES:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            module = importlib.import_module(info.name)
            for value in vars(module).values():
                if (
                    inspect.isclass(value)
                    and issubclass(value, BaseException)
                    and value.__module__ == module.__name__
                ):
                    found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[name] for name in sorted(found)]


def _note(draw: Callable[[Any], Any]) -> Any:
    from projections.store import Note

    return Note(
        position=draw(st.integers(1, 2**62)),
        originator_id=draw(st.uuids()),
        originator_version=draw(st.integers(1, 2**31)),
        topic=draw(st.text(max_size=40)),
        state=draw(st.binary(max_size=20)),
    )


@st.composite
def _unhandled(draw: Callable[[Any], Any]) -> Any:
    from projections.decoding import UnhandledEvent

    return UnhandledEvent(_note(draw), draw(st.text(max_size=40)))


@st.composite
def _stopped(draw: Callable[[Any], Any]) -> Any:
    from projections.catchup import ProjectionStopped

    return ProjectionStopped(
        draw(st.text(max_size=20)), draw(_unhandled()), rebuilding=draw(st.booleans())
    )


def _strategy(annotation: Any) -> st.SearchStrategy[Any]:
    """Values for one ``__init__`` parameter, by its annotation."""
    simple: dict[Any, st.SearchStrategy[Any]] = {
        str: st.text(max_size=60),
        int: st.integers(-(2**63), 2**63),
        bool: st.booleans(),
        UUID: st.uuids(),
        float: st.floats(allow_nan=False),
        float | int: st.one_of(st.integers(), st.floats(allow_nan=False)),
        BaseException: st.builds(ValueError, st.text(max_size=30)),
    }
    if annotation in simple:
        return simple[annotation]
    name = getattr(annotation, "__name__", str(annotation))
    if name == "Note":
        return st.composite(lambda draw: _note(draw))()
    if name == "UnhandledEvent":
        return _unhandled()
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return st.lists(_strategy(item), max_size=3)
    if name == "ProjectionStopped":
        return _stopped()
    raise AssertionError(f"no values for a parameter of type {annotation!r}: add them here")


def instances(cls: type[BaseException]) -> st.SearchStrategy[BaseException]:
    """Instances of ``cls`` with drawn constructor arguments (a message, for a plain one)."""
    if cls.__init__ in (BaseException.__init__, Exception.__init__):
        return st.builds(cls, st.text(max_size=60))
    hints = typing.get_type_hints(cls.__init__)
    arguments = {
        name: _strategy(hints[name])
        for name, parameter in list(inspect.signature(cls.__init__).parameters.items())[1:]
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    }
    return st.builds(cls, **arguments)


def same(a: Any, b: Any) -> bool:
    """Equal, exceptions compared by type, args and attributes (they compare by identity)."""
    if isinstance(a, BaseException):
        return (
            type(a) is type(b)
            and str(a) == str(b)
            and same(a.args, b.args)
            and same(vars(a), vars(b))
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return bool(a == b) or (a != a and b != b)  # NaN equals itself here


EXCEPTIONS = project_exceptions()


def test_the_walk_finds_the_exceptions_workers_raise() -> None:
    names = {cls.__name__ for cls in EXCEPTIONS}
    assert {"ValidationError", "NotFound", "SimulationDiverged", "RunInterrupted"} <= names


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda cls: f"{cls.__module__}.{cls.__name__}")
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_exception_survives_pickling(cls: type[BaseException], data: st.DataObject) -> None:
    error = data.draw(instances(cls))
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        copy = pickle.loads(pickle.dumps(error, protocol=protocol))
        assert same(error, copy), (error, copy)


def test_a_validation_error_raised_in_a_spawned_worker_arrives_whole() -> None:
    """The path a sample run's error takes back to the experiment (infrastructure/executors.py)."""
    from infrastructure.inputs import parse_int

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        future = pool.submit(parse_int, "1e3", "budget_cents")
        with pytest.raises(ValidationError) as raised:
            future.result(timeout=120)
    assert raised.value.field == "budget_cents"
    assert str(raised.value).startswith("budget_cents: '1e3' is not an integer")
