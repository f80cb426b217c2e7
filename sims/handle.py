"""The simulator handle: what every layer asks about one simulator, answered in one place.

:func:`sims.registry.resolve` turns a name into a :class:`SimHandle` once; check-sim, training,
the callbacks, assessment, benchmarks and submission take the handle and never ask again
whether a name is one of our simulators or a plain Gymnasium environment.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

from sims.adapter import SimEnv
from sims.contract import GymAssessment, KpiFn, Policy, Range, SimError, SimSpec
from sims.spaces import FlatEnv, Leaf


@dataclass(frozen=True)
class _Spaces:
    """What one environment says of its spaces (made once per handle)."""

    observations: list[Leaf]
    actions: list[Leaf]
    shape: tuple[int, ...]
    action_space: gym.Space
    flattens_observation: bool
    own_observation_space: gym.Space
    """The environment's own observation space, before any flattening."""


@dataclass(frozen=True)
class SimHandle:
    """One resolved simulator: a :class:`SimSpec`-driven simulator, or a plain Gymnasium env.

    For a plain Gymnasium environment the spec is derived from its spaces: state and action
    names from Dict keys or indices, ranges from the bounds, no units, no scenarios, no
    baseline and no KPIs beyond the return.
    """

    name: str
    """The name as written (``cstr``, ``CartPole-v1``, ``mypkg.env:Env-v0``); configs,
    checkpoints and env runners carry it, and each process resolves it again."""
    spec: SimSpec | None = None
    """The simulator's spec; None for a plain Gymnasium environment."""
    gym_factory: Callable[[], gym.Env] | None = field(default=None, compare=False)
    """How to make a plain Gymnasium environment (``gym.make(id)`` or the class)."""
    extras: GymAssessment | None = field(default=None, compare=False)
    """A plain environment's baseline and KPIs (its module's ``ASSESSMENT``), if any."""

    @property
    def _assessment(self) -> SimSpec | GymAssessment | None:
        return self.spec if self.spec is not None else self.extras

    @property
    def kind(self) -> str:
        return "simulator" if self.spec is not None else "gymnasium"

    @property
    def label(self) -> str:
        """A short name for titles and messages."""
        return self.spec.name if self.spec is not None else self.name

    # -- environments ----------------------------------------------------------------------
    def make_env(self, *, lessons: Path | str | None = None, lesson: int | str = 0) -> gym.Env:
        """The environment the policy trains on: a :class:`SimEnv`, or a :class:`FlatEnv`."""
        if self.spec is not None:
            return SimEnv(self.spec, lessons=lessons, lesson=lesson)
        if lessons is not None:
            raise SimError(
                f"lessons {lessons}: {self.name} is a plain Gymnasium environment, which has no "
                "scenario parameters; drop the lessons setting"
            )
        assert self.gym_factory is not None
        return FlatEnv(self.gym_factory())

    def env_config(self, *, lessons: Path | None = None, lesson: int | str = 0) -> dict[str, Any]:
        """What :class:`sims.registry.RLlibEnv` receives on every env runner."""
        return {
            "sim": self.name,
            "lessons": str(Path(lessons).resolve()) if lessons else None,
            "lesson": lesson,
        }

    def reset_options(self, parameters: Mapping[str, float]) -> dict[str, Any] | None:
        """``reset(options=...)`` that sets a scenario (nothing for a plain environment)."""
        return {"scenario": dict(parameters)} if self.spec is not None else None

    @functools.cached_property
    def _spaces(self) -> _Spaces:
        env = self.make_env()
        try:
            if isinstance(env, FlatEnv):
                return _Spaces(
                    env.obs_leaves,
                    env.action_leaves,
                    env.observation_space.shape,
                    env.action_space,
                    env.flattens_observation,
                    env.unwrapped.observation_space,
                )
            space = env.observation_space
            return _Spaces([], [], space.shape, env.action_space, False, space)
        finally:
            env.close()

    @property
    def action_space(self) -> gym.Space:
        """The policy's action space."""
        return self._spaces.action_space

    @property
    def own_observation_space(self) -> gym.Space:
        """The environment's own observation space (a plain env's Dict, before flattening)."""
        return self._spaces.own_observation_space

    @property
    def flattens_observation(self) -> bool:
        """Whether the policy sees a plain environment's Dict or Tuple observation flattened."""
        return self._spaces.flattens_observation

    @property
    def observation_shape(self) -> list[int]:
        """The shape of the observation the policy sees."""
        return list(self._spaces.shape)

    # -- what states and actions are called, and their units -------------------------------
    @functools.cached_property
    def observations(self) -> dict[str, Range | None]:
        """Observed states and their ranges (None where a Gymnasium bound is infinite)."""
        if self.spec is not None:
            return dict(self.spec.observations)
        return {leaf.name: leaf.range for leaf in self._spaces.observations}

    @functools.cached_property
    def actions(self) -> dict[str, Range | None]:
        if self.spec is not None:
            return dict(self.spec.actions)
        return {leaf.name: leaf.range for leaf in self._spaces.actions}

    @property
    def state_units(self) -> dict[str, str]:
        """Units of the states that have one (observed, or logged only)."""
        if self.spec is None:
            return {}
        out = {name: rng.unit for name, rng in self.spec.observations.items()}
        out.update(self.spec.units)
        return {name: unit for name, unit in out.items() if unit}

    @property
    def action_units(self) -> dict[str, str]:
        if self.spec is None:
            return {}
        return {name: rng.unit for name, rng in self.spec.actions.items() if rng.unit}

    @property
    def runs_as_process(self) -> bool:
        """Whether its simulator is a process (:mod:`sims.process`)."""
        from sims.process import ProcessSim

        return self.spec is not None and isinstance(self.spec.simulator, ProcessSim)

    @property
    def kpi_units(self) -> dict[str, str]:
        return dict(self._assessment.kpi_units) if self._assessment is not None else {}

    # -- scenarios, baseline, KPIs -----------------------------------------------------------
    @property
    def parameters(self) -> Mapping[str, float]:
        """Scenario parameters and their defaults (none for a plain environment)."""
        return self.spec.simulator.PARAMETERS if self.spec is not None else {}

    @property
    def scenarios(self) -> Path | None:
        """The default assessment scenario set, if the simulator has one."""
        return self.spec.scenarios if self.spec is not None else None

    @property
    def baseline(self) -> Callable[[], Policy] | None:
        return self._assessment.baseline if self._assessment is not None else None

    @property
    def kpis(self) -> KpiFn | None:
        return self._assessment.kpis if self._assessment is not None else None

    # -- what the viewer shows --------------------------------------------------------------
    @property
    def log_states(self) -> list[str]:
        """The states worth plotting: the spec's logged states, else every observation."""
        if self.spec is not None and self.spec.log_states:
            return list(self.spec.log_states)
        return list(self.observations)

    @property
    def targets(self) -> dict[str, str]:
        return dict(self.spec.targets) if self.spec is not None else {}

    @property
    def primary_kpi(self) -> str:
        """The KPI the verdict is decided on: the spec's, or the return."""
        return self._assessment.primary_kpi if self._assessment is not None else "return"

    @property
    def constraint_kpis(self) -> list[str]:
        found = self._assessment
        return sorted(found.constraint_kpis) if found is not None else []

    def higher_is_better(self, kpi: str) -> bool:
        found = self._assessment
        return kpi == "return" or (found is not None and kpi in found.kpi_higher_better)

    @property
    def step_time(self) -> tuple[float, str] | None:
        """Model time per control step and its unit, if the spec says."""
        if self.spec is None or self.spec.step_time is None:
            return None
        return float(self.spec.step_time), self.spec.time_unit

    @property
    def limits(self) -> dict[str, tuple[float | None, float | None]]:
        return dict(self.spec.limits) if self.spec is not None else {}

    @property
    def drawing(self) -> str | None:
        """The JavaScript source of the simulator's drawing, if it has one."""
        if self.spec is None or self.spec.drawing is None:
            return None
        return Path(self.spec.drawing).read_text()
