"""`invoke bench --only sample_ahead`: PPO taking turns (the default) against PPO sampling
ahead (``env_runners.sample_ahead``, jobs.sample_ahead) on the CSTR, in env steps and
seconds of training to the verdict, the same seeds side by side in one run."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from benchmarks.harness import ROOT, Benchmark
from benchmarks.zoo import to_verdict

CONFIG = ROOT / "jobs" / "configs" / "cstr_ppo.yaml"
VARIANTS = {"takes turns (the default)": [], "samples ahead": ["env_runners.sample_ahead=true"]}
SEEDS = (0, 1, 2)
BUDGET = 1_000_000


def _median(values: list[float | None]) -> float | None:
    """The median, a run that never reached the verdict counting as never (None)."""
    if any(value is None for value in values):
        ordered = sorted(values, key=lambda v: float("inf") if v is None else v)
        middle = ordered[len(ordered) // 2]
        return None if middle is None else float(middle)
    return float(statistics.median(values))  # type: ignore[type-var]


def bench_sample_ahead(quick: bool) -> Benchmark:
    import torch

    torch.set_num_threads(1)  # as `invoke train` runs its learner
    seeds, budget = ((0,), 40_000) if quick else (SEEDS, BUDGET)
    result = Benchmark(
        "sample_ahead",
        conditions=(
            f"jobs/configs/cstr_ppo.yaml (1 env runner x 8 envs), seeds "
            f"{', '.join(map(str, seeds))}, each variant to its verdict (assessed every 40,000 "
            f"env steps) or {budget:,} env steps; seconds are training time, assessments "
            "excluded"
        ),
    )
    work = Path(tempfile.mkdtemp(prefix="aml-rl-sample-ahead-"))
    found: dict[str, dict[str, list[float | None]]] = {}
    for seed in seeds:
        for name, sets in VARIANTS.items():
            record = to_verdict(CONFIG, seed, budget, work / f"{seed}-{len(sets)}", sets)
            into = found.setdefault(name, {"steps": [], "seconds": []})
            into["steps"].append(record["env_steps_to_verdict"])
            into["seconds"].append(record["seconds_to_verdict"])
            result.add(
                f"{name}, seed {seed}: env steps to the verdict",
                record["env_steps_to_verdict"],
                "steps",
                "the other variant, same seed",
            )
            result.add(
                f"{name}, seed {seed}: seconds of training to the verdict",
                record["seconds_to_verdict"],
                "s",
                "the other variant, same seed",
            )
    medians = {name: {k: _median(v) for k, v in runs.items()} for name, runs in found.items()}
    turns, ahead = (medians[name] for name in VARIANTS)
    result.reading = reading(found)
    for key, unit in (("steps", "env steps"), ("seconds", "seconds")):
        ratio = (
            ahead[key] / turns[key] if ahead[key] is not None and turns[key] is not None else None
        )
        result.add(
            f"samples ahead / takes turns, median {unit} to the verdict",
            ratio,
            "x",
            "takes turns (the default), same run",
        )
    return result


def reading(found: dict[str, dict[str, list[float | None]]]) -> str:
    """The race in one sentence, from its figures."""
    turns, ahead = (found[name] for name in VARIANTS)
    reached = sum(value is not None for value in ahead["steps"])
    steps, seconds = (_median(ahead[k]) for k in ("steps", "seconds"))
    steps0, seconds0 = (_median(turns[k]) for k in ("steps", "seconds"))
    if None in (steps, seconds, steps0, seconds0):
        return f"Sampling ahead reached the verdict on {reached} of {len(ahead['steps'])} seeds."
    return (
        f"Sampling ahead reached the verdict on {reached} of {len(ahead['steps'])} seeds, in "
        f"{seconds / seconds0:.2f}x the default's training seconds and {steps / steps0:.2f}x its "
        "env steps (medians): faster on this machine's two cores, at the price of env steps."
    )
