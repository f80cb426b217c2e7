"""`invoke bench --only control_quality`: time and env steps until the default CSTR
config beats PI."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    ROOT,
    Benchmark,
)


# -- 4. control quality ------------------------------------------------------------------
def _time_to_beat_pi(
    config: Path, budget_s: float, check_every: int, runs_root: Path
) -> tuple[tuple[float, int] | None, dict[str, Any]]:
    """Train ``config`` for ``budget_s``, assessing every ``check_every`` iterations; the
    first (training seconds, env steps) at which Ca RMS beats PI with no runaway."""
    from jobs.assess import assess
    from jobs.train import train

    beaten: list[tuple[float, int]] = []

    def on_checkpoint(checkpoint: Path, progress: Any) -> None:
        if beaten:
            return
        kpis = assess(checkpoint, out=checkpoint.parent / "assessment").to_json()["kpis"]
        agent, baseline = kpis["agent"], kpis["baseline"]
        if agent["ca_rms"] < baseline["ca_rms"] and agent["runaway_count"] == 0:
            beaten.append((progress.wall_time_s, progress.env_steps))

    # The same training function as `invoke train`, with the benchmark's budget.
    summary = train(
        config,
        sets=[
            "trajectories.enabled=false",
            "stop.beats_baseline=false",  # the whole budget: does it still beat PI at its end?
            f"stop.max_wall_s={budget_s}",
            "stop.max_env_steps=null",
            "stop.target_return=null",
            f"checkpoints.every_iterations={check_every}",
        ],
        runs_root=runs_root,
        on_checkpoint=on_checkpoint,
    )
    return (beaten[0] if beaten else None), summary


def bench_control(quick: bool) -> Benchmark:
    budget_s = 45.0 if quick else 600.0
    check_every = 5 if quick else 20
    first, summary = _time_to_beat_pi(
        ROOT / "jobs" / "configs" / "cstr_ppo.yaml",
        budget_s,
        check_every,
        Path(tempfile.mkdtemp(prefix="aml-rl-control-")),
    )
    kpis = summary["assessment"]
    result = Benchmark(
        "control_quality",
        conditions=(
            f"default CSTR PPO config, {budget_s:.0f} s training budget, assessed every "
            f"{check_every} iterations on sims/lessons/cstr_scenarios.yaml"
        ),
    )
    result.add(
        "training time until Ca RMS beats PI",
        first[0] if first else None,
        "s",
        "PI baseline",
        "<= 600 s with 0 runaways",
        first is not None and first[0] <= 600,
    )
    result.add(
        "env steps until Ca RMS beats PI", first[1] if first else None, "steps", "PI baseline"
    )
    result.add("env steps in the budget", summary["env_steps_sampled"], "steps", "-")
    for key in ("return", "ca_rms", "t_rms", "max_T", "runaway_count"):
        result.add(f"policy {key}", kpis["agent"][key], "", f"PI: {kpis['baseline'][key]:.4g}")
    return result


# What the CSTR study searches: the keys the default config's comments say were tuned by hand.
