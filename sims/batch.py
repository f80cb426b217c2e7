"""Batched simulators (:class:`sims.contract.BatchSimulator`) behind the scalar path.

Each sub-env of :class:`BatchVectorEnv` is the usual environment (:class:`sims.registry.RLlibEnv`
over :class:`sims.adapter.SimEnv`) whose simulator is a :class:`Slot`: one index of a batch
simulator shared by all of them. Before Gymnasium's synchronous vector steps its sub-envs one
by one, the batch advances every one of them in a single call, and each slot's ``step`` then
hands its sub-env its share. Everything else (actions to physical units, the reward,
termination, autoreset, infos, faults, reward scaling) is the scalar path's own code, so the
results are the scalar simulator's, step for step, whenever the batch simulator's are.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from sims.contract import BatchSimulator, Simulator, SimulatorFault, States
from sims.process import stepping
from sims.vector import WholeInfoVectorEnv


class Slot(Simulator):
    """Sub-env ``index`` of ``batch`` as a scalar :class:`Simulator`. Stepped alone (outside
    :class:`BatchVectorEnv`), it advances its own index of the batch and no other."""

    def __init__(self, batch: BatchSimulator, index: int) -> None:
        self.batch = batch
        self.index = index
        self.PARAMETERS = batch.PARAMETERS
        self.ready: States | None = None
        """This step's states, set by the vector env's batch step."""

    @property
    def np_random(self) -> np.random.Generator:  # type: ignore[override]
        return self.batch.np_random[self.index]

    @np_random.setter
    def np_random(self, generator: np.random.Generator) -> None:
        self.batch.np_random[self.index] = generator

    @property
    def terminated(self) -> bool:  # type: ignore[override]
        return bool(self.batch.terminated[self.index])

    @property
    def truncated(self) -> bool:  # type: ignore[override]
        return bool(self.batch.truncated[self.index])

    def reset(self, config: Mapping[str, float]) -> States:
        self.ready = None
        return dict(self.batch.reset(self.index, config))

    def step(self, action: Mapping[str, float]) -> States:
        if self.ready is None:
            active = np.zeros(self.batch.n, dtype=bool)
            active[self.index] = True
            arrays = {name: np.zeros(self.batch.n) for name in action}
            for name, value in action.items():
                arrays[name][self.index] = value
            share(self.batch, [self], arrays, active)
        states, self.ready = self.ready, None
        assert states is not None
        return states


def share(
    batch: BatchSimulator, slots: list[Slot], action: Mapping[str, np.ndarray], active: np.ndarray
) -> None:
    """One batch step; each active slot's states set ready for its sub-env's ``step``."""
    try:
        states = batch.step(action, active)
    except Exception as exc:  # a user's model may raise anything
        raise SimulatorFault(
            f"{type(batch).__name__}.step() raised {type(exc).__name__}: {exc}"
        ) from exc
    for slot in slots:
        if active[slot.index]:
            slot.ready = {name: float(values[slot.index]) for name, values in states.items()}


class BatchVectorEnv(WholeInfoVectorEnv):
    """Gymnasium's synchronous vector whose sub-envs share one batch simulator (made by the
    spec's ``batch_simulator``); see the module's docstring. Infos are handed on whole
    (:mod:`sims.vector`)."""

    def __init__(self, env_fns: list[Callable[[], gym.Env]], **kwargs: Any) -> None:
        super().__init__(env_fns, **kwargs)
        spec = self.envs[0].unwrapped.spec_
        assert spec.batch_simulator is not None
        self.batch = spec.batch_simulator(len(self.envs))
        self.slots = []
        for index, env in enumerate(self.envs):
            slot = Slot(self.batch, index)
            env.unwrapped.simulator = slot
            self.slots.append(slot)
        self._actions = list(spec.actions)

    def step(self, actions: Any) -> Any:
        active = np.zeros(len(self.envs), dtype=bool)
        physical = {name: np.zeros(len(self.envs)) for name in self._actions}
        for i, action, env in stepping(self, actions):
            active[i] = True
            for name, value in env.unwrapped.to_physical(action).items():
                physical[name][i] = value
        try:
            share(self.batch, self.slots, physical, active)
        except SimulatorFault as exc:  # recorded as the scalar path records one (SimEnv.fault)
            raise self.envs[int(np.argmax(active))].unwrapped._fault(str(exc)) from exc
        return super().step(actions)


@dataclass
class Comparison:
    """A batch simulator against its scalar form over the same seeded random actions."""

    steps: int
    episodes: int
    mismatch: str | None
    """Where they first differ, or None."""
    scalar_s: float
    batch_s: float
    """Wall seconds of the two vector envs' steps."""


def compare(
    make: Callable[[], gym.Env], *, n: int = 4, steps: int = 300, seed: int = 0
) -> Comparison:
    """Step ``n`` scalar environments and the same ``n`` over one batch simulator with the
    same seeded random actions, through resets and episode ends."""
    scalar = WholeInfoVectorEnv([make] * n)
    batched = BatchVectorEnv([make] * n)
    try:
        a, _ = scalar.reset(seed=seed)
        b, _ = batched.reset(seed=seed)
        if not np.array_equal(a, b):
            return Comparison(0, 0, "at reset: the observations differ", 0.0, 0.0)
        scalar.action_space.seed(seed)
        times = [0.0, 0.0]
        episodes = 0
        for step in range(steps):
            actions = scalar.action_space.sample()
            outs = []
            for k, env in enumerate((scalar, batched)):
                start = time.perf_counter()
                outs.append(env.step(actions))
                times[k] += time.perf_counter() - start
            (obs_a, rew_a, term_a, trunc_a, info_a), (obs_b, rew_b, term_b, trunc_b, info_b) = outs
            for what, x, y in (
                ("terminated", term_a, term_b),
                ("truncated", trunc_a, trunc_b),
                ("rewards", rew_a, rew_b),
                ("observations", obs_a, obs_b),
            ):
                if not np.array_equal(x, y):
                    unequal = (np.asarray(x) != np.asarray(y)).reshape(n, -1)
                    env = int(np.flatnonzero(unequal.any(axis=1))[0])
                    ours, theirs = (info.get("states", [{}] * n)[env] for info in (info_a, info_b))
                    differ = [
                        f"{name} {ours[name]!r} vs {theirs.get(name)!r}"
                        for name in ours
                        if ours[name] != theirs.get(name)
                    ]
                    return Comparison(
                        step, episodes,
                        f"sub-env {env}, step {step}: the {what} differ"
                        + (f" (states {', '.join(differ)})" if differ else ""),
                        *times,
                    )  # fmt: skip
            episodes += int(np.sum(term_a | trunc_a))
        return Comparison(steps, episodes, None, *times)
    finally:
        scalar.close()
        batched.close()
