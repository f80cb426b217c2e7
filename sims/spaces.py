"""Any standard Gymnasium space, named and flattened: what the policy sees, what logs call it.

A plain Gymnasium environment may use Box, Discrete, MultiDiscrete, MultiBinary, Dict and
Tuple spaces, nested. RLlib's default models want a flat observation and a Box, Discrete or
MultiDiscrete action, so :class:`FlatEnv` shows the policy:

- observations: a Box as it is; any other space flattened to a float32 Box with
  ``gymnasium.spaces.flatten`` (Discrete becomes one-hot);
- actions: Box, Discrete and MultiDiscrete as they are; MultiBinary as MultiDiscrete of 2s;
  a Dict or Tuple of continuous leaves as one Box, of discrete leaves as one MultiDiscrete.
  A Dict or Tuple that mixes the two is refused with a message.

Every scalar of a space has a name: Dict keys joined with ``_`` (``value``, ``pos_0``), or
for a space that is not a Dict, the prefix and the index (``obs0``, ``a0``, ``obs1_2``).
Trajectory columns are ``state_<name>`` and ``action_<name>``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from sims.contract import Range, SimError, SimulatorFault

SUPPORTED = "Box, Discrete, MultiDiscrete, MultiBinary, Dict and Tuple"
_ARRAYS = (gym.spaces.Box, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)


class UnsupportedSpace(SimError):
    """A space that aml-rl cannot name or flatten; the message names it and where it is."""


@dataclass(frozen=True)
class Leaf:
    """One scalar of a space: its name, bounds (None when unbounded) and whether discrete."""

    name: str
    low: float | None
    high: float | None
    discrete: bool
    start: int = 0
    """The smallest value of a discrete scalar (Gymnasium's ``start``)."""

    @property
    def range(self) -> Range | None:
        if self.low is None or self.high is None or not self.low < self.high:
            return None
        return Range(self.low, self.high)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _array_leaves(space: gym.Space) -> Iterator[tuple[float | None, float | None, bool, int]]:
    """(low, high, discrete, start) per element of a Box, MultiDiscrete or MultiBinary."""
    if isinstance(space, gym.spaces.Box):
        discrete = np.issubdtype(space.dtype, np.integer)
        for low, high in zip(space.low.ravel(), space.high.ravel(), strict=True):
            yield _finite(low), _finite(high), bool(discrete), int(low) if discrete else 0
    elif isinstance(space, gym.spaces.MultiDiscrete):
        for n, start in zip(space.nvec.ravel(), space.start.ravel(), strict=True):
            yield float(start), float(start + n - 1), True, int(start)
    else:
        for _ in range(int(np.prod(space.shape))):
            yield 0.0, 1.0, True, 0


def _walk(space: gym.Space, keys: tuple, where: str) -> Iterator[tuple[tuple, int | None, Any]]:
    """(keys, element index or None, (low, high, discrete, start)) for every scalar, in order."""
    if isinstance(space, gym.spaces.Dict):
        for key, sub in space.spaces.items():
            yield from _walk(sub, (*keys, str(key)), f"{where}[{key!r}]")
    elif isinstance(space, gym.spaces.Tuple):
        for i, sub in enumerate(space.spaces):
            yield from _walk(sub, (*keys, i), f"{where}[{i}]")
    elif isinstance(space, gym.spaces.Discrete):
        start = int(space.start)
        yield keys, None, (float(start), float(start + space.n - 1), True, start)
    elif isinstance(space, _ARRAYS):
        elements = list(_array_leaves(space))
        for i, bounds in enumerate(elements):
            yield keys, (i if len(elements) > 1 or not keys else None), bounds
    else:
        raise UnsupportedSpace(
            f"{where} is {space}, which aml-rl cannot train on; use {SUPPORTED} spaces "
            "(wrap the environment to convert it)"
        )


def _name(prefix: str, keys: tuple, index: int | None) -> str:
    parts = [str(k) for k in keys] + ([] if index is None else [str(index)])
    if keys and isinstance(keys[0], str):  # the space is a Dict: its keys are the names
        return "_".join(parts)
    return prefix + "_".join(parts or ["0"])


def leaves(space: gym.Space, prefix: str, where: str = "space") -> list[Leaf]:
    """Every scalar of ``space`` in flattening order, named; raises :class:`UnsupportedSpace`."""
    out = []
    for keys, index, (low, high, discrete, start) in _walk(space, (), where):
        out.append(Leaf(_name(prefix, keys, index), low, high, discrete, start))
    names = [leaf.name for leaf in out]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise UnsupportedSpace(
            f"{where}: the names {', '.join(clashes)} occur twice after flattening "
            "(a key like 'pos_0' beside a key 'pos' with two elements); rename the keys"
        )
    return out


def values(space: gym.Space, x: Any) -> list[float]:
    """The scalars of ``x`` (an element of ``space``) in flattening order, as floats."""
    if isinstance(space, gym.spaces.Dict):
        return [v for key, sub in space.spaces.items() for v in values(sub, x[key])]
    if isinstance(space, gym.spaces.Tuple):
        return [v for sub, item in zip(space.spaces, x, strict=True) for v in values(sub, item)]
    return [float(v) for v in np.ravel(x)]


def build(space: gym.Space, scalars: Iterator[float]) -> Any:
    """An element of ``space`` from its scalars in flattening order (the inverse of values)."""
    if isinstance(space, gym.spaces.Dict):
        return {key: build(sub, scalars) for key, sub in space.spaces.items()}
    if isinstance(space, gym.spaces.Tuple):
        return tuple(build(sub, scalars) for sub in space.spaces)
    if isinstance(space, gym.spaces.Discrete):
        return np.int64(round(next(scalars)))
    flat = [next(scalars) for _ in range(int(np.prod(space.shape)))]
    if isinstance(space, gym.spaces.Box) and not np.issubdtype(space.dtype, np.integer):
        return np.asarray(flat, dtype=space.dtype).reshape(space.shape)
    return np.rint(flat).astype(space.dtype).reshape(space.shape)


def policy_observation_space(space: gym.Space) -> gym.spaces.Box:
    leaves(space, "obs", "observation space")  # refuses what cannot be named
    if isinstance(space, gym.spaces.Box):
        return space
    flat = gym.spaces.flatten_space(space)
    return gym.spaces.Box(flat.low, flat.high, flat.shape, np.float32)


def policy_action_space(space: gym.Space) -> gym.Space:
    found = leaves(space, "a", "action space")
    if isinstance(space, (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete)):
        return space
    if all(leaf.discrete for leaf in found):
        return gym.spaces.MultiDiscrete([int(leaf.high - leaf.low + 1) for leaf in found])
    if not any(leaf.discrete for leaf in found):
        low = [leaf.low if leaf.low is not None else -np.inf for leaf in found]
        high = [leaf.high if leaf.high is not None else np.inf for leaf in found]
        return gym.spaces.Box(np.array(low), np.array(high), dtype=np.float32)
    kinds = ", ".join(f"{leaf.name} ({'discrete' if leaf.discrete else 'continuous'})"
                      for leaf in found)  # fmt: skip
    raise UnsupportedSpace(
        f"action space {space} mixes continuous and discrete actions ({kinds}); RLlib's default "
        "models take one kind: make the discrete ones continuous (round them in the env) or "
        "split the action"
    )


@dataclass(frozen=True)
class ObservationScaling:
    """How a plain environment's continuous observations reach the policy: a bounded one
    mapped from its bounds to [-1, 1] (as a simulator's ranges are), an unbounded one through
    ``symlog(x) = sign(x) log(1 + |x|)`` (DreamerV3's choice for inputs of unknown scale:
    the identity near 0, logarithmic beyond), so a temperature of 300 K or a speed of 0.01
    gives the network inputs of order 1. Stateless: the exported bundle applies the same."""

    low: np.ndarray
    high: np.ndarray
    bounded: np.ndarray

    def apply(self, obs: np.ndarray) -> np.ndarray:
        span = np.where(self.bounded, self.high - self.low, 1.0)
        ranged = np.clip(2.0 * (obs - self.low) / span - 1.0, -1.0, 1.0)
        return np.where(self.bounded, ranged, np.sign(obs) * np.log1p(np.abs(obs))).astype(
            np.float32
        )


def observation_scaling(obs_leaves: list[Leaf], space: gym.spaces.Box) -> ObservationScaling | None:
    """The scaling of a flat continuous observation (None where some leaf is discrete: a
    one-hot or an integer is already of order 1)."""
    if any(leaf.discrete for leaf in obs_leaves) or len(obs_leaves) != int(np.prod(space.shape)):
        return None
    bounded = np.array([leaf.range is not None for leaf in obs_leaves])
    low = np.array([leaf.low if b else 0.0 for leaf, b in zip(obs_leaves, bounded, strict=True)])
    high = np.array([leaf.high if b else 1.0 for leaf, b in zip(obs_leaves, bounded, strict=True)])
    shape = space.shape
    return ObservationScaling(low.reshape(shape), high.reshape(shape), bounded.reshape(shape))


class FlatEnv(gym.Wrapper):
    """A plain Gymnasium environment as the policy sees it, with named states and actions.

    ``info`` carries ``states`` and ``action`` (named scalars of the environment's own
    observation and action), ``scenario`` (empty) and ``lesson`` (None), as :class:`SimEnv`
    does for simulators, so that logging and assessment treat every environment alike.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._obs_space, self._act_space = env.observation_space, env.action_space
        self.obs_leaves = leaves(self._obs_space, "obs", "observation space")
        self.action_leaves = leaves(self._act_space, "a", "action space")
        self.observation_space = policy_observation_space(self._obs_space)
        self.action_space = policy_action_space(self._act_space)
        self._flatten_obs = self.observation_space is not self._obs_space
        self._unflatten_action = self.action_space is not self._act_space
        self._scale = observation_scaling(self.obs_leaves, self.observation_space)
        if self._scale is not None:
            self.observation_space = gym.spaces.Box(
                -np.inf, np.inf, self.observation_space.shape, np.float32
            )

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self._call("reset", seed=seed, options=options)
        return self._observe(obs), self._info(info, obs, None)

    def step(self, action: Any):
        native = self.to_native(action)
        obs, reward, terminated, truncated, info = self._call("step", native)
        return self._observe(obs), reward, terminated, truncated, self._info(info, obs, native)

    def _call(self, what: str, *args: Any, **kwargs: Any) -> Any:
        """As for simulators: whatever the environment raises becomes a SimulatorFault."""
        try:
            return getattr(self.env, what)(*args, **kwargs)
        except Exception as exc:  # the user's environment may raise anything
            raise SimulatorFault(
                f"{self.env.unwrapped}.{what}() raised {type(exc).__name__}: {exc}"
            ) from exc

    def to_native(self, action: Any) -> Any:
        """The environment's own action for the policy's ``action``."""
        if not self._unflatten_action:
            return action
        if isinstance(self.action_space, gym.spaces.MultiDiscrete):
            starts = [leaf.start for leaf in self.action_leaves]
            scalars = (float(a) + s for a, s in zip(np.ravel(action), starts, strict=True))
        else:
            scalars = (float(a) for a in np.ravel(action))
        return build(self._act_space, scalars)

    def from_physical(self, action: Mapping[str, float]) -> Any:
        """The policy's action for named action values (the inverse of ``info['action']``)."""
        try:
            scalars = [float(action[leaf.name]) for leaf in self.action_leaves]
        except KeyError as exc:
            names = ", ".join(leaf.name for leaf in self.action_leaves)
            raise SimError(f"action {dict(action)} lacks {exc}; the actions are: {names}") from None
        if not self._unflatten_action:
            return build(self._act_space, iter(scalars))
        if isinstance(self.action_space, gym.spaces.MultiDiscrete):
            starts = [leaf.start for leaf in self.action_leaves]
            return np.array([round(v) - s for v, s in zip(scalars, starts, strict=True)])
        return np.asarray(scalars, dtype=np.float32)

    @property
    def flattens_observation(self) -> bool:
        """Whether the policy's observation is the env's own flattened (Dict, Tuple, ...)."""
        return self._flatten_obs

    def scale_observation(self, flat: Any) -> Any:
        """The policy's observation for the env's own (flat) one: scaled, where it is."""
        if self._scale is None:
            return flat
        return self._scale.apply(np.asarray(flat, dtype=np.float32))

    def _observe(self, obs: Any) -> Any:
        if self._flatten_obs:
            obs = gym.spaces.flatten(self._obs_space, obs).astype(np.float32)
        return self.scale_observation(obs)

    def _info(self, info: dict[str, Any], obs: Any, action: Any) -> dict[str, Any]:
        named = dict(info)
        named["states"] = dict(
            zip((leaf.name for leaf in self.obs_leaves), values(self._obs_space, obs), strict=True)
        )
        named["action"] = (
            {}
            if action is None
            else dict(
                zip(
                    (leaf.name for leaf in self.action_leaves),
                    values(self._act_space, action),
                    strict=True,
                )
            )
        )
        named.setdefault("scenario", {})
        named.setdefault("lesson", None)
        return named
