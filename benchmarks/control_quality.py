"""`invoke bench --only control_quality`: env steps and seconds of training until the
default CSTR config first beats PI, beside Stable-Baselines3's PPO on the same environment,
all judged by the same assessment and verdict on the same schedule, each to the end of the
same budget (does it still beat PI there?)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import peer
from benchmarks.harness import ROOT, Benchmark
from jobs.verdict import median_or_never

CONFIG = ROOT / "jobs" / "configs" / "cstr_ppo.yaml"
SEEDS = (0, 1, 2)
BUDGET = 400_000  # env steps: the reference, the config before the recipe at 400k
OURS = "ours (the default config)"
PEER_DEFAULTS = "SB3 PPO, its defaults"
PEER_RECIPE = "SB3 PPO, the recipe's hyperparameters"


def ours(seed: int, budget: int, assess_every: int, sets: list[str], work: Path) -> dict:
    """``jobs/configs/cstr_ppo.yaml`` as ``invoke train`` runs it (its layout, its margin),
    to the end of ``budget``, assessed at a checkpoint every ``assess_every`` env steps."""
    from jobs.assess import assess
    from jobs.config import load_config
    from jobs.train import train
    from jobs.verdict import decide
    from sims.registry import resolve

    cfg = load_config(CONFIG, sets)
    handle = resolve(cfg.sim)
    verdicts: list[dict[str, Any]] = []
    assessing = [0.0]

    def on_checkpoint(checkpoint: Path, progress: Any) -> None:
        began = time.perf_counter()
        result = assess(checkpoint, out=checkpoint.parent / "assessment")
        verdict = decide(result.to_json(), handle, cfg.assessment.margin)
        training_s = progress.wall_time_s - assessing[0]
        verdicts.append(
            {"env_steps": progress.env_steps, "training_s": training_s, **verdict.to_json()}
        )
        assessing[0] += time.perf_counter() - began

    train(
        CONFIG,
        sets=[
            *sets,
            f"seed={seed}",
            "trajectories.enabled=false",
            "assessment.enabled=false",  # the hook assesses every checkpoint, the last included
            "stop.beats_baseline=false",  # the whole budget: does it still beat PI at its end?
            f"stop.max_env_steps={budget}",
            "stop.max_wall_s=null",
            f"checkpoints.every_iterations={assess_every // cfg.training.train_batch_size}",
        ],
        runs_root=work / "runs",
        on_checkpoint=on_checkpoint,
    )
    return peer.first_verdict(verdicts)


def bench_control(quick: bool) -> Benchmark:
    import torch

    from jobs.config import load_config

    torch.set_num_threads(1)  # as `invoke train` runs its learner, and as the peer runs
    # --quick runs the code path: one seed, 1,000-step batches, two assessments
    seeds, budget, assess_every = ((0,), 4_000, 2_000) if quick else (SEEDS, BUDGET, 40_000)
    sets = ["training.train_batch_size=1000", "training.minibatch_size=100"] if quick else []
    cfg = load_config(CONFIG, sets)
    margin = cfg.assessment.margin
    variants = [OURS]
    if peer.available():
        variants += [PEER_DEFAULTS, PEER_RECIPE]
    work = Path(tempfile.mkdtemp(prefix="aml-rl-control-"))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for seed in seeds:  # the variants of one seed one after the other: the same load
        runs[OURS].append(ours(seed, budget, assess_every, sets, work / f"ours-{seed}"))
        if peer.available():
            for name, kwargs in (
                (PEER_DEFAULTS, None),
                (PEER_RECIPE, peer.recipe_kwargs(cfg.training)),
            ):
                runs[name].append(peer.train(
                    cfg.sim, seed, budget, margin=margin, ppo_kwargs=kwargs,
                    to_the_end=True, assess_every=assess_every,
                ))  # fmt: skip
    result = Benchmark(
        "control_quality",
        conditions=(
            f"CSTR: jobs/configs/cstr_ppo.yaml as `invoke train` runs it (its auto layout, "
            f"{cfg.assessment.margin:.0%} margin) against Stable-Baselines3's PPO with its "
            f"defaults and with the recipe's hyperparameters ({peer.ENVS} envs, one process, "
            f"one torch thread), on the same environment; seeds {', '.join(map(str, seeds))}, "
            f"the variants of a seed one after the other; each trained {budget:,} env steps, "
            f"assessed every {assess_every:,} on sims/lessons/cstr_scenarios.yaml by the same "
            f"assessment and verdict; seconds are training time, assessments excluded"
        ),
    )
    medians: dict[str, dict[str, float | None]] = {}
    for name in variants:
        for seed, run in zip(seeds, runs[name], strict=True):
            end = run["verdict"] or {}
            result.add(
                f"{name}, seed {seed}: env steps to beat PI",
                run["env_steps_to_verdict"],
                "steps",
                "the others, same seed",
            )
            result.add(
                f"{name}, seed {seed}: seconds of training to beat PI",
                run["seconds_to_verdict"],
                "s",
                "the others, same seed",
            )
            result.add(
                f"{name}, seed {seed}: ca_rms at the end of the budget",
                end.get("agent"),
                "kmol/m3",
                f"PI: {end['baseline']:.4g}; {'beats' if end.get('beats') else 'does NOT beat'} it"
                if end else "PI",
            )  # fmt: skip
        medians[name] = {
            key: median_or_never([run[key] for run in runs[name]])
            for key in ("env_steps_to_verdict", "seconds_to_verdict")
        }
    mine = medians[OURS]
    for name in variants[1:]:
        for key, what, unit, sooner in (
            ("seconds_to_verdict", "seconds", "s", True),
            ("env_steps_to_verdict", "env steps", "env steps", False),
        ):
            a, b = mine[key], medians[name][key]
            result.add(
                f"median {what} to beat PI: ours / {name}",
                a / b if a is not None and b is not None else None,
                "x",
                f"{name}: {_text(b, unit)}",
                "< 1 (sooner)" if sooner else "",
                (a is not None and (b is None or a < b)) if sooner else None,
            )
    result.add(
        "median seconds to beat PI, ours",
        mine["seconds_to_verdict"],
        "s",
        "this machine, the load above",
        "<= 30 s",
        mine["seconds_to_verdict"] is not None and mine["seconds_to_verdict"] <= 30,
    )
    for name in variants:
        still = sum(bool((run["verdict"] or {}).get("beats")) for run in runs[name])
        result.add(
            f"{name}: seeds that beat PI at the end of the budget",
            still,
            "seeds",
            f"of {len(seeds)}",
            f"{len(seeds)} of {len(seeds)}" if name == OURS else "",
            still == len(seeds) if name == OURS else None,
        )
    return result


def _text(value: float | None, unit: str) -> str:
    return "never within the budget" if value is None else f"{value:,.0f} {unit}"
