"""The batched simulator contract: a batch steps N scenarios at once and gives the scalar
simulator's states, rewards and episode ends step for step."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest

from sims.batch import BatchVectorEnv, Slot
from sims.registry import RLlibEnv
from sims.vector import WholeInfoVectorEnv


def _vectors(options: dict, n: int) -> tuple[gym.vector.VectorEnv, gym.vector.VectorEnv]:
    scalar = WholeInfoVectorEnv([functools.partial(RLlibEnv, options)] * n)
    batched = BatchVectorEnv([functools.partial(RLlibEnv, {**options, "batched": True})] * n)
    return scalar, batched


def _same_infos(a: dict, b: dict) -> None:
    """The vectors' infos (a column of each sub-env's values per key, sims.vector) hold the
    same values."""
    assert a.keys() == b.keys()
    for key, column in a.items():
        np.testing.assert_array_equal(column, b[key])  # dicts compared whole, by value


@pytest.mark.parametrize("lesson", [0, "transition_noisy"])
def test_the_batched_cstr_steps_as_the_scalar_one_across_resets_and_terminations(lesson):
    scalar, batched = _vectors(
        {"sim": "cstr", "lesson": lesson, "normalize_rewards_gamma": 0.99}, n=6
    )
    assert all(isinstance(env.unwrapped.simulator, Slot) for env in batched.envs)
    rng = np.random.default_rng(1)
    ends = {"terminated": 0, "truncated": 0}
    obs_a, info_a = scalar.reset(seed=3)
    obs_b, info_b = batched.reset(seed=3)
    np.testing.assert_array_equal(obs_a, obs_b)
    _same_infos(info_a, info_b)
    for _ in range(400):  # 4+ episodes each: resets (autoreset), runaways, truncations
        # random coolant moves, often large: some episodes run away, the others time out
        actions = rng.uniform(-1, 1, size=(6, 1)).astype(np.float32)
        a = scalar.step(actions)
        b = batched.step(actions)
        for x, y in zip(a[:4], b[:4], strict=True):
            np.testing.assert_array_equal(x, y)
        _same_infos(a[4], b[4])
        ends["terminated"] += int(a[2].sum())
        ends["truncated"] += int(a[3].sum())
    assert ends["terminated"] > 0 and ends["truncated"] > 0
    scalar.close()
    batched.close()


def test_a_slot_stepped_alone_is_the_scalar_simulator():
    """Outside the vector env (check-sim, a single env) a slot advances only its own index."""
    from sims.cstr import CSTR, BatchCSTR

    batch = BatchCSTR(3)
    slot, scalar = Slot(batch, 1), CSTR()
    config = {"Cref_signal": 2.0, "noise_percentage": 1.0}
    slot.np_random, scalar.np_random = np.random.default_rng(5), np.random.default_rng(5)
    assert slot.reset(config) == scalar.reset(config)
    for dTc in [10.0, -3.0, 0.5] * 30:
        assert slot.step({"dTc": dTc}) == scalar.step({"dTc": dTc})
        assert (slot.terminated, slot.truncated) == (scalar.terminated, scalar.truncated)
    assert batch.steps.tolist() == [0, 90, 0]  # the others never moved


# A user's NumPy model, written as a user would: a rod of 12 cells heated at one end, the far
# end held at a set point. One function over arrays serves both forms: a step is array work,
# so one batch of 8 rods costs about what one rod does.
ROD_HEATER = '''
"""A heated rod: explicit finite differences, heater at x = 0, temperature measured at x = L."""
from pathlib import Path

import numpy as np

from sims.contract import BatchSimulator, Range, SimSpec, Simulator

CELLS, SUBSTEPS, STEPS = 12, 5, 60
ALPHA, LOSS, GAIN, AMBIENT = 0.2, 0.002, 40.0, 20.0


def advance(T, power):
    """Every rod in T (..., CELLS) by one control step at heater power (...,) in [0, 1]."""
    for _ in range(SUBSTEPS):
        flux = np.zeros_like(T)
        flux[..., 1:-1] = T[..., 2:] - 2.0 * T[..., 1:-1] + T[..., :-2]
        flux[..., 0] = T[..., 1] - T[..., 0]
        flux[..., -1] = T[..., -2] - T[..., -1]
        T = T + ALPHA * flux - LOSS * (T - AMBIENT)
        T[..., 0] = T[..., 0] + GAIN * power / SUBSTEPS
    return T


class Rod(Simulator):
    PARAMETERS = {"target": 50.0}

    def reset(self, config):
        self.target = float(config["target"])
        self.T = np.full(CELLS, AMBIENT)
        self.steps = 0
        self.terminated = self.truncated = False
        return self._states()

    def step(self, action):
        self.T = advance(self.T, np.float64(action["power"]))
        self.steps += 1
        self.truncated = self.steps >= STEPS
        return self._states()

    def _states(self):
        return {"far": self.T[-1], "near": self.T[0], "target": self.target}


class Rods(BatchSimulator):
    PARAMETERS = Rod.PARAMETERS

    def __init__(self, n):
        super().__init__(n)
        self.T = np.full((n, CELLS), AMBIENT)
        self.target = np.zeros(n)
        self.steps = np.zeros(n, dtype=int)

    def reset(self, index, config):
        self.target[index] = float(config["target"])
        self.T[index] = AMBIENT
        self.steps[index] = 0
        self.terminated[index] = self.truncated[index] = False
        return {"far": self.T[index, -1], "near": self.T[index, 0], "target": self.target[index]}

    def step(self, action, active):
        self.T[active] = advance(self.T[active], action["power"][active])
        self.steps[active] += 1
        self.truncated[:] = self.steps >= STEPS
        return {"far": self.T[:, -1], "near": self.T[:, 0], "target": self.target}


def reward(states, action):
    return -abs(states["far"] - states["target"]) / 10.0


class OnOff:
    def reset(self):
        pass

    def act(self, states):
        return {"power": 1.0 if states["far"] < states["target"] else 0.0}


def kpis(states, actions, terminated):
    errors = [s["far"] - s["target"] for s in states[1:]]
    return {"far_rms": float(np.sqrt(np.mean(np.square(errors))))}


SPEC = SimSpec(
    name="rod_heater",
    env_id="user/RodHeater-v0",
    simulator=Rod,
    batch_simulator=Rods,
    observations={
        "far": Range(0.0, 100.0, "degC"),
        "near": Range(0.0, 400.0, "degC"),
        "target": Range(0.0, 100.0, "degC"),
    },
    actions={"power": Range(0.0, 1.0, "")},
    reward=reward,
    lessons=Path(__file__).with_name("rod_lessons.yaml"),
    baseline=OnOff,
    kpis=kpis,
    kpi_units={"far_rms": "degC"},
    primary_kpi="far_rms",
)
'''


@pytest.fixture
def rod_project(tmp_path):
    import sys

    folder = tmp_path / "rod_project"
    folder.mkdir()
    (folder / "rod_heater.py").write_text(ROD_HEATER)
    (folder / "rod_lessons.yaml").write_text(
        "lessons:\n  - name: any\n    parameters:\n      target: {min: 30, max: 70}\n"
    )
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop("rod_heater", None)


def test_check_sim_compares_a_users_batch_simulator_with_its_scalar_form(rod_project):
    from sims.check import check_sim

    report = check_sim("rod_heater", episodes=3)
    assert report.ok, [(f.check, f.detail) for f in report.failures()]
    (row,) = [f for f in report.findings if f.check == "batch simulator matches the simulator"]
    assert row.status == "pass"
    assert "8 sub-envs x 300 steps identical through" in row.detail
    assert "x the scalar simulator's speed over 8 envs" in row.detail


def test_check_sim_names_the_step_and_state_where_a_batch_goes_wrong(rod_project):
    """A batch that drifts from its scalar form (here: a different loss term) is caught."""
    module = rod_project / "rod_heater.py"
    module.write_text(
        module.read_text().replace(
            '        self.T[active] = advance(self.T[active], action["power"][active])',
            '        self.T[active] = advance(self.T[active], action["power"][active]) * 1.0001',
        )
    )
    from sims.check import check_sim

    report = check_sim("rod_heater", episodes=3)
    (row,) = [f for f in report.findings if f.check == "batch simulator matches the simulator"]
    assert row.status == "fail"
    assert "sub-env 0, step 0: the rewards differ (states far " in row.detail
    assert "the batch must compute what the scalar simulator does, step for step" in row.detail


def test_a_users_batch_simulator_trains_and_assesses_as_its_scalar_form_does(rod_project, tmp_path):
    """Trained batched and not, with the same seed, the two runs log the same episodes."""
    import json

    from jobs.trajectories import read_trajectories
    from tests.conftest import train_smoke

    frames = {}
    for batched in ("true", "false"):
        runs = tmp_path / f"runs-{batched}"
        runs.mkdir()
        config = runs / "experiment.yaml"
        config.write_text(f"experiment: rod\nsim: rod_heater\nenv_runners:\n  batched: {batched}\n")
        run, _ = train_smoke(runs, "--config", str(config), cwd=rod_project)
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["env_step_failures"] == 0
        assert set(summary["assessment"]) == {"agent", "baseline"}
        frame = read_trajectories(str(run))
        # episode ids are random; each episode's target (drawn from the seeded lesson) is not
        frames[batched] = frame[frame["phase"] == "train"].sort_values(["state_target", "step"])
    columns = ["step", "state_far", "state_near", "state_target", "action_power", "reward"]
    assert len(frames["true"]) > 100
    a = frames["true"][columns].reset_index(drop=True)
    b = frames["false"][columns].reset_index(drop=True)
    assert a.equals(b)
    # and the batched run's env runner did step the batch: its env is the batch vector
    from jobs.algorithms import algorithm_config
    from jobs.config import load_config

    config = algorithm_config(load_config(tmp_path / "runs-true" / "experiment.yaml"), None)
    assert config.gym_env_vectorize_mode == "vector_entry_point"
    vector = RLlibEnv({**config.env_config, "num_envs": 2})
    assert isinstance(vector, BatchVectorEnv)
    assert type(vector.batch).__name__ == "Rods"
    vector.close()
