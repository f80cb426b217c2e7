"""training.warm_start_steps: a new run's policy starts from the baseline's actions."""

from __future__ import annotations

import json

from jobs.config import load_config
from jobs.rundir import RunDir
from tests.conftest import ROOT, train_smoke


def test_a_warm_started_smoke_run_acts_near_the_baseline_after_400_env_steps(tmp_path):
    """400 env steps of PPO cannot make a controller from scratch (its Ca RMS is several times
    the PI's); fitted to the PI's actions first, the agent is close to it."""
    run, out = train_smoke(tmp_path, "--set", "training.warm_start_steps=300")
    summary = json.loads((run / "summary.json").read_text())
    warm = summary["warm_start"]
    assert warm["episodes"] == 20 and warm["pairs"] == 20 * 90 and warm["steps"] == 300
    assert warm["loss_after"] < warm["loss_before"]
    assert "warm start: the policy fitted to the baseline's actions over 1,800 steps" in out
    agent, baseline = (summary["assessment"][c]["ca_rms"] for c in ("agent", "baseline"))
    assert agent < 1.5 * baseline, summary["assessment"]


def test_a_resumed_run_keeps_its_first_sessions_warm_start_record(tmp_path):
    from jobs.train import _warm_start

    run = RunDir.at(tmp_path / "run")
    record = {"episodes": 20, "pairs": 1800, "steps": 300, "loss_before": 1.1, "loss_after": 0.2}
    run.summary.write_text(json.dumps({"warm_start": record}))
    cfg = load_config(
        ROOT / "jobs" / "configs" / "cstr_ppo.yaml", ["training.warm_start_steps=300"]
    )
    # resumed: nothing is fitted again (no algorithm is touched), the record carries over
    assert _warm_start(None, None, cfg, run, resumed=True) == record
