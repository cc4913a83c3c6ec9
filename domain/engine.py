"""The simulation engine: advances a body's state one year at a time under a pattern.

A run's results are a pure function of its inputs (RunInputs, built from RunQueued alone):
the body's state, the pattern, the duration, the parameters and the seed of the SplitMix64
generator (domain/prng.py). docs/simulation.md describes the model; in short, every year:

1. hazard: with the pattern's small probability, a random event destroys part of one project;
2. money: the program's annual cost (pattern, priority, ``spend_scale``) varies by
   +-``funding_variance``; what the balance allows is split between the projects, which pay
   their upkeep first and build new capacity with the rest; each project may suffer an
   equipment failure; unspent money stays in the balance;
3. physics: the pattern turns the projects' output into changes of the world, and revenue;
4. thresholds: key events fire the first year a threshold is crossed.

When the budget runs out (the balance cannot pay the year's program), a ``budget_exhausted``
key event fires once; from then on only the money left plus revenue is spent, projects idle
(capacity without upkeep decays 5 %/year faster) and the world drifts on its own physics.
The balance never goes below zero. Money is integer GCC cents throughout.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from domain.errors import SimulationDiverged, ValidationError
from domain.interventions import (
    ADD,
    BUDGET_KEY,
    FORK_EVENT,
    HAZARD_KEY,
    HAZARDS,
    INTERVENTION_EVENT,
    ORBITAL_PROJECTS,
    PARAM_PREFIX,
    SET,
    ForkPoint,
    Intervention,
    hazard_effect,
)
from domain.physics import (
    ARMSTRONG_LIMIT_KPA,
    BREATHABLE_O2_KPA,
    CMB_K,
    TRIPLE_POINT_K,
    TRIPLE_POINT_KPA,
    clamp,
    habitability,
    quantize,
    total,
)
from domain.prng import SplitMix64
from domain.values import (
    MAX_SEED,
    BodyState,
    Economic,
    Environment,
    EventData,
    KeyEvent,
    Pattern,
    Priority,
    RunParameters,
    RunSummary,
    SuccessMetrics,
    YearResult,
    is_money,
)
from domain.world import (
    MAX_CENTS,
    MAX_GIVEN_CENTS,
    Milestone,
    NonFinite,
    PatternModel,
    Project,
    World,
    ceil_cents,
    to_cents,
)

# 1.1.0: money in key events and resource consumption is integer cents (was a float rounded
# to 6 significant digits), reductions use math.fsum, a non-finite value fails the run.
ENGINE_VERSION = "1.1.0"

NEGLECT_DECAY = 0.05  # extra yearly decay of capacity whose upkeep is not paid
DEFAULT_FUNDING_VARIANCE = 0.10
HABITABILITY_VALUE_CENTS = 2_000_000_000_000  # 20 bn GCC per unit of habitability gained
COMMON_PARAMETERS: dict[str, tuple[float, float]] = {
    "failure_rate": (0.0, 0.5),
    "funding_variance": (0.0, 0.5),
    "hazard_rate": (0.0, 0.5),
}


class RunInputs(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a run's results depend on; nothing else is read.

    ``interventions`` and ``forks`` (the run's lineage, oldest first) change the run at the
    start of given years (domain/interventions.py); both are empty for a plain run.
    """

    state: BodyState
    pattern: Pattern
    duration_years: int
    parameters: RunParameters
    seed: int
    interventions: list[Intervention] = msgspec.field(default_factory=list)
    forks: list[ForkPoint] = msgspec.field(default_factory=list)


def _model_class(pattern: Pattern) -> type[PatternModel]:
    from domain.patterns import MODELS

    return MODELS[pattern]


def check_parameters(pattern: Pattern, parameters: RunParameters) -> None:
    """Raise ValidationError naming the first pattern parameter that is unknown or out of range.

    Every pattern takes failure_rate, funding_variance and hazard_rate; the built-in patterns
    also take spend_scale and share_<project> (docs/simulation.md lists them).
    """
    allowed = dict(COMMON_PARAMETERS)
    allowed.update(_model_class(pattern).parameter_ranges())
    for name in sorted(parameters.pattern_params):
        value = parameters.pattern_params[name]
        if name not in allowed:
            known = ", ".join(sorted(allowed))
            raise ValidationError(
                f"pattern_params.{name}", f"unknown parameter for {pattern}; known: {known}"
            )
        low, high = allowed[name]
        if not low <= value <= high:
            raise ValidationError(
                f"pattern_params.{name}", f"{value} is outside [{low:g}, {high:g}]"
            )
    if not 1 <= parameters.tech_level <= 10:
        raise ValidationError("tech_level", "must be between 1 and 10")
    if parameters.budget_cents < 0:
        raise ValidationError("budget_cents", "must not be negative")


def check_interventions(
    pattern: Pattern,
    duration_years: int,
    interventions: list[Intervention],
    *,
    after_year: int = 0,
    field: str = "interventions",
) -> None:
    """Raise ValidationError naming the first intervention whose year, key or value is not
    acceptable for a run of this pattern and duration (after ``after_year``, for a fork)."""
    for index, intervention in enumerate(interventions):
        where = f"{field}[{index}]"
        year, key, value = intervention.year, intervention.key, intervention.value
        if not 1 <= year <= duration_years:
            raise ValidationError(
                f"{where}.year", f"year {year} is outside the run's years 1..{duration_years}"
            )
        if year <= after_year:
            raise ValidationError(
                f"{where}.year", f"year {year} is not after the fork year {after_year}"
            )
        if intervention.mode not in (ADD, SET) or (intervention.mode == ADD and key != BUDGET_KEY):
            raise ValidationError(
                f"{where}.mode", f"{intervention.mode!r}: only {BUDGET_KEY} may add ('add')"
            )
        if key == BUDGET_KEY:
            if type(value) is not int:
                raise ValidationError(f"{where}.value", "budget_cents must be integer cents")
            if intervention.mode == SET and value < 0:
                raise ValidationError(f"{where}.value", f"{value} is not a balance in cents")
            if abs(value) > MAX_GIVEN_CENTS:
                raise ValidationError(f"{where}.value", f"{value} is beyond {MAX_GIVEN_CENTS}")
        elif key == HAZARD_KEY:
            hazard = HAZARDS.get(str(value))
            if hazard is None:
                known = ", ".join(sorted(HAZARDS))
                raise ValidationError(f"{where}.value", f"unknown hazard {value!r}; known: {known}")
            if hazard_effect(hazard.name, pattern) is None:
                raise ValidationError(
                    f"{where}.value", f"{hazard.name} cannot happen on {pattern}: {hazard.absent}"
                )
        elif key.startswith(PARAM_PREFIX):
            _changed_parameters(pattern, key[len(PARAM_PREFIX) :], value, f"{where}.value")
        else:
            raise ValidationError(
                f"{where}.key",
                f"unknown key {key!r}; known: {BUDGET_KEY}, {HAZARD_KEY}, {PARAM_PREFIX}NAME",
            )


def _changed_parameters(
    pattern: Pattern,
    name: str,
    value: int | float | str,
    field: str,
    parameters: RunParameters | None = None,
) -> RunParameters:
    """``parameters`` with one parameter changed (tech_level, priority or a pattern
    parameter), checked like a queued run's."""
    base = parameters or RunParameters(budget_cents=0)
    if name == "tech_level":
        if type(value) is not int or not 1 <= value <= 10:
            raise ValidationError(field, f"tech_level must be an integer 1 to 10, not {value!r}")
        return msgspec.structs.replace(base, tech_level=value)
    if name == "priority":
        if value not in set(Priority):
            raise ValidationError(field, f"priority must be low, normal or high, not {value!r}")
        return msgspec.structs.replace(base, priority=Priority(str(value)))
    if type(value) not in (int, float) or not math.isfinite(float(value)):
        raise ValidationError(field, f"{name} must be a finite number, not {value!r}")
    changed = dict(base.pattern_params)
    changed[name] = float(value)
    try:
        check_parameters(
            pattern, msgspec.structs.replace(base, pattern_params={name: float(value)})
        )
    except ValidationError as error:
        raise ValidationError(field, error.message) from None
    return msgspec.structs.replace(base, pattern_params=dict(sorted(changed.items())))


def check_fork(pattern: Pattern, duration_years: int, fork: ForkPoint) -> None:
    """Raise ValidationError naming the first unacceptable part of a fork point."""
    if not 1 <= fork.at_year < duration_years:
        raise ValidationError(
            "at_year",
            f"{fork.at_year} is outside 1..{duration_years - 1} (the run has "
            f"{duration_years} years; a fork needs at least one year after its fork point)",
        )
    changes = fork.changes
    if changes.budget_cents is not None and not 0 <= changes.budget_cents <= MAX_GIVEN_CENTS:
        raise ValidationError("budget_cents", "must be between 0 and 2^62 cents")
    if changes.seed is not None and not 0 <= changes.seed <= MAX_SEED:
        raise ValidationError("seed", f"must be between 0 and {MAX_SEED}")
    if changes.tech_level is not None:
        _changed_parameters(pattern, "tech_level", changes.tech_level, "tech_level")
    for name in sorted(changes.pattern_params):
        _changed_parameters(pattern, name, changes.pattern_params[name], f"pattern_params.{name}")
    check_interventions(pattern, duration_years, changes.interventions, after_year=fork.at_year)


class Simulation:
    """Steps a run year by year; ``summary()`` is valid once the last year is done."""

    def __init__(self, inputs: RunInputs) -> None:
        check_parameters(inputs.pattern, inputs.parameters)
        if inputs.duration_years < 1:
            raise ValidationError("duration_years", "must be at least 1")
        check_interventions(inputs.pattern, inputs.duration_years, inputs.interventions)
        for fork in inputs.forks:
            check_fork(inputs.pattern, inputs.duration_years, fork)
        self.inputs = inputs
        self.year = 0
        self._phase = "start_state"
        self._diverged: SimulationDiverged | None = None  # a start state that is not finite
        try:
            self._set_up(inputs)
            self._check_finite(msgspec.to_builtins(self._start), "start_state")
            self._check_state()
        except SimulationDiverged as diverged:
            self._diverged = diverged  # raised by the first step, so the run records it
        except NonFinite as error:
            self._diverged = SimulationDiverged(0, error.field, error.describe())
        except (ArithmeticError, ValueError) as error:
            self._diverged = SimulationDiverged(0, self._phase, _arithmetic(error))

    def _set_up(self, inputs: RunInputs) -> None:
        self.rng = SplitMix64(inputs.seed)
        self.world = World(inputs.state)
        self.model = _model_class(inputs.pattern)(inputs.parameters, self.world)
        self.projects: dict[str, Project] = {p.name: p for p in self.model.projects()}
        self._use_parameters(inputs.parameters)
        self.balance = inputs.parameters.budget_cents
        self._schedule: dict[int, list[ForkPoint | Intervention]] = {}
        for fork in inputs.forks:
            self._schedule.setdefault(fork.at_year + 1, []).append(fork)
        for intervention in inputs.interventions:
            self._schedule.setdefault(intervention.year, []).append(intervention)
        for fork in inputs.forks:
            for intervention in fork.changes.interventions:
                self._schedule.setdefault(intervention.year, []).append(intervention)
        self.total_spend = 0
        self.total_revenue = 0
        self.last_spend = 0
        self.last_revenue = 0
        self.exhausted = False
        self.consumption: dict[str, float | int] = {}  # money (``_cents``) as int cents
        self.valued_output = 0.0
        self.valued_potential = 0.0
        self._events: list[KeyEvent] = []
        self._reached: dict[str, int] = {}
        self._milestones = self._generic_milestones() + self.model.milestones()
        self._held_at_start = {m.name for m in self._milestones if m.reached()}
        self._start = self.environment()
        self._current = self._start

    def _use_parameters(self, parameters: RunParameters) -> None:
        """Take ``parameters`` as the run's from now on (at the start, or changed by a fork or
        an intervention): the model's and the derived rates."""
        params = parameters.pattern_params
        self.parameters = parameters
        self.model.parameters = parameters
        self.model.params = params
        self.tech_efficiency = (5 + parameters.tech_level) / 10.0
        self.failure_probability = (
            params.get("failure_rate", self.model.failure_rate)
            * (15 - parameters.tech_level)
            / 10.0
        )
        self.hazard_probability = params.get("hazard_rate", self.model.hazard.annual_probability)
        variance = params.get("funding_variance", DEFAULT_FUNDING_VARIANCE)
        self.variance_permille = int(variance * 1000)

    # --- forks and interventions (domain/interventions.py) -------------------------------------

    def _intervene(self, events: list[KeyEvent]) -> None:
        """Apply this year's fork points, then its interventions, in their recorded order."""
        for change in self._schedule.get(self.year, []):
            if isinstance(change, ForkPoint):
                self._fork(change, events)
            else:
                self._apply_intervention(change, events)

    def _fork(self, fork: ForkPoint, events: list[KeyEvent]) -> None:
        changes = fork.changes
        parameters = self.parameters
        data: EventData = {}
        if changes.budget_cents is not None:
            change = changes.budget_cents - parameters.budget_cents
            self.balance = max(0, self.balance + change)
            parameters = msgspec.structs.replace(parameters, budget_cents=changes.budget_cents)
            data["balance_cents"] = self.balance
            data["change_cents"] = change
        if changes.tech_level is not None:
            parameters = msgspec.structs.replace(parameters, tech_level=changes.tech_level)
        if changes.priority is not None:
            parameters = msgspec.structs.replace(parameters, priority=changes.priority)
        if changes.pattern_params:
            merged = dict(parameters.pattern_params)
            merged.update(changes.pattern_params)
            parameters = msgspec.structs.replace(
                parameters, pattern_params=dict(sorted(merged.items()))
            )
        self._use_parameters(parameters)
        if changes.seed is not None:
            self.rng = SplitMix64(changes.seed)
        events.append(
            self._event(
                FORK_EVENT,
                f"forked from run {fork.parent_run_id} after year {fork.at_year}: "
                f"{changes.describe()}",
                data,
            )
        )

    def _apply_intervention(self, intervention: Intervention, events: list[KeyEvent]) -> None:
        key, value = intervention.key, intervention.value
        text = f"scheduled intervention {intervention.text()}"
        if key == BUDGET_KEY:
            assert isinstance(value, int)
            before = self.balance
            self.balance = max(0, before + value) if intervention.mode == ADD else value
            events.append(
                self._event(
                    INTERVENTION_EVENT,
                    f"{text}: the balance went from {gcc(before)} to {gcc(self.balance)}",
                    {"balance_cents": self.balance, "change_cents": self.balance - before},
                )
            )
        elif key == HAZARD_KEY:
            self._scheduled_hazard(str(value), text, events)
        else:
            name = key[len(PARAM_PREFIX) :]
            parameters = _changed_parameters(self.inputs.pattern, name, value, key, self.parameters)
            self._use_parameters(parameters)
            data: EventData = {} if isinstance(value, str) else {"value": float(value)}
            events.append(self._event(INTERVENTION_EVENT, f"{text}: {name} is now {value}", data))

    def _scheduled_hazard(self, name: str, text: str, events: list[KeyEvent]) -> None:
        """A scheduled hazard strikes at once: projects lose capacity (when they operate this
        year, combined with any random hazard), temperature and biomass drop."""
        effect = hazard_effect(name, self.inputs.pattern)
        assert effect is not None  # checked with the inputs
        for project_name in sorted(self.projects):
            project = self.projects[project_name]
            orbital = project_name in ORBITAL_PROJECTS
            share = effect.orbital_damage if orbital else effect.surface_damage
            if share > 0.0:
                project.damage = _combine(project.damage, share)
        world = self.world
        world.temperature_k = max(CMB_K, world.temperature_k + effect.temperature_change_k)
        killed = world.biomass_kg * effect.biomass_loss
        world.biomass_kg -= killed
        events.append(
            self._event(
                name,
                f"{text}: {HAZARDS[name].description}",
                {
                    "biomass_lost_kg": killed,
                    "orbital_capacity_lost_pct": effect.orbital_damage * 100.0,
                    "surface_capacity_lost_pct": effect.surface_damage * 100.0,
                    "temperature_change_k": effect.temperature_change_k,
                },
            )
        )

    # --- one year ------------------------------------------------------------------------------

    def step(self) -> YearResult:
        """Simulate the next year. Raises SimulationDiverged (naming the year and the field)
        if any quantity of the year, published or internal, is not finite, or money outgrows
        MAX_CENTS: nothing non-finite ever leaves the engine."""
        if self._diverged is not None:
            raise self._diverged
        self.year += 1
        try:
            result = self._advance()
        except NonFinite as error:
            raise SimulationDiverged(self.year, error.field, error.describe()) from None
        except (ArithmeticError, ValueError) as error:
            # A division by zero or a math domain error from values out of all proportion
            # (an area or a pressure that overflowed to inf, then divided): still a divergence
            # of this year, named by the phase it happened in.
            raise SimulationDiverged(self.year, self._phase, _arithmetic(error)) from None
        economic = result.economic
        money = [economic.balance_cents, economic.spend_cents, economic.revenue_cents]
        money += [v for event in result.key_events for v in event.data.values() if type(v) is int]
        # Fast path: msgspec writes a non-finite float as null, and no field of a year result
        # is ever null; only a suspect year is walked field by field to name the culprit.
        if b"null" in msgspec.json.encode(result) or max(map(abs, money)) > MAX_CENTS:
            self._check_finite(msgspec.to_builtins(result), "")
        self._check_state()
        return result

    def _advance(self) -> YearResult:
        events: list[KeyEvent] = []
        if self.year in self._schedule:
            self._phase = "interventions"
            self._intervene(events)
        self._phase = "hazard"
        self._hazard(events)
        self._phase = "projects"
        spend = self._fund_projects(events)
        self._phase = f"physics ({self.inputs.pattern})"
        outcome = self.model.apply(self.projects, self.rng)
        self._phase = "key_events"
        revenue = max(0, outcome.revenue_cents)
        self.balance += revenue
        self.total_spend += spend
        self.total_revenue += revenue
        self.last_spend, self.last_revenue = spend, revenue
        for name in sorted(outcome.consumption):
            amount = outcome.consumption[name]
            self.consumption[name] = self.consumption.get(name, 0) + amount
        atmosphere = self.world.atmosphere
        atmosphere.hold()  # read-only from here to the year's end: its derived values once
        try:
            self._check_milestones(events)
            self._events.extend(events)
            self._phase = "environment"
            self._current = self.environment()
        finally:
            atmosphere.release()
        return YearResult(
            year=self.year,
            economic=Economic(spend_cents=spend, revenue_cents=revenue, balance_cents=self.balance),
            environment=self._current,
            key_events=events,
        )

    def _hazard(self, events: list[KeyEvent]) -> None:
        """Maybe strike one project: it loses a share of its capacity (and of this year's
        build) when it operates this year."""
        hazard = self.model.hazard
        if not self.rng.chance(self.hazard_probability):
            return
        names = sorted(self.projects)
        name = names[self.rng.below(len(names))]
        severity = self.rng.between(0.1, 0.4)
        project = self.projects[name]
        project.damage = _combine(project.damage, severity)
        events.append(
            self._event(
                hazard.name,
                f"{hazard.description}: {name} lost {severity * 100:.0f}% of its capacity",
                {"capacity_lost_pct": severity * 100.0},
            )
        )

    def _fund_projects(self, events: list[KeyEvent]) -> int:
        plan = self.model.plan_cents()
        variance = self.variance_permille
        permille = 1000 - variance + self.rng.below(2 * variance + 1)
        appropriation = plan * permille // 1000
        available = min(appropriation, self.balance)
        if appropriation > available and not self.exhausted:
            self.exhausted = True
            events.append(
                self._event(
                    "budget_exhausted",
                    f"the budget ran out: {gcc(available)} left for this year's program of "
                    f"{gcc(appropriation)}; from now on only revenue is spent and unfunded "
                    "projects idle",
                    {"balance_cents": self.balance, "program_cents": appropriation},
                )
            )
        allocations = _split(available, self.model.shares(self.projects))
        spend = 0
        for name in sorted(self.projects):
            spend += self._operate(self.projects[name], allocations.get(name, 0))
        self.balance -= spend
        return spend

    def _operate(self, project: Project, allocation: int) -> int:
        """Pay upkeep, build with the rest, draw an equipment failure; returns cents used."""
        efficiency = self.tech_efficiency if self.model.tech_scaled() else 1.0
        upkeep = project.capacity * project.unit_cost_cents * project.upkeep_rate
        if upkeep > 0.0:
            utilization = min(1.0, allocation / upkeep)
            used = min(allocation, ceil_cents(upkeep, f"projects.{project.name}.upkeep_cents"))
        else:
            utilization = 1.0
            used = 0
        decay = project.depreciation + NEGLECT_DECAY * (1.0 - utilization)
        existing = project.capacity * (1.0 - clamp(decay, 0.0, 1.0))
        built = 0.0
        remaining = allocation - used
        if project.unit_cost_cents <= 0.0:
            built = max(0.0, (project.max_capacity or 1.0) - existing)
        elif remaining > 0:
            built = remaining / project.unit_cost_cents * efficiency
            cost = remaining
            if project.max_capacity is not None and existing + built > project.max_capacity:
                built = max(0.0, project.max_capacity - existing)
                cost = min(
                    remaining,
                    ceil_cents(
                        built / efficiency * project.unit_cost_cents,
                        f"projects.{project.name}.build_cents",
                    ),
                )
            used += cost
        failed = self.rng.chance(self.failure_probability)
        loss = self.rng.between(0.05, 0.3) if failed else 0.0
        intact = (1.0 - loss) * (1.0 - project.damage)
        project.damage = 0.0
        project.capacity = (existing + built) * intact
        project.potential = existing + built
        project.output = (existing * utilization + built) * intact
        unit_value = project.unit_cost_cents if project.unit_cost_cents > 0.0 else 1.0
        self.valued_output += project.output * unit_value
        self.valued_potential += project.potential * unit_value
        return used

    # --- key events ----------------------------------------------------------------------------

    def _event(self, name: str, description: str, data: EventData) -> KeyEvent:
        """A key event; quantities are published like year results, money stays int cents."""
        published: EventData = {}
        for key in sorted(data):
            value = data[key]
            if is_money(key):
                if not isinstance(value, int):
                    raise TypeError(f"key event {name}: {key} must be integer cents")
                published[key] = value
            else:
                published[key] = quantize(value)
        return KeyEvent(year=self.year, name=name, description=description, data=published)

    # --- finiteness ----------------------------------------------------------------------------

    def _check_finite(self, value: Any, path: str) -> None:
        """Raise SimulationDiverged at the first (in sorted key order) float that is not
        finite or int beyond MAX_CENTS in ``value`` (builtins: dicts, lists, numbers)."""
        if isinstance(value, dict):
            for key in sorted(value):
                self._check_finite(value[key], f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self._check_finite(item, f"{path}[{index}]")
        elif isinstance(value, float) and not math.isfinite(value):
            raise SimulationDiverged(self.year, path, repr(value))
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_CENTS:
            raise SimulationDiverged(self.year, path, NonFinite(path, value).describe())

    def _check_state(self) -> None:
        """The internal state must be finite too: a NaN the published values rounded or
        clamped away would still steer every later year."""
        holders = [self.world, self.world.atmosphere, self.model, *self.projects.values()]
        floats = [self.valued_output, self.valued_potential, *self.consumption.values()]
        for holder in holders:
            for value in vars(holder).values():
                if type(value) is float:
                    floats.append(value)
                elif type(value) is dict:
                    floats.extend(v for v in value.values() if type(v) is float)
        totals = max(abs(self.balance), self.total_revenue, self.total_spend)
        if all(map(math.isfinite, floats)) and totals <= MAX_CENTS:
            return  # the fast path; otherwise name the field:
        state: dict[str, Any] = {
            "consumption": dict(self.consumption),
            "valued_output": self.valued_output,
            "valued_potential": self.valued_potential,
            "totals": {
                "balance_cents": self.balance,
                "total_revenue_cents": self.total_revenue,
                "total_spend_cents": self.total_spend,
            },
            "world": _numbers(self.world),
            "atmosphere": _numbers(self.world.atmosphere),
            "model": _numbers(self.model),
            "projects": {name: _numbers(self.projects[name]) for name in sorted(self.projects)},
        }
        self._check_finite(state, "")

    def _check_milestones(self, events: list[KeyEvent]) -> None:
        for milestone in self._milestones:
            name = milestone.name
            if name in self._reached or name in self._held_at_start or not milestone.reached():
                continue
            self._reached[name] = self.year
            events.append(self._event(name, milestone.description, milestone.data()))

    def _generic_milestones(self) -> list[Milestone]:
        world = self.world

        def pressure() -> EventData:
            return {"pressure_kpa": world.atmosphere.pressure_kpa()}

        def oxygen() -> EventData:
            return {"o2_kpa": world.atmosphere.partial_kpa("O2")}

        def water() -> EventData:
            return {
                "liquid_water_kg": world.liquid_water_kg,
                "pressure_kpa": world.atmosphere.pressure_kpa(),
                "temperature_k": world.temperature_k,
            }

        def money() -> EventData:
            return {
                "revenue_cents": self.last_revenue,
                "spend_cents": self.last_spend,
                "total_revenue_cents": self.total_revenue,
                "total_spend_cents": self.total_spend,
            }

        return [
            Milestone(
                "first_revenue",
                "the program earned its first revenue",
                lambda: self.total_revenue > 0,
                money,
            ),
            Milestone(
                "self_funding",
                "a year's revenue covered that year's spending",
                lambda: self.last_spend > 0 and self.last_revenue >= self.last_spend,
                money,
            ),
            Milestone(
                "break_even",
                "total revenue caught up with total spending",
                lambda: self.total_spend > 0 and self.total_revenue >= self.total_spend,
                money,
            ),
            Milestone(
                "first_liquid_water",
                "liquid water appeared at the surface (where it is warmest first)",
                lambda: world.liquid_water_kg > 0.0,
                water,
            ),
            Milestone(
                "armstrong_limit",
                f"surface pressure rose above the Armstrong limit ({ARMSTRONG_LIMIT_KPA} kPa): "
                "water no longer boils at body temperature, so no pressure suit is needed",
                lambda: world.atmosphere.pressure_kpa() >= ARMSTRONG_LIMIT_KPA,
                pressure,
            ),
            Milestone(
                "liquid_water_stable",
                f"mean temperature above {TRIPLE_POINT_K} K at a pressure above water's triple "
                f"point ({TRIPLE_POINT_KPA} kPa): liquid water is stable on the surface",
                lambda: (
                    world.temperature_k >= TRIPLE_POINT_K
                    and world.atmosphere.pressure_kpa() >= TRIPLE_POINT_KPA
                    and world.water_ice_kg + world.liquid_water_kg > 0.0
                ),
                water,
            ),
            Milestone(
                "oxygen_threshold",
                f"oxygen partial pressure reached {BREATHABLE_O2_KPA} kPa, the lower end of the "
                "breathable range",
                lambda: world.atmosphere.partial_kpa("O2") >= BREATHABLE_O2_KPA,
                oxygen,
            ),
        ]

    # --- state and summary ---------------------------------------------------------------------

    def environment(self) -> Environment:
        world = self.world
        atmosphere = world.atmosphere
        pressure = atmosphere.pressure_kpa()
        composition = atmosphere.composition_pct()
        return Environment(
            temperature_k=quantize(world.temperature_k),
            pressure_kpa=quantize(pressure),
            composition_pct={gas: quantize(composition[gas], 4) for gas in sorted(composition)},
            liquid_water_kg=quantize(world.liquid_water_kg),
            water_ice_kg=quantize(world.water_ice_kg),
            biomass_kg=quantize(world.biomass_kg),
            habitability=quantize(
                habitability(
                    world.temperature_k,
                    pressure,
                    atmosphere.partial_kpa("O2"),
                    world.liquid_water_kg,
                    world.biomass_kg,
                    world.area_m2,
                )
            ),
        )

    def summary(self) -> RunSummary:
        """What the run amounts to; SimulationDiverged (field ``summary...``) if not finite."""
        summary = RunSummary(
            years=self.year,
            success_metrics=self._metrics(),
            resource_consumption={
                name: _publish(name, self.consumption[name]) for name in sorted(self.consumption)
            },
            start_state=self._start,
            end_state=self._current,
            key_events=list(self._events),
            total_spend_cents=self.total_spend,
            total_revenue_cents=self.total_revenue,
            final_balance_cents=self.balance,
        )
        if b"null" in msgspec.json.encode(summary):
            self._check_finite(msgspec.to_builtins(summary), "summary")
        return summary

    def _metrics(self) -> SuccessMetrics:
        duration = max(1, self.year)
        goals = self.model.goals
        timeline = total(
            [
                1.0 - 0.5 * (self._reached[goal] - 1) / duration
                for goal in goals
                if goal in self._reached
            ]
        )
        timeline = timeline / len(goals) if goals else 0.0
        resource = (
            self.valued_output / self.valued_potential if self.valued_potential > 0.0 else 0.0
        )
        gain = max(0.0, self._current.habitability - self._start.habitability)
        value = self.total_revenue + gain * HABITABILITY_VALUE_CENTS
        cost = value / self.total_spend if self.total_spend > 0 else float(value > 0.0)
        return SuccessMetrics(
            habitability_score=quantize(clamp(self._current.habitability, 0.0, 1.0)),
            timeline_efficiency=quantize(clamp(timeline, 0.0, 1.0)),
            resource_efficiency=quantize(clamp(resource, 0.0, 1.0)),
            cost_efficiency=quantize(clamp(cost, 0.0, 1.0)),
        )


def _combine(damage: float, share: float) -> float:
    """Two losses in one year: what survives both (the second alone when there is no first,
    exactly, so runs without scheduled hazards keep their results)."""
    return share if damage == 0.0 else 1.0 - (1.0 - damage) * (1.0 - share)


def _arithmetic(error: ArithmeticError | ValueError) -> str:
    return f"{type(error).__name__}: {error}"


def _publish(name: str, value: float | int) -> float | int:
    """A summed quantity as published: money as integer cents, the rest quantized."""
    if is_money(name):
        if not isinstance(value, int):
            raise TypeError(f"resource_consumption.{name} must be integer cents")
        return value
    return quantize(value)


def _numbers(holder: object) -> dict[str, Any]:
    """The numeric attributes (and dicts of numbers) of an object of the engine's state."""
    found: dict[str, Any] = {}
    for name, value in sorted(vars(holder).items()):
        if isinstance(value, float | int) and not isinstance(value, bool):
            found[name] = value
        elif isinstance(value, dict):
            found[name] = {key: v for key, v in sorted(value.items()) if type(v) is float}
    return found


def gcc(cents: int) -> str:
    """Integer cents as GCC with two decimals, with integers only."""
    whole, part = divmod(abs(cents), 100)
    return f"{'-' if cents < 0 else ''}{whole:,}.{part:02d} GCC"


def _split(cents: int, weights: dict[str, float]) -> dict[str, int]:
    """Split integer cents by weights (in name order); the rounding remainder goes to the
    first project with a weight. Nothing is split if every weight is zero."""
    names = [name for name in sorted(weights) if weights[name] > 0.0]
    if cents <= 0 or not names:
        return {}
    weight_total = total([weights[name] for name in names])
    parts = {
        name: cents
        * to_cents(weights[name] / weight_total * 1_000_000, f"shares.{name}")
        // 1_000_000
        for name in names
    }
    given = 0
    for name in names:
        given += parts[name]
    parts[names[0]] += cents - given
    return parts
