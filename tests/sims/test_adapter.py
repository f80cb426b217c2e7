"""The Gymnasium adapter: spaces, scaling, scenarios, registration and run-time faults."""

import pickle

import gymnasium as gym
import numpy as np
import pytest

from sims.adapter import SimEnv
from sims.contract import Range, SimError, SimulatorFault
from sims.registry import make_env


def test_spaces_are_float32_boxes_and_raw_states_come_in_info():
    env = make_env("cstr")
    obs, info = env.reset(seed=0)
    assert env.observation_space == gym.spaces.Box(-1, 1, (8,), np.float32)
    assert env.action_space == gym.spaces.Box(-1, 1, (1,), np.float32)
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    assert info["states"]["Ca"] == pytest.approx(8.57)
    assert obs[0] == pytest.approx(2 * 8.57 / 10 - 1)
    assert info["lesson"] == "transition" and set(info["scenario"]) == {
        "Cref_signal",
        "noise_percentage",
    }


def test_observations_are_clipped_to_minus_one_one():
    assert Range(0, 10).normalise(12.0) == 1.0
    assert Range(0, 10).normalise(-3.0) == -1.0
    assert Range(0, 10).normalise(5.0) == 0.0


def test_actions_outside_minus_one_one_are_clipped_to_the_physical_range():
    env = make_env("cstr")
    env.reset(seed=0)
    assert env.to_physical(np.array([5.0])) == {"dTc": 10.0}
    assert env.to_physical(np.array([-1.0])) == {"dTc": -10.0}
    assert env.to_physical(np.array([0.25])) == {"dTc": pytest.approx(2.5)}
    np.testing.assert_allclose(env.from_physical({"dTc": 2.5}), [0.25])

    def tc_after(action):
        env.reset(seed=0)
        return env.step(np.array([action], dtype=np.float32))[4]["states"]["Tc"]

    assert tc_after(5.0) == tc_after(1.0)


def test_wrong_action_size_names_the_actions():
    env = make_env("cstr")
    env.reset(seed=0)
    with pytest.raises(SimError, match=r"action has 2 component\(s\); the spec declares 1 \(dTc\)"):
        env.step(np.zeros(2))


def test_scenario_override_and_lesson_switch_through_reset_options():
    env = make_env("cstr")
    _, info = env.reset(seed=0, options={"scenario": {"Cref_signal": 5, "noise_percentage": 1.5}})
    assert info["scenario"] == {"Cref_signal": 5.0, "noise_percentage": 1.5}
    _, info = env.reset(seed=0, options={"lesson": "transition_noisy"})
    assert info["lesson"] == "transition_noisy"
    _, info = env.reset(seed=1)
    assert info["lesson"] == "transition_noisy", "a lesson switch lasts until the next one"


def test_unknown_scenario_override_names_the_parameter():
    env = make_env("cstr")
    with pytest.raises(
        SimError, match=r"unknown scenario parameter.*Cref_sig for simulator cstr; known"
    ):
        env.reset(seed=0, options={"scenario": {"Cref_sig": 2}})


def test_same_seed_same_scenario():
    a, b = make_env("cstr"), make_env("cstr")
    assert a.reset(seed=11)[1]["scenario"] == b.reset(seed=11)[1]["scenario"]


@pytest.mark.parametrize("env_id", ["aml_rl/CSTR-v0", "aml_rl/SimpleAdder-v0"])
def test_registered_ids_work_with_gymnasium_make_and_make_env(env_id):
    env = gym.make(env_id)
    assert isinstance(env.unwrapped, SimEnv)
    env.reset(seed=0)
    assert isinstance(make_env(env_id), SimEnv)


def test_standard_gymnasium_ids_work_where_a_sim_name_does():
    env = make_env("Pendulum-v1")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3,)


def test_unknown_simulator_says_what_exists():
    with pytest.raises(
        SimError,
        match=r"unknown simulator 'cstrr'; use one of balance, cstr, positioner, simple_adder, .*CartPole-v1.*invoke new-sim",
    ):
        make_env("cstrr")


def test_a_simulator_returning_nan_is_reported_with_the_state_and_step(variant_sim):
    name = variant_sim(
        "nan_room",
        {
            "        self.steps += 1\n": "        self.steps += 1\n        if self.steps == 3:\n            self.temp = float('nan')\n"
        },
    )
    env = make_env(name)
    env.reset(seed=0)
    env.step([0.0])
    env.step([0.0])
    with pytest.raises(
        SimulatorFault,
        match=r"nan_room\.step\(\) at step 2 of scenario .* returned nan for state 'temp'",
    ):
        env.step([0.0])


def test_a_simulator_that_raises_is_reported_with_its_error(variant_sim):
    name = variant_sim(
        "raising_room",
        {'        power = action["power"]\n': '        raise OSError("licence server down")\n'},
    )
    env = make_env(name)
    env.reset(seed=0)
    with pytest.raises(
        SimulatorFault,
        match=r"raising_room\.step\(\) at step 0 .* raised OSError: licence server down",
    ):
        env.step([0.0])


def test_a_spec_naming_a_state_the_simulator_does_not_return(variant_sim):
    name = variant_sim(
        "renamed_room",
        {
            'return {"temp": self.temp, "setpoint": self.setpoint}': 'return {"temperature": self.temp, "setpoint": self.setpoint}'
        },
    )
    env = make_env(name)
    with pytest.raises(
        SimError,
        match=r"renamed_room\.py: the spec names state\(s\) temp but the simulator returns only temperature, setpoint",
    ):
        env.reset(seed=0)


def test_env_survives_a_pickle_round_trip_mid_episode():
    env = make_env("cstr")
    env.reset(seed=5)
    env.step([0.3])
    clone = pickle.loads(pickle.dumps(env))
    np.testing.assert_array_equal(env.step([0.1])[0], clone.step([0.1])[0])


def test_a_step_that_renames_a_state_is_a_fault_naming_it(variant_sim):
    name = variant_sim(
        "drifting_room",
        {
            "        self.truncated = self.steps >= MAX_STEPS\n        return self._states()": (
                "        self.truncated = self.steps >= MAX_STEPS\n"
                '        return {"Temp": self.temp, "setpoint": self.setpoint}'
            )
        },
    )
    env = make_env(name)
    env.reset(seed=0)  # reset returns the declared names
    with pytest.raises(
        SimulatorFault,
        match=r"drifting_room\.step\(\) at step 0 returned no temp \(it returned Temp, setpoint\); return every state the SimSpec observes or logs, under the same names as reset\(\) does",
    ):
        env.step([0.0])
    assert env.unwrapped.fault["error"].startswith(
        "drifting_room.step() at step 0 returned no temp"
    )
