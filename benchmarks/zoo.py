"""The zoo benchmark: the default recipe on every zoo simulator and the CSTR, beside
Stable-Baselines3's PPO with its own defaults, both judged by the project's own assessment
on the same schedule, in env steps to the verdict (``jobs.verdict``)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.harness import Benchmark
from benchmarks.peer import ENVS as PEER_ENVS
from benchmarks.peer import available as sb3_available

ZOO = {
    "cstr": "cstr",
    "tank": "tank",
    "positioner": "positioner",
    "thermostat": "sims.thermostat:Thermostat",
    "balance": "balance",
}
"""Name in the benchmark -> simulator name. None of them has settings of its own."""
SEEDS = (0, 1, 2)
BUDGET = 1_000_000  # env steps per run: the target is to beat the baseline within it
BATCH = 4_000  # env steps per iteration: the recipe's train batch
ASSESS_EVERY = 10 * BATCH  # env steps: every 10 iterations, as the recipe assesses
QUICK_ITERATIONS = 2  # --quick: one assessment, after 2 iterations
PINNED_LAYOUT = [
    "env_runners.num_env_runners=1",
    "env_runners.num_envs_per_env_runner=8",
    "env_runners.sample_ahead=true",
]
"""The layout every figure here was taken with, on any machine (``auto``'s on this 2-CPU
machine): ``auto`` would size it from the machine's CPUs, and another layout draws other
random numbers (jobs/layout.py)."""
CONFIGS = Path(__file__).resolve().parents[1] / "jobs" / "configs"


def ours(
    name: str, sim: str, seed: int, budget: int, work: Path, sets: list[str] | None = None
) -> dict[str, Any]:
    """The simulator's config (``jobs/configs/<name>_ppo.yaml``: the recipe as ``invoke
    new-sim`` writes it, stopped on the verdict): env steps to the verdict."""
    from sims.scaffold import recipe_config

    work.mkdir(parents=True, exist_ok=True)
    config = CONFIGS / f"{name}_ppo.yaml"  # each is the recipe as new-sim writes it
    if not config.is_file():
        config = work / f"{name}_ppo.yaml"
        config.write_text(recipe_config(sim, config.stem))
    return to_verdict(config, seed, budget, work, sets)


def to_verdict(
    config: Path, seed: int, budget: int, work: Path, sets: list[str] | None = None
) -> dict[str, Any]:
    """Train ``config`` (with ``sets``) and ``seed`` until its stop criterion's verdict (or
    ``budget`` env steps, whatever the machine's load): the env steps (and seconds of
    training) to the first assessment that beat the baseline."""
    from jobs.train import train
    from jobs.verdict import beaten_at, training_seconds_to_verdict

    summary = train(
        config,
        sets=[
            f"seed={seed}",
            f"stop.max_env_steps={budget}",
            "stop.max_wall_s=null",  # env steps decide, whatever the machine's load
            "trajectories.enabled=false",
            *PINNED_LAYOUT,
            *(sets or []),
        ],
        runs_root=work / "runs",
    )
    return {
        "env_steps_to_verdict": beaten_at(summary),
        "seconds_to_verdict": training_seconds_to_verdict(summary),
        "env_steps": summary["env_steps_sampled"],
        "verdict": summary["verdict"],
    }


def peer(
    name: str, sim: str, seed: int, budget: int, assess_every: int = ASSESS_EVERY
) -> dict[str, Any]:
    """Stable-Baselines3's PPO with its defaults (``PPO("MlpPolicy", env)``) on the same
    environment, 8 envs, assessed every ``assess_every`` env steps against the margin the
    simulator's config asks of ours; stops at the first verdict."""
    from benchmarks import peer as sb3
    from jobs.config import load_config

    config = CONFIGS / f"{name}_ppo.yaml"
    margin = load_config(config).assessment.margin if config.is_file() else 0.0
    return sb3.train(sim, seed, budget, margin=margin, assess_every=assess_every)


def run_zoo(quick: bool, add: Any) -> str:
    """Every simulator, every seed, ours and the peer; ``add(name, value, unit, reference,
    target, met)`` records each figure. Returns the conditions text."""
    import torch

    torch.set_num_threads(1)  # the peer in one process on one thread, as users run it
    have_peer = sb3_available()
    zoo = {"tank": ZOO["tank"]} if quick else ZOO
    seeds, budget = ((0,), QUICK_ITERATIONS * BATCH) if quick else (SEEDS, BUDGET)
    # --quick runs the code path: both sides assessed once, at the end of that budget
    every = budget if quick else ASSESS_EVERY
    sets = [f"stop.assess_every_iterations={QUICK_ITERATIONS}"] if quick else []
    work = Path(tempfile.mkdtemp(prefix="aml-rl-zoo-"))
    records = []
    for name, sim in zoo.items():
        runs = []
        for seed in seeds:
            mine = ours(name, sim, seed, budget, work / f"{name}-{seed}", sets)
            theirs = peer(name, sim, seed, budget, every) if have_peer else None
            runs.append({"sim": name, "seed": seed, "ours": mine, "peer": theirs})
        records += runs
        add_figures(name, runs, budget, have_peer, add)
    (work / "zoo.json").write_text(json.dumps(records, indent=2, default=str))
    return (
        f"simulators {', '.join(zoo)}; seeds {', '.join(map(str, seeds))}; the default recipe "
        f"(sims/templates/config.yaml.tmpl, stop.beats_baseline, assessed every "
        f"{every // BATCH} iterations = {every:,} env steps; 1 env runner x 8 envs sampling "
        f"ahead, the default layout on a 2-CPU machine) against Stable-Baselines3 PPO with its "
        f"defaults, {PEER_ENVS} envs, assessed every {every:,} env steps by the same "
        f"assessment and verdict; {budget:,} env steps at most each; each of our seeds against "
        f"SB3's median over its seeds (seed numbers are not paired across libraries); records in "
        f"{work / 'zoo.json'}"
    )


def peer_needs(runs: list[dict[str, Any]]) -> float | None:
    """What SB3 needs on a simulator: the median over its seeds of the env steps to the
    verdict, a seed that never got there counted as never (None if most never did). Seeds are
    not paired across libraries (seed 1 of RLlib and of SB3 draw unrelated numbers), so each
    of our seeds is held against this, not against SB3's run of the same seed number."""
    counts = sorted(
        math.inf if (r["peer"] or {}).get("env_steps_to_verdict") is None
        else r["peer"]["env_steps_to_verdict"]
        for r in runs
    )  # fmt: skip
    if not counts:
        return None
    middle = len(counts) // 2
    median = counts[middle] if len(counts) % 2 else (counts[middle - 1] + counts[middle]) / 2
    return None if math.isinf(median) else median


def add_figures(
    name: str, runs: list[dict[str, Any]], budget: int, have_peer: bool, add: Any
) -> None:
    """One simulator's rows: each seed's env steps to the verdict against SB3's median over
    the same seeds (and its run of that seed, for reference), and the KPI at the verdict."""
    needs = peer_needs(runs) if have_peer else None
    for run in runs:
        seed, mine, theirs = run["seed"], run["ours"], run["peer"] or {}
        steps = mine["env_steps_to_verdict"]
        no_more = None if not have_peer else steps is not None and (needs is None or steps <= needs)
        reference = (
            f"SB3 PPO median of seeds: {_steps(needs)} (its seed {seed}: "
            f"{_steps(theirs.get('env_steps_to_verdict'))})"
            if have_peer
            else "SB3 PPO: not installed"
        )
        add(
            f"{name} seed {seed}: env steps to beat the baseline (ours)",
            steps,
            "steps",
            reference,
            f"<= {budget:,} and <= SB3's median",
            steps is not None and steps <= budget and (no_more is not False),
        )
        verdict = mine["verdict"] or {}
        if verdict:
            add(
                f"{name} seed {seed}: {verdict['kpi']} at the verdict (ours)",
                verdict["agent"],
                verdict.get("unit", ""),
                f"baseline: {verdict['baseline']:.4g}",
                "0 constraint violations",
                not verdict["violations"],
            )


def _steps(value: float | None) -> str:
    return "not reached" if value is None else f"{value:,.0f}"


def bench_zoo(quick: bool) -> Benchmark:
    """The default recipe on every zoo simulator and the CSTR, three seeds, beside SB3's PPO:
    env steps to the verdict."""
    result = Benchmark("zoo")
    result.conditions = run_zoo(quick, result.add)
    return result
