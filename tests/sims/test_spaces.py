"""Every standard Gymnasium space: named for the logs, flattened for the policy, round-tripped."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.spaces import Box, Dict, Discrete, MultiBinary, MultiDiscrete, Text, Tuple

from sims.contract import SimulatorFault
from sims.spaces import FlatEnv, UnsupportedSpace, leaves, policy_action_space


def names(space: gym.Space, prefix: str = "obs") -> list[str]:
    return [leaf.name for leaf in leaves(space, prefix)]


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        (Box(-1, 1, (3,)), ["obs0", "obs1", "obs2"]),
        (Box(-1, 1, (1,)), ["obs0"]),
        (Discrete(3), ["obs0"]),
        (MultiDiscrete([2, 3]), ["obs0", "obs1"]),
        (MultiBinary(2), ["obs0", "obs1"]),
        (Dict({"value": Box(0, 100, (1,))}), ["value"]),
        (Dict({"pos": Box(-1, 1, (2,)), "mode": Discrete(3)}), ["mode", "pos_0", "pos_1"]),
        (Tuple((Box(-1, 1, (2,)), Discrete(2))), ["obs0_0", "obs0_1", "obs1"]),
        (
            Dict({"arm": Tuple((Discrete(2), Dict({"angle": Box(-3, 3, (1,))})))}),
            ["arm_0", "arm_1_angle"],
        ),
    ],
)
def test_scalars_are_named_from_keys_and_indices(space, expected):
    assert names(space) == expected


def test_bounds_become_ranges_and_infinite_bounds_none():
    space = Dict(
        {"v": Box(np.array([0.0, -np.inf]), np.array([10.0, 5.0])), "n": Discrete(4, start=1)}
    )
    found = leaves(space, "obs")
    by_name = {leaf.name: leaf for leaf in found}
    assert (by_name["n"].low, by_name["n"].high, by_name["n"].discrete) == (1.0, 4.0, True)
    assert by_name["v_0"].range.low == 0.0 and by_name["v_0"].range.high == 10.0
    assert by_name["v_1"].range is None


@pytest.mark.parametrize(
    ("space", "policy"),
    [
        (Box(-2, 2, (2,)), Box(-2, 2, (2,))),
        (Discrete(5), Discrete(5)),
        (MultiBinary(3), MultiDiscrete([2, 2, 2])),
        (Dict({"a": Discrete(3), "b": MultiDiscrete([2, 4])}), MultiDiscrete([3, 2, 4])),
        (
            Dict({"x": Box(-1, 1, (1,)), "y": Box(0, 5, (2,))}),
            Box(np.array([-1, 0, 0]), np.array([1, 5, 5]), dtype=np.float32),
        ),
    ],
)
def test_actions_the_policy_sees(space, policy):
    assert policy_action_space(space) == policy


def test_mixed_continuous_and_discrete_actions_are_refused_with_the_names():
    with pytest.raises(
        UnsupportedSpace,
        match=r"mixes continuous and discrete actions \(gear \(discrete\), throttle \(continuous\)\)",
    ):
        policy_action_space(Dict({"throttle": Box(0, 1, (1,)), "gear": Discrete(5)}))


def test_a_space_that_cannot_be_flattened_names_where_it_is():
    with pytest.raises(UnsupportedSpace, match=r"observation space\['note'\] is Text\("):
        leaves(Dict({"note": Text(8), "v": Box(0, 1)}), "obs", "observation space")


class Zoo(gym.Env):
    """A user's environment with every kind of space: nested Dict and Tuple, discrete actions."""

    def __init__(self):
        self.observation_space = Dict(
            {
                "level": Box(0.0, 10.0, (1,), dtype=np.float32),
                "valves": MultiBinary(2),
                "mode": Discrete(3, start=1),
                "arm": Tuple((Discrete(2), Box(-1.0, 1.0, (2,), dtype=np.float32))),
            }
        )
        self.action_space = Dict({"pump": Discrete(3, start=-1), "valves": MultiBinary(2)})
        self.seen = []

    def _obs(self):
        return {
            "level": np.array([self.level], dtype=np.float32),
            "valves": self.valves.copy(),
            "mode": np.int64(2),
            "arm": (np.int64(1), np.array([0.5, -0.5], dtype=np.float32)),
        }

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.level, self.valves = 5.0, np.zeros(2, dtype=np.int8)
        return self._obs(), {}

    def step(self, action):
        self.seen.append(action)
        self.level = float(np.clip(self.level + action["pump"], 0, 10))
        self.valves = np.asarray(action["valves"], dtype=np.int8)
        return self._obs(), -abs(self.level - 7.0), False, False, {}


def test_flat_env_gives_the_policy_flat_spaces_and_the_env_its_own_actions():
    env = FlatEnv(Zoo())
    assert isinstance(env.observation_space, Box) and env.observation_space.dtype == np.float32
    assert env.observation_space.shape == (1 + 2 + 3 + 2 + 2,)  # level, valves, one-hot, arm
    assert env.action_space == MultiDiscrete([3, 2, 2])
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert info["states"] == {
        "arm_0": 1.0, "arm_1_0": 0.5, "arm_1_1": -0.5, "level": 5.0, "mode": 2.0,
        "valves_0": 0.0, "valves_1": 0.0,
    }  # fmt: skip
    assert info["scenario"] == {} and info["lesson"] is None
    _, _, _, _, info = env.step(np.array([2, 1, 0]))  # pump choice 2 -> +1 (start -1)
    native = env.unwrapped.seen[-1]
    assert native["pump"] == 1 and native["valves"].tolist() == [1, 0]
    assert Zoo().action_space.contains(native)
    assert info["action"] == {"pump": 1.0, "valves_0": 1.0, "valves_1": 0.0}
    assert info["states"]["level"] == 6.0 and info["states"]["valves_0"] == 1.0
    np.testing.assert_array_equal(env.from_physical(info["action"]), [2, 1, 0])


def test_an_exception_in_a_plain_env_is_a_simulator_fault_naming_it():
    class Breaks(Zoo):
        def step(self, action):
            raise ZeroDivisionError("division by zero in the model")

    env = FlatEnv(Breaks())
    env.reset(seed=0)
    with pytest.raises(
        SimulatorFault, match=r"step\(\) raised ZeroDivisionError: division by zero in the model"
    ):
        env.step(env.action_space.sample())
