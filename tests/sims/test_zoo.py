"""The simulator zoo: control problems written the way users write them, each with the
classical controller an engineer would commission. Each passes check-sim, its baseline beats
random actions by the project's own verdict, and a smoke run trains and assesses it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jobs.assess import Controller, compare, default_scenarios
from jobs.verdict import decide
from sims.check import check_sim
from sims.registry import resolve
from tests.conftest import ROOT, train_smoke

ZOO = ["tank", "positioner", "sims.thermostat:Thermostat", "balance"]


@pytest.mark.parametrize("sim", ZOO)
def test_each_zoo_simulator_passes_check_sim(sim):
    report = check_sim(sim, episodes=5)
    assert report.ok, [(f.check, f.detail) for f in report.failures()]
    scale = next(f for f in report.findings if f.check == "return scale")
    assert scale.status == "pass" and "baseline: mean" in scale.detail


@pytest.mark.parametrize("sim", ZOO)
def test_the_baseline_beats_random_actions_by_the_verdict(sim):
    handle = resolve(sim)
    env = handle.make_env()
    env.action_space.seed(0)
    try:
        result, _ = compare(
            handle,
            env,
            default_scenarios(handle),
            Controller(lambda obs, info: env.action_space.sample()),
        )
    finally:
        env.close()
    verdict = decide(result.to_json(), handle)
    assert verdict.beats is False and verdict.baseline is not None
    assert verdict.kpi == handle.primary_kpi
    assert verdict.improvement < -0.3, verdict.line()  # far from it, not a coin toss


def test_the_zoo_covers_what_the_recipe_must_not_be_tuned_to():
    """Scales, signs, lengths, kinds of action and environment, plant dynamics."""
    returns, lengths = {}, {}
    for sim in ZOO:
        handle = resolve(sim)
        env = handle.make_env()
        baseline = handle.baseline()
        _, info = env.reset(seed=0)
        total, steps, done = 0.0, 0, False
        while not done:
            _, reward, terminated, truncated, info = env.step(
                env.from_physical(baseline.act(info["states"]))
            )
            total, steps, done = total + reward, steps + 1, terminated or truncated
        env.close()
        returns[sim], lengths[sim] = total, steps
    magnitudes = sorted(round(np.log10(abs(r))) for r in returns.values())
    assert magnitudes[0] <= 0 and magnitudes[-1] >= 4, returns  # order 1 to order 10,000
    assert min(returns.values()) < 0 < max(returns.values())
    assert min(lengths.values()) <= 60 and max(lengths.values()) >= 900, lengths
    thermostat = resolve("sims.thermostat:Thermostat")
    assert thermostat.kind == "gymnasium" and thermostat.baseline is not None
    assert type(thermostat.gym_factory().action_space).__name__ == "Discrete"
    assert resolve("balance").runs_as_process


@pytest.mark.parametrize("sim", ["positioner", "balance"])
def test_a_smoke_run_trains_and_assesses_a_zoo_simulator(tmp_path, sim):
    run, printed = train_smoke(
        tmp_path / "runs", "--config", str(ROOT / "jobs" / "configs" / f"{sim}_ppo.yaml")
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["assessment"]["baseline"]
    assert summary["verdict"]["kpi"] == resolve(sim).primary_kpi
    assert "verdict: " in printed
