"""`invoke bench --only sample_ahead`: PPO taking turns against PPO sampling ahead (the
default, ``env_runners.sample_ahead``, jobs.sample_ahead) on the CSTR, in env steps and
seconds of training to the verdict, the same seeds side by side in one run."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.harness import ROOT, Benchmark
from benchmarks.zoo import to_verdict
from jobs.verdict import median_or_never

CONFIG = ROOT / "jobs" / "configs" / "cstr_ppo.yaml"
VARIANTS = {"takes turns": ["env_runners.sample_ahead=false"], "samples ahead (the default)": []}
SEEDS = (0, 1, 2)
BUDGET = 1_000_000


def bench_sample_ahead(quick: bool) -> Benchmark:
    return race("sample_ahead", VARIANTS, quick)


def race(name: str, variants: dict[str, list[str]], quick: bool) -> Benchmark:
    """Each variant (settings on the default CSTR config) against the first, to the verdict,
    the same seeds side by side."""
    import torch

    torch.set_num_threads(1)  # as `invoke train` runs its learner
    # --quick runs the code path only (two iterations, no assessment): the suite's time
    seeds, budget = ((0,), 8_000) if quick else (SEEDS, BUDGET)
    result = Benchmark(
        name,
        conditions=(
            f"jobs/configs/cstr_ppo.yaml (1 env runner x 8 envs, sampling ahead unless a variant "
            f"says otherwise), seeds "
            f"{', '.join(map(str, seeds))}, each variant to its verdict (assessed every 40,000 "
            f"env steps) or {budget:,} env steps; seconds are training time, assessments "
            "excluded"
        ),
    )
    work = Path(tempfile.mkdtemp(prefix=f"aml-rl-{name}-"))
    found: dict[str, dict[str, list[float | None]]] = {}
    for seed in seeds:
        for number, (variant, sets) in enumerate(variants.items()):
            record = to_verdict(CONFIG, seed, budget, work / f"{seed}-{number}", sets)
            into = found.setdefault(variant, {"steps": [], "seconds": []})
            into["steps"].append(record["env_steps_to_verdict"])
            into["seconds"].append(record["seconds_to_verdict"])
            result.add(
                f"{variant}, seed {seed}: env steps to the verdict",
                record["env_steps_to_verdict"],
                "steps",
                "the other variant, same seed",
            )
            result.add(
                f"{variant}, seed {seed}: seconds of training to the verdict",
                record["seconds_to_verdict"],
                "s",
                "the other variant, same seed",
            )
    result.reading = reading(found, variants)
    medians = {v: {k: median_or_never(x) for k, x in runs.items()} for v, runs in found.items()}
    first, *others = variants
    for other in others:
        for key, unit in (("steps", "env steps"), ("seconds", "seconds")):
            a, b = medians[other][key], medians[first][key]
            result.add(
                f"{other} / {first}, median {unit} to the verdict",
                a / b if a is not None and b is not None else None,
                "x",
                f"{first}, same run",
            )
    return result


def reading(found: dict[str, dict[str, list[float | None]]], variants: dict) -> str:
    """The race in one sentence, from its figures."""
    first, other = list(variants)[:2]
    turns, ahead = (found[name] for name in (first, other))
    reached = sum(value is not None for value in ahead["steps"])
    steps, seconds = (median_or_never(ahead[k]) for k in ("steps", "seconds"))
    steps0, seconds0 = (median_or_never(turns[k]) for k in ("steps", "seconds"))
    if None in (steps, seconds, steps0, seconds0):
        return (
            f"{other.capitalize()} reached the verdict on {reached} of {len(ahead['steps'])} seeds."
        )
    return (
        f"{other.capitalize()} reached the verdict on {reached} of {len(ahead['steps'])} seeds, in "
        f"{seconds / seconds0:.2f}x the training seconds and {steps / steps0:.2f}x the env steps "
        f"of {first!r} (medians)."
    )
