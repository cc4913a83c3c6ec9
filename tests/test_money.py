"""Money is integer cents in every field of every event, key events included: the event classes
declare it (every ``_cents`` field is an int), and real scenarios on SQLite and PostgreSQL
store it so (every ``_cents`` value, at any depth, in every event type of every aggregate)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

import msgspec
import pytest
from test_divergence import extreme_run, huge_pressure
from test_engine import HOME, SPEC
from test_experiments import small_spec

import domain.experiment
import domain.run
import domain.twin
from domain.aggregate import Created, Event
from domain.experiment import Experiment, ExperimentSpec, Objective, SearchSpace
from domain.values import Pattern, is_money
from infrastructure.application import TwinLedger
from infrastructure.experiments import run_experiment

AGGREGATE_MODULES = (domain.twin, domain.run, domain.experiment)

# Struct fields holding dicts of floats only: none of them is money (they are checked here so
# that a new dict[str, float] field, which could not hold int cents, is a deliberate choice).
FLOAT_DICTS_NOT_MONEY = {
    "composition_pct": "gas shares, % by volume",
    "gas_change_pct": "a custom spec's yearly gas changes, %",
    "pattern_params": "pattern parameters (rates, shares, kelvin); budgets are budget_cents",
    "base_pattern_params": "an experiment's base pattern parameters, as pattern_params",
}


def event_classes() -> list[type[Event]]:
    found: list[type[Event]] = []
    for module in AGGREGATE_MODULES:
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Event)
                and value not in (Event, Created)
                and value.__module__ == module.__name__
            ):
                found.append(value)
    return sorted(found, key=lambda cls: cls.__qualname__)


def _type_problems(info: Any, path: str, seen: set[type]) -> list[str]:
    """Money fields typed as anything but int (or int | None, or list[int])."""
    problems: list[str] = []
    if isinstance(info, msgspec.inspect.StructType):
        if info.cls in seen:
            return []
        seen = seen | {info.cls}
        for field in info.fields:
            where = f"{path}.{field.name}"
            if is_money(field.name) and not _is_int(field.type):
                problems.append(f"{where}: {field.type}")
            if (
                isinstance(field.type, msgspec.inspect.DictType)
                and isinstance(field.type.value_type, msgspec.inspect.FloatType)
                and field.name not in FLOAT_DICTS_NOT_MONEY
            ):
                problems.append(f"{where}: dict of floats cannot hold int cents")
            problems += _type_problems(field.type, where, seen)
    elif isinstance(info, msgspec.inspect.UnionType):
        for member in info.types:
            problems += _type_problems(member, path, seen)
    elif isinstance(info, msgspec.inspect.ListType | msgspec.inspect.DictType):
        inner = info.item_type if isinstance(info, msgspec.inspect.ListType) else info.value_type
        problems += _type_problems(inner, f"{path}[]", seen)
    return problems


def _is_int(info: Any) -> bool:
    if isinstance(info, msgspec.inspect.IntType):
        return True
    if isinstance(info, msgspec.inspect.UnionType):
        return all(
            isinstance(member, msgspec.inspect.IntType | msgspec.inspect.NoneType)
            for member in info.types
        )
    if isinstance(info, msgspec.inspect.ListType):
        return isinstance(info.item_type, msgspec.inspect.IntType)
    return False


def test_every_money_field_of_every_event_class_is_typed_int() -> None:
    classes = event_classes()
    names = {cls.__name__ for cls in classes}
    assert {"TwinCloned", "RunQueued", "YearResultRecorded", "RunCompleted"} <= names
    assert {"ExperimentStarted", "IterationEvaluated", "ExperimentFailed"} <= names
    problems = [
        problem
        for cls in classes
        for problem in _type_problems(msgspec.inspect.type_info(cls), cls.__name__, set())
    ]
    assert problems == []


def money_problems(value: Any, path: str = "") -> list[str]:
    """Every value under a money key (``_cents``), at any depth, that is not int cents."""
    problems: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}"
            if is_money(str(key)):
                items = item if isinstance(item, list) else [item]
                for money in items:
                    if money is not None and (type(money) is not int):
                        problems.append(f"{where}: {money!r}")
            problems += money_problems(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problems += money_problems(item, f"{path}[{index}]")
    return problems


def test_the_walk_finds_float_money_at_any_depth() -> None:
    event = {"summary": {"key_events": [{"data": {"balance_cents": 2775790000.0}}]}}
    assert money_problems(event) == [".summary.key_events[0].data.balance_cents: 2775790000.0"]
    assert money_problems({"budget_cents": [1, 2.0], "x_cents": None, "flag_cents": 1}) == [
        ".budget_cents: 2.0"
    ]


def scenarios(ledger: TwinLedger) -> None:
    """Produce every event type of every aggregate, with key events of every pattern."""
    for pattern in Pattern:
        twin_id = ledger.clone_twin(name=f"money {pattern}", body=HOME[pattern])
        custom = msgspec.to_builtins(SPEC) if pattern == Pattern.CUSTOM else None
        for budget, years in ((1_000_000_000_000, 60), (3_000_000_000, 12)):
            run_id = ledger.queue_run(
                twin_id,
                pattern=pattern,
                duration_years=years,
                budget_cents=budget,
                custom_spec=custom,
                seed=11,
            )
            ledger.execute_run(run_id, chunk_years=20)
        ledger.extend_twin(twin_id, by=timedelta(days=1))
    cancelled = ledger.queue_run(
        ledger.clone_twin(name="cancelled", body="mars"),
        pattern="mars_terraform",
        duration_years=5,
        budget_cents=1,
    )
    ledger.cancel_run(cancelled, reason="money test")
    failed = extreme_run(ledger, Pattern.VENUS_INDUSTRIAL, state=huge_pressure(Pattern.TITAN_FUEL))
    ledger.execute_run(failed)
    ledger.delete_twin(ledger.get_run(failed).twin_id, reason="money test")
    expiring = ledger.get_twin(ledger.clone_twin(name="expiring", body="moon"))
    assert expiring.expires_at is not None
    expiring.expire(expiring.expires_at + timedelta(seconds=1))
    ledger.save_and_notify(expiring)

    run_experiment(ledger, small_spec(samples=1, max_iterations=3))
    run_experiment(
        ledger,
        small_spec(
            samples=2,
            max_iterations=3,
            objective={"kind": "minimize_cost_to_event", "target_event": "warming_10k"},
        ),
    )
    experiment = Experiment.start(
        twin_id=twin_id,
        twin_state=ledger.get_twin(twin_id).state,
        spec=ExperimentSpec(
            name="failing",
            pattern=Pattern.MARS_TERRAFORM,
            duration_years=1,
            master_seed=1,
            samples=1,
            max_iterations=1,
            objective=Objective.MAXIMIZE_HABITABILITY,
            space=SearchSpace(budget_cents=[1, 2]),
            base_budget_cents=5,
            max_cost_cents=7,
        ),
        engine_version="test",
        started_by="test",
    )
    experiment.fail("money test")
    ledger.save_and_notify(experiment)


def stored_events(ledger: TwinLedger) -> list[Any]:
    notifications = ledger.recorder.select_notifications(start=None, limit=1_000_000)
    return [ledger.mapper.to_domain_event(notification) for notification in notifications]


def test_every_stored_event_holds_money_as_integer_cents(ledger: TwinLedger) -> None:
    scenarios(ledger)
    events = stored_events(ledger)
    seen = {type(event) for event in events}
    assert seen == set(event_classes())  # every event type of every aggregate was produced

    money_key_events: dict[UUID, set[str]] = {}
    for event in events:
        data = msgspec.to_builtins(event)
        assert money_problems(data, type(event).__name__) == []
        if type(event).__name__ == "YearResultRecorded":
            for key_event in event.key_events:
                if any(is_money(key) for key in key_event.data):
                    money_key_events.setdefault(event.originator_id, set()).add(key_event.name)
    patterns = {
        ledger.get_run(run_id).pattern for run_id, names in money_key_events.items() if names
    }
    assert patterns == set(Pattern)  # money key events of every pattern were checked
    names = set().union(*money_key_events.values())
    assert {"budget_exhausted", "first_revenue"} <= names


@pytest.mark.parametrize("key", ["balance_cents", "program_cents"])
def test_budget_exhausted_keeps_the_exact_cents(key: str) -> None:
    """The issue's case: 2,775,789,012 cents was stored as 2775790000.0."""
    from test_engine import inputs, run

    years, summary = run(inputs(years=100))
    event = next(e for e in summary.key_events if e.name == "budget_exhausted")
    assert type(event.data[key]) is int
    year = years[event.year - 1]
    spent = year.economic.spend_cents
    if key == "balance_cents":
        assert event.data[key] == years[event.year - 2].economic.balance_cents
    else:
        assert event.data[key] >= spent
