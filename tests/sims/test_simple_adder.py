"""The Simple Adder and its optimal baseline."""

import math

import pytest

from sims.registry import make_env


@pytest.mark.parametrize("start", [0.0, 13.0, 50.0, 77.0, 100.0])
def test_baseline_reaches_50_in_the_fewest_steps(start):
    env = make_env("simple_adder")
    policy = env.spec_.baseline()
    _, info = env.reset(seed=0, options={"scenario": {"initial_value": start}})
    steps = 0
    while info["states"]["value"] != 50.0:
        _, _, _, truncated, info = env.step(env.from_physical(policy.act(info["states"])))
        steps += 1
        assert not truncated
    assert steps == math.ceil(abs(50.0 - start) / 10.0)


def test_actions_are_rounded_to_integers_and_clipped_to_ten():
    env = make_env("simple_adder")
    env.reset(seed=0, options={"scenario": {"initial_value": 20}})
    _, _, _, _, info = env.step(env.from_physical({"addend": 3.4}))
    assert info["states"]["value"] == 23.0
    _, _, _, _, info = env.step([7.0])  # outside [-1, 1]: clipped to +10
    assert info["states"]["value"] == 33.0
    assert info["action"] == {"addend": 10.0}


def test_episode_truncates_after_ten_steps():
    env = make_env("simple_adder")
    env.reset(seed=0, options={"scenario": {"initial_value": 0}})
    flags = [env.step([-1.0])[3] for _ in range(10)]
    assert flags == [False] * 9 + [True]


def test_starting_values_follow_the_lesson():
    env = make_env("simple_adder")
    starts = {env.reset(seed=seed)[1]["states"]["value"] for seed in range(200)}
    assert min(starts) >= 0 and max(starts) <= 100
    assert len(starts) > 50
