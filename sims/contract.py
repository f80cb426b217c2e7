"""The simulator contract: what a user implements to train agents on their own simulator.

A simulator speaks in physical units: ``reset(config)`` and ``step(action)`` return a dict of
named floats (the states), and actions arrive as a dict of named floats. A :class:`SimSpec`
says which states the agent observes and how to normalise them, which actions it takes and
their physical ranges, the reward, any extra termination, and which states to log. The
Gymnasium adapter (:mod:`sims.adapter`) turns (simulator, spec, lesson) into an environment.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

States = dict[str, float]
Action = dict[str, float]


class SimError(ValueError):
    """A user-facing problem with a simulator, its spec or its lessons.

    The message names the file, key or value and says how to fix it.
    """


class SimulatorFault(RuntimeError):
    """The simulator itself misbehaved at run time (raised, or returned NaN/inf)."""


@dataclass(frozen=True)
class Range:
    """A closed interval in physical units."""

    low: float
    high: float
    unit: str = ""
    saturates: bool = False
    """Values beyond the range are expected and clipped on purpose: a narrow range around a
    set point keeps small errors visible to the policy. check-sim does not warn about it."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise SimError(
                f"range [{self.low}, {self.high}] is invalid: low and high must be finite "
                "with low < high"
            )

    def normalise(self, value: float) -> float:
        """Map ``value`` to [-1, 1], clipping what lies outside the range."""
        scaled = 2.0 * (value - self.low) / (self.high - self.low) - 1.0
        return min(1.0, max(-1.0, scaled))

    def denormalise(self, scaled: float) -> float:
        """Map ``scaled`` in [-1, 1] (clipped first) to the physical range."""
        scaled = min(1.0, max(-1.0, scaled))
        return self.low + (scaled + 1.0) * 0.5 * (self.high - self.low)

    def clip(self, value: float) -> float:
        return min(self.high, max(self.low, value))


class Simulator(abc.ABC):
    """Base class for a simulator.

    Subclasses implement :meth:`reset` and :meth:`step` and keep :attr:`terminated` and
    :attr:`truncated` current. ``PARAMETERS`` names every scenario parameter the simulator
    understands, with its default; lesson files may only name these.

    Randomness: the adapter sets :attr:`np_random` to the environment's seeded generator
    before every reset. Draw every random number from it, never from ``random`` or
    ``np.random``, so that seeded runs repeat exactly.
    """

    PARAMETERS: Mapping[str, float] = {}

    np_random: np.random.Generator
    terminated: bool = False
    truncated: bool = False

    def __init__(self) -> None:
        self.np_random = np.random.default_rng()

    @abc.abstractmethod
    def reset(self, config: Mapping[str, float]) -> States:
        """Start an episode for the scenario ``config``; return the initial states."""

    @abc.abstractmethod
    def step(self, action: Mapping[str, float]) -> States:
        """Advance one control step with ``action`` (physical units); return the states."""


class BatchSimulator(abc.ABC):
    """Optional second form of a simulator: ``n`` scenarios stepped together, arrays in and
    arrays out, where a model can be written over arrays of states (NumPy).

    Give it as ``SimSpec(batch_simulator=MyBatch, simulator=MySim)``. Each sub-env keeps its
    own scenario, reset and termination: :meth:`reset` starts one of them, :meth:`step`
    advances every sub-env marked ``active`` (the others are resetting this step) and keeps
    :attr:`terminated` and :attr:`truncated` current for each. It must give the same states
    as ``simulator``, step for step (``invoke check-sim`` compares them); env runners then
    step it in place of ``n`` scalar simulators (:mod:`sims.batch`), and everything else
    (assessment, the baseline, serving) uses the scalar form. Draw sub-env ``i``'s random
    numbers from ``np_random[i]``, as the scalar form draws from its own ``np_random``.
    """

    PARAMETERS: Mapping[str, float] = {}

    def __init__(self, n: int) -> None:
        self.n = n
        self.np_random: list[np.random.Generator] = [np.random.default_rng() for _ in range(n)]
        self.terminated = np.zeros(n, dtype=bool)
        self.truncated = np.zeros(n, dtype=bool)

    @abc.abstractmethod
    def reset(self, index: int, config: Mapping[str, float]) -> States:
        """Start sub-env ``index``'s episode for the scenario ``config``; its states."""

    @abc.abstractmethod
    def step(self, action: Mapping[str, np.ndarray], active: np.ndarray) -> dict[str, np.ndarray]:
        """Advance the sub-envs where ``active`` (shape ``(n,)``) with ``action`` (physical
        units, one array of shape ``(n,)`` per action name); every sub-env's states, one
        array per name (the inactive ones' entries are not read)."""


@runtime_checkable
class Policy(Protocol):
    """A controller that acts on physical states: baselines and trained agents alike."""

    def reset(self) -> None:
        """Forget any internal state (integrators, filters) before an episode."""

    def act(self, states: Mapping[str, float]) -> Action:
        """Return the action, in physical units, for ``states``."""


RewardFn = Callable[[Mapping[str, float], Mapping[str, float]], float]
TerminalFn = Callable[[Mapping[str, float]], bool]
KpiFn = Callable[
    [Sequence[Mapping[str, float]], Sequence[Mapping[str, float]], bool], dict[str, float]
]
"""``kpis(states, actions, terminated)`` for one episode: states from reset on, one action per
step. Names ending ``_count`` are summed over scenarios, names starting ``max_`` maxed, the
rest averaged."""


@dataclass(frozen=True)
class SimSpec:
    """How an agent sees and drives a simulator.

    ``reward(states, action)`` and ``terminal(states)`` receive the states after the step
    and the action (physical units). They must be module-level functions: Ray pickles the
    environment to ship it to its workers.
    """

    name: str
    """Short name, e.g. ``cstr`` (the module ``sims.cstr``); shown in titles and messages."""
    env_id: str
    """Gymnasium id, e.g. ``aml_rl/CSTR-v0``."""
    simulator: Callable[[], Simulator]
    """The simulator, one scenario at a time."""
    observations: Mapping[str, Range]
    """Observed states and their normalisation ranges (mapped to [-1, 1], clipped)."""
    actions: Mapping[str, Range]
    """Actions and their physical ranges (mapped from [-1, 1]; outside values are clipped)."""
    reward: RewardFn
    lessons: Path
    """YAML file of lessons (scenario distributions), in curriculum order."""
    terminal: TerminalFn | None = None
    """Extra termination on top of the simulator's own ``terminated``."""
    log_states: Sequence[str] = ()
    """States written to trajectory logs, in physical units."""
    baseline: Callable[[], Policy] | None = None
    """The classical controller that trained agents are compared with."""
    scenarios: Path | None = None
    """Default assessment scenario set (YAML list of scenario parameters and seeds)."""
    kpis: KpiFn | None = None
    """Key performance indicators of one episode, for assessment tables."""
    kpi_units: Mapping[str, str] = field(default_factory=dict)
    """Units of the KPIs, by name (``{"ca_rms": "kmol/m3"}``), for tables and summaries."""
    units: Mapping[str, str] = field(default_factory=dict)
    """Units of logged states that are not observed (observed ones take their Range's)."""
    targets: Mapping[str, str] = field(default_factory=dict)
    """Set points by state (``{"Ca": "Cref"}``): the viewer draws each beside its state."""
    kpi_higher_better: frozenset[str] = frozenset()
    """KPIs that are better higher (the return always is); the others are better lower."""
    primary_kpi: str = "return"
    """The KPI that decides whether the agent beats the baseline (``jobs.verdict``)."""
    constraint_kpis: frozenset[str] = frozenset()
    """KPIs counting violations (runaways, limits crossed): an agent that beats the
    baseline on the primary KPI still fails where it has more of these than the baseline."""
    drawing: Path | None = None
    """A JavaScript file defining ``draw(states, ranges)`` that returns an SVG string of the
    simulator at one step, for the viewer's episode player (gauges without one)."""
    step_time: float | None = None
    """Model time per control step, in ``time_unit`` (the CSTR's 0.5 h): the viewer's time
    axes are in it; None: in steps."""
    time_unit: str = ""
    limits: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)
    """Constraint limits by state, ``(low, high)``, either None (``{"T": (None, 400.0)}``,
    the runaway temperature): the viewer draws them beside the state."""
    batch_simulator: Callable[[int], BatchSimulator] | None = None
    """The same simulator over ``n`` scenarios at once (:class:`BatchSimulator`), which env
    runners step instead of ``n`` copies of ``simulator`` (``env_runners.batched``)."""
    source: str = field(default="", compare=False)
    """Where the spec is defined, for error messages."""

    def check_states(self, states: Mapping[str, float]) -> None:
        """Raise :class:`SimError` if the spec names a state the simulator does not return."""
        needed = {**dict.fromkeys(self.observations), **dict.fromkeys(self.log_states)}
        missing = [name for name in needed if name not in states]
        if missing:
            raise SimError(
                f"{self.source or self.name}: the spec names state(s) {', '.join(missing)} "
                f"but the simulator returns only {', '.join(states)}; fix SimSpec.observations "
                "/ log_states or return those states from the simulator"
            )


@dataclass(frozen=True)
class GymAssessment:
    """What a plain ``gymnasium.Env`` may add for assessment, as a module-level
    ``ASSESSMENT`` beside the class (``mypkg.env:MyEnv``): the baseline it is compared with
    and the KPIs, which a :class:`SimSpec` would otherwise carry. The baseline acts on the
    environment's named states (``room_error`` for the key ``error`` in the Dict ``room``)
    and returns its named actions (``a0`` for a single Discrete action)."""

    baseline: Callable[[], Policy] | None = None
    kpis: KpiFn | None = None
    kpi_units: Mapping[str, str] = field(default_factory=dict)
    kpi_higher_better: frozenset[str] = frozenset()
    primary_kpi: str = "return"
    constraint_kpis: frozenset[str] = frozenset()
