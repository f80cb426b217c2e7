"""Resolving any simulator name once, to one handle; discovery that survives a broken module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sims.adapter import SimEnv
from sims.check import check_sim
from sims.contract import SimError
from sims.registry import available, resolve
from sims.spaces import FlatEnv

NAMES = {
    "built-in name": ("simple_adder", "simulator", SimEnv),
    "aml_rl/ id": ("aml_rl/SimpleAdder-v0", "simulator", SimEnv),
    "registered Gymnasium id": ("CartPole-v1", "gymnasium", FlatEnv),
    "module:EnvId": ("plato_adder:PlatoAdder-v0", "gymnasium", FlatEnv),
    "module:ClassName": ("plato_adder:SimpleAdder", "gymnasium", FlatEnv),
    "module:ClassName, Dict/Tuple/Discrete": ("valve_zoo:ValvePlant", "gymnasium", FlatEnv),
    "module:ClassName, a Simulator": ("room_sim:RoomSim", "simulator", SimEnv),
    "dotted module with a SPEC": ("room_sim", "simulator", SimEnv),
}


@pytest.mark.parametrize("kind", NAMES)
def test_every_kind_of_name_resolves_to_one_handle_and_passes_check_sim(user_project, kind):
    name, expected_kind, env_type = NAMES[kind]
    handle = resolve(name)
    assert handle.name == name and handle.kind == expected_kind
    assert isinstance(handle.make_env().unwrapped if env_type is SimEnv else handle.make_env(),
                      env_type)  # fmt: skip
    report = check_sim(name, episodes=3)
    assert report.ok, [(f.check, f.detail) for f in report.failures()]
    assert {f.check for f in report.findings if f.status == "pass"} >= {
        "construct", "spaces and dtypes", "seeded determinism", "pickles (Ray ships envs to workers)"
    }  # fmt: skip


def test_a_dict_space_env_is_named_from_its_keys(user_project):
    handle = resolve("plato_adder:SimpleAdder")
    assert list(handle.observations) == ["value"] and list(handle.actions) == ["addend"]
    assert handle.actions["addend"].low == -10 and handle.observations["value"] is None
    env = handle.make_env()
    _, info = env.reset(seed=3)
    _, _, _, _, info = env.step(env.action_space.sample())
    assert set(info["states"]) == {"value"} and set(info["action"]) == {"addend"}
    assert info["action"]["addend"] == int(info["action"]["addend"])  # an integer, as declared


def test_an_id_registered_by_a_module_needs_the_module_and_says_so():
    with pytest.raises(
        SimError,
        match=r"unknown simulator 'Nowhere-v0' \(an id your module registers is found as module:Nowhere-v0\)",
    ):
        resolve("Nowhere-v0")


def test_a_missing_module_names_where_it_looked():
    with pytest.raises(
        SimError,
        match=r"simulator 'no_such_pkg.env:Env-v0': no module 'no_such_pkg.env' on sys.path .*sims/external.yaml",
    ):
        resolve("no_such_pkg.env:Env-v0")


def test_an_attribute_that_is_neither_env_nor_simulator_is_named(user_project):
    with pytest.raises(
        SimError,
        match=r"'np' in .*plato_adder.py is a module; name a Gymnasium id the module registers, .* it registers PlatoAdder-v0",
    ):
        resolve("plato_adder:np")


def test_a_gym_class_whose_constructor_needs_two_arguments_is_refused(tmp_path, monkeypatch):
    (tmp_path / "needy.py").write_text(
        "import gymnasium as gym\nclass Needy(gym.Env):\n    def __init__(self, a, b): pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        SimError, match=r"Needy\(\) needs arguments \['a', 'b'\]; give them defaults"
    ):
        resolve("needy:Needy")


def test_a_broken_module_under_sims_does_not_change_other_messages(user_sims: Path):
    (user_sims / "broken.py").write_text(
        "import math\n\nVALUE = math.sqrt(-1)  # raises ValueError at import\n"
    )
    with pytest.raises(SimError) as unrelated:
        resolve("cstrr")
    assert str(unrelated.value).startswith(
        "unknown simulator 'cstrr'; use one of balance, cstr, positioner, simple_adder, "
        "simple_adder_c, tank, a Gymnasium id"
    )
    assert "broken" not in str(unrelated.value)
    assert available() == [
        "balance",
        "cstr",
        "positioner",
        "simple_adder",
        "simple_adder_c",
        "tank",
    ]
    assert resolve("cstr").label == "cstr"  # every other name still resolves
    with pytest.raises(
        SimError,
        match=r"broken\.py, line 3: importing sims\.broken for simulator 'broken' failed with ValueError: math domain error; fix the module",
    ):
        resolve("broken")
    construct = check_sim("broken").findings[0]
    assert (construct.check, construct.status) == ("construct", "fail")
    assert "broken.py, line 3" in construct.detail and "ValueError" in construct.detail


def test_a_module_missing_a_dependency_says_how_to_ship_it(user_sims: Path):
    (user_sims / "needs_vendor.py").write_text("import reactor_model_xyz\n")
    with pytest.raises(
        SimError,
        match=r"No module named 'reactor_model_xyz'; install 'reactor_model_xyz', or if it is your own code outside sims/, declare it in sims/external.yaml",
    ):
        resolve("needs_vendor")


def test_an_unsupported_space_is_a_failed_row_not_a_traceback(tmp_path, monkeypatch):
    (tmp_path / "texty.py").write_text(
        "import gymnasium as gym\n"
        "class Texty(gym.Env):\n"
        "    observation_space = gym.spaces.Dict({'note': gym.spaces.Text(8)})\n"
        "    action_space = gym.spaces.Discrete(2)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    report = check_sim("texty:Texty")
    assert not report.ok
    (failure,) = report.failures()
    assert failure.check == "construct"
    assert "observation space['note'] is Text(" in failure.detail
    assert "use Box, Discrete, MultiDiscrete, MultiBinary, Dict and Tuple spaces" in failure.detail


def test_a_users_simulator_module_carries_its_spec_and_units(user_project):
    handle = resolve("room_sim:RoomSim")
    assert handle.label == "room" and handle.parameters == {"outside": 5.0}
    assert (handle.state_units, handle.action_units) == ({"temp": "degC"}, {"power": "kW"})
    env = handle.make_env()
    _, info = env.reset(seed=0, options=handle.reset_options({"outside": 30.0}))
    assert info["scenario"] == {"outside": 30.0}


def test_handles_carry_units_from_the_spec():
    handle = resolve("cstr")
    assert handle.state_units["Ca"] == "kmol/m3" and handle.action_units["dTc"] == "K"
    assert handle.kpi_units["ca_rms"] == "kmol/m3"
    assert resolve("CartPole-v1").state_units == resolve("CartPole-v1").action_units == {}


def test_rllib_env_normalises_rewards_for_the_learner_and_keeps_the_simulators_own():
    from sims.registry import RLlibEnv

    env = RLlibEnv({"sim": "positioner", "lesson": 0, "normalize_rewards_gamma": 0.99})
    env.reset(seed=0)
    env.action_space.seed(0)
    raw, seen, done = [], [], False
    while not done:
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        raw.append(info["reward"])
        seen.append(reward)
        done = terminated or truncated
    assert info["episode_return"] == pytest.approx(sum(raw))  # the simulator's units
    assert sum(raw) < -10_000  # -1000 per metre of error, every step
    assert abs(sum(seen)) < abs(sum(raw)) / 100  # what the learner sees is of order 1-100
    plain = RLlibEnv({"sim": "positioner", "lesson": 0})
    plain.reset(seed=0)
    _, reward, *_, info = plain.step(plain.action_space.sample())
    assert "reward" not in info  # no normalisation asked: the reward as the spec gives it
    assert reward == pytest.approx(-1000.0 * abs(info["states"]["error"]))


def test_the_running_return_statistics_scale_every_reward_as_gymnasiums_own_do():
    """The scalar statistics (a cut of the hot path) change no scaled reward by one bit,
    over episodes that end by termination and by truncation."""
    import gymnasium as gym
    from gymnasium.wrappers.utils import RunningMeanStd

    from sims.registry import RLlibEnv

    ours = RLlibEnv({"sim": "cstr", "lesson": 0, "normalize_rewards_gamma": 0.99})
    theirs = RLlibEnv({"sim": "cstr", "lesson": 0, "normalize_rewards_gamma": 0.99})
    theirs.env.return_rms = RunningMeanStd(shape=())  # Gymnasium's, on NumPy arrays
    assert isinstance(theirs.env, gym.wrappers.NormalizeReward)
    rng = np.random.default_rng(0)
    ends = set()
    for episode in range(6):
        ours.reset(seed=episode)
        theirs.reset(seed=episode)
        done = False
        while not done:
            action = rng.uniform(-1, 1, size=ours.action_space.shape).astype(np.float32)
            _, mine, terminated, truncated, _ = ours.step(action)
            _, gyms, *_ = theirs.step(action)
            assert float(mine) == float(gyms)
            done = terminated or truncated
        ends.add("terminated" if terminated else "truncated")
    assert ends == {"terminated", "truncated"}  # random coolant runs away in some episodes
    assert ours.env.return_rms.var == float(theirs.env.return_rms.var)


def test_an_assessment_that_is_not_a_gym_assessment_is_named(user_project):
    (user_project / "odd_env.py").write_text(
        "import gymnasium as gym\n\n\nclass OddEnv(gym.Env):\n"
        "    observation_space = gym.spaces.Box(-1, 1, (1,))\n"
        "    action_space = gym.spaces.Discrete(2)\n\n\nASSESSMENT = {'baseline': None}\n"
    )
    with pytest.raises(
        SimError,
        match=r"odd_env\.py: ASSESSMENT is a dict; make it a sims\.contract\.GymAssessment\("
        r"baseline=\.\.\., kpis=\.\.\.\) or remove it",
    ):
        resolve("odd_env:OddEnv")
