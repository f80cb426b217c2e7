"""One Gymnasium adapter for every simulator: (simulator, spec, lesson) -> ``gymnasium.Env``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from sims.contract import SimError, SimSpec, SimulatorFault, States
from sims.lessons import LessonPlan, load_lessons


class SimEnv(gym.Env):
    """A simulator seen through its spec as a Gymnasium environment.

    - Observation: ``Box(-1, 1, (len(spec.observations),), float32)``; each observed state is
      mapped from its normalisation range to [-1, 1] and clipped.
    - Action: ``Box(-1, 1, (len(spec.actions),), float32)``; each component is clipped to
      [-1, 1] and mapped to its physical range. An action outside [-1, 1] is therefore
      clipped to the nearest edge of the physical range, never rejected.
    - Scenario: sampled from the current lesson with ``self.np_random`` on every reset;
      ``reset(options={"scenario": {...}})`` overrides parameters, ``options={"lesson": k}``
      switches lesson (by position or name) from then on.
    - ``info``: ``states`` (raw, physical units), ``action`` (physical, after clipping),
      ``scenario`` and ``lesson``.
    - A simulator that raises, or returns a non-finite state, raises :class:`SimulatorFault`
      naming the state, step and scenario.
    """

    metadata = {"render_modes": []}  # noqa: RUF012 - Gymnasium's convention

    def __init__(
        self, spec: SimSpec, *, lessons: Path | str | None = None, lesson: int | str = 0
    ) -> None:
        """Usually made by a handle: ``sims.registry.resolve("cstr").make_env(lesson=1)``."""
        self.spec_ = spec
        self.sim_name = spec.name
        self.simulator = spec.simulator()
        self.plan: LessonPlan = load_lessons(
            Path(lessons) if lessons else spec.lessons, self.simulator.PARAMETERS, sim=spec.name
        )
        self.lesson = self.plan.lesson(lesson)

        self._obs_names = list(self.spec_.observations)
        self._obs_ranges = list(self.spec_.observations.values())
        self._act_names = list(self.spec_.actions)
        self._act_ranges = list(self.spec_.actions.values())
        self.observation_space = gym.spaces.Box(
            -1.0, 1.0, shape=(len(self._obs_names),), dtype=np.float32
        )
        self.action_space = gym.spaces.Box(
            -1.0, 1.0, shape=(len(self._act_names),), dtype=np.float32
        )
        self.scenario: dict[str, float] = {}
        self.states: States = {}
        self._steps = 0
        self._checked_spec = False
        self._needed = list(dict.fromkeys([*self.spec_.observations, *self.spec_.log_states]))
        self.fault: dict[str, Any] | None = None
        """The last simulator failure (step, scenario, lesson, error), for trajectory logs."""

    # -- Gymnasium API -------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        if "lesson" in options:
            self.lesson = self.plan.lesson(options["lesson"])
        scenario = {**self.simulator.PARAMETERS, **self.lesson.sample(self.np_random)}
        overrides = dict(options.get("scenario") or {})
        unknown = [key for key in overrides if key not in self.simulator.PARAMETERS]
        if unknown:
            raise SimError(
                f"reset(options={{'scenario': ...}}): unknown scenario parameter(s) "
                f"{', '.join(unknown)} for simulator {self.sim_name}; known parameters: "
                f"{', '.join(self.simulator.PARAMETERS)}"
            )
        scenario.update({key: float(value) for key, value in overrides.items()})
        self.scenario = scenario
        self._steps = 0
        self.simulator.np_random = self.np_random
        states = self._call("reset", self.simulator.reset, dict(scenario))
        if not self._checked_spec:
            self.spec_.check_states(states)
            self._checked_spec = True
        self.states = states
        return self._observe(states), self._info(states, {})

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        physical = self.to_physical(action)
        states = self._call("step", self.simulator.step, physical)
        missing = [name for name in self._needed if name not in states]
        if missing:  # reset returned them (the spec check): step must too
            raise self._fault(
                f"{self.sim_name}.step() at step {self._steps} returned no {', '.join(missing)} "
                f"(it returned {', '.join(states) or 'nothing'}); return every state the "
                "SimSpec observes or logs, under the same names as reset() does"
            )
        self._steps += 1
        self.states = states
        reward = float(self.spec_.reward(states, physical))
        if not math.isfinite(reward):
            raise SimulatorFault(
                f"{self.sim_name}: the spec's reward returned {reward} at step {self._steps} "
                f"(states {states}); make the reward finite for every state"
            )
        terminated = bool(self.simulator.terminated) or bool(
            self.spec_.terminal is not None and self.spec_.terminal(states)
        )
        truncated = bool(self.simulator.truncated) and not terminated
        return self._observe(states), reward, terminated, truncated, self._info(states, physical)

    def send_step(self, action: np.ndarray) -> None:
        """Send this step ahead to a process simulator (:class:`sims.process.PipelinedVectorEnv`);
        :meth:`step` with the same action then reads its answer."""
        send = getattr(self.simulator, "send_step", None)
        if send is not None:
            send(self.to_physical(action))

    def close(self) -> None:
        """End the simulator's process, for simulators that run as one (:mod:`sims.process`)."""
        close = getattr(self.simulator, "close", None)
        if callable(close):
            close()

    # -- helpers -------------------------------------------------------------------------
    def to_physical(self, action: np.ndarray) -> dict[str, float]:
        """Map an action in [-1, 1]^n (clipped first) to physical units."""
        flat = np.asarray(action, dtype=np.float64).reshape(-1)
        if flat.shape[0] != len(self._act_names):
            raise SimError(
                f"{self.sim_name}: action has {flat.shape[0]} component(s); the spec declares "
                f"{len(self._act_names)} ({', '.join(self._act_names)})"
            )
        return {
            name: rng.denormalise(float(value))
            for name, rng, value in zip(self._act_names, self._act_ranges, flat, strict=True)
        }

    def from_physical(self, action: Mapping[str, float]) -> np.ndarray:
        """The [-1, 1]^n action that maps to ``action`` (physical units; clipped to range)."""
        return np.array(
            [
                rng.normalise(action[name])
                for name, rng in zip(self._act_names, self._act_ranges, strict=True)
            ],
            dtype=np.float32,
        )

    def _observe(self, states: Mapping[str, float]) -> np.ndarray:
        return np.array(
            [
                rng.normalise(states[name])
                for name, rng in zip(self._obs_names, self._obs_ranges, strict=True)
            ],
            dtype=np.float32,
        )

    def _info(self, states: States, physical: Mapping[str, float]) -> dict[str, Any]:
        return {
            "states": dict(states),
            "action": dict(physical),
            "scenario": dict(self.scenario),
            "lesson": self.lesson.name,
        }

    def _call(self, what: str, fn: Any, arg: Any) -> States:
        where = f"{self.sim_name}.{what}() at step {self._steps} of scenario {self.scenario}"
        try:
            states = fn(arg)
        except SimError:
            raise
        except Exception as exc:
            raise self._fault(f"{where} raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(states, Mapping):
            raise self._fault(
                f"{where} returned {type(states).__name__}; it must return a dict of named floats"
            )
        out: States = {}
        for name, value in states.items():
            value = float(value)
            if not math.isfinite(value):
                raise self._fault(
                    f"{where} returned {value} for state {name!r}; the simulator must return "
                    "finite values (check its model and the action that led here)"
                )
            out[name] = value
        return out

    def _fault(self, message: str) -> SimulatorFault:
        self.fault = {
            "step": self._steps,
            "scenario": dict(self.scenario),
            "lesson": self.lesson.name,
            "error": message,
        }
        return SimulatorFault(message)
