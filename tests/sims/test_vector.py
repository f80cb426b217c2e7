"""sims.vector: each sub-env's info reaches RLlib as the env returned it, with the same values
under the same keys as through Gymnasium's own merge and split."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
from gymnasium.wrappers.vector import DictInfoToList

from sims.registry import RLlibEnv
from sims.vector import WholeInfoVectorEnv


class Counter(gym.Env):
    """A user's env with the infos users write: nested dicts, NumPy values, a string, and a
    key that only some steps have."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {"phase": "start", "where": {"t": 0}}

    def step(self, action):
        self.t += 1
        info = {"where": {"t": self.t, "noise": self.np_random.normal()}, "gain": np.float32(2)}
        if self.t % 3 == 0:
            info["every_third"] = [self.t]
        return np.clip(action, -1, 1), float(action[0]), False, self.t >= 5, info


def _same(ours: list[dict], gyms: list[dict]) -> None:
    assert len(ours) == len(gyms)
    for a, b in zip(ours, gyms, strict=True):
        assert a.keys() == b.keys()
        assert a == b  # equal values; Gymnasium's made NumPy scalars of the leaves


def test_infos_reach_rllib_as_through_gymnasiums_merge_and_split():
    """Both vectors behind RLlib's DictInfoToList, stepped alike through autoresets."""
    ours = DictInfoToList(WholeInfoVectorEnv([Counter] * 3))
    gyms = DictInfoToList(gym.vector.SyncVectorEnv([Counter] * 3))
    a, b = ours.reset(seed=1), gyms.reset(seed=1)
    np.testing.assert_array_equal(a[0], b[0])
    _same(a[1], b[1])
    assert a[1][0] == {"phase": "start", "where": {"t": 0}}  # as the env returned it
    rng = np.random.default_rng(0)
    seen_extra = 0
    for _ in range(14):  # several 5-step episodes: autoreset steps included
        actions = rng.uniform(-1, 1, size=(3, 1)).astype(np.float32)
        a, b = ours.step(actions), gyms.step(actions)
        for x, y in zip(a[:4], b[:4], strict=True):
            np.testing.assert_array_equal(x, y)
        _same(a[4], b[4])
        seen_extra += sum("every_third" in info for info in a[4])
        assert all(type(info.get("gain", np.float32(2))) is np.float32 for info in a[4])
    assert seen_extra > 0  # a key some sub-envs have and others not, kept apart


def test_the_cstr_infos_are_the_env_runners_to_the_value():
    """The CSTR with reward scaling, as an env runner builds it: the states, action,
    scenario and lesson of every step, equal to Gymnasium's own vector's."""
    options = {"sim": "cstr", "lesson": "transition_noisy", "normalize_rewards_gamma": 0.99}
    ours = DictInfoToList(RLlibEnv({**options, "num_envs": 4}))
    gyms = DictInfoToList(gym.vector.SyncVectorEnv([functools.partial(RLlibEnv, options)] * 4))
    assert isinstance(ours.env, WholeInfoVectorEnv)
    a, b = ours.reset(seed=2), gyms.reset(seed=2)
    _same(a[1], b[1])
    rng = np.random.default_rng(3)
    for _ in range(250):
        actions = rng.uniform(-1, 1, size=(4, 1)).astype(np.float32)
        a, b = ours.step(actions), gyms.step(actions)
        for x, y in zip(a[:4], b[:4], strict=True):
            np.testing.assert_array_equal(x, y)
        _same(a[4], b[4])
    assert set(a[4][0]) >= {"states", "action", "scenario", "lesson"}
    assert type(a[4][0]["states"]["Ca"]) is float  # the env's own value, not a NumPy copy
