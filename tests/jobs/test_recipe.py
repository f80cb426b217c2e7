"""The default recipe: it trains a zoo simulator until the verdict stops it, and a reward in
other units (x1000) gives the same verdict within the same budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

BUDGET = 120_000  # env steps: the tank's recipe has beaten its PI loops by 40,000 in the zoo
# A user's copy of the tank whose reward is in other units: the same task, x1000.
TANK_X1000 = """
import dataclasses

from sims import tank


def reward(states, action):
    return 1000.0 * tank.reward(states, action)


SPEC = dataclasses.replace(
    tank.SPEC, name="tank_x1000", env_id="user/TankX1000-v0", reward=reward, source=__file__
)
"""


def train_to_verdict(sim: str, folder: Path) -> tuple[dict, str]:
    """`python -m jobs.train` on the tank's recipe config, run from ``folder`` as a user would."""
    config = yaml.safe_load((ROOT / "jobs" / "configs" / "tank_ppo.yaml").read_text())
    config.update(sim=sim, experiment=sim, trajectories={"enabled": False})
    config["stop"].update(max_env_steps=BUDGET, assess_every_iterations=5, max_wall_s=None)
    path = folder / f"{sim}.yaml"
    path.write_text(yaml.safe_dump(config))
    runs = folder / "runs" / sim
    done = subprocess.run(
        [sys.executable, "-m", "jobs.train", "--config", str(path), "--runs-dir", str(runs)],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    (summary,) = runs.rglob("summary.json")
    return json.loads(summary.read_text()), done.stdout


def test_the_recipe_beats_the_tanks_pi_loops_and_stops_there_whatever_the_reward_units(
    tmp_path,
):
    (tmp_path / "tank_x1000.py").write_text(TANK_X1000)
    plain, printed = train_to_verdict("tank", tmp_path)
    assert plain["verdict"]["beats"] is True, printed[-3000:]
    assert plain["stop_reason"] == f"beats the baseline at {plain['env_steps_sampled']:,} env steps"
    assert plain["env_steps_sampled"] < BUDGET  # it stopped on the verdict, not the budget
    assert printed.rstrip().splitlines()[-3].startswith("verdict: beats the baseline (return ")
    assert "assessment at 20,0" in printed  # it said how far it was, at each assessment
    assert all(v["assess_s"] > 0 for v in plain["verdicts"])  # kept apart from training time

    scaled, printed = train_to_verdict("tank_x1000", tmp_path)
    assert scaled["verdict"]["beats"] is True, printed[-3000:]
    assert scaled["env_steps_sampled"] < BUDGET
    # reported in the simulator's units: the x1000 reward's return is 1000 times as large
    assert scaled["verdict"]["baseline"] == pytest.approx(1000.0 * plain["verdict"]["baseline"])
    assert scaled["episode_return_mean"] > 100 * plain["episode_return_mean"]
