"""`invoke bench --only tune`: a study on the CSTR over the space new-sim writes, in the
verdict's terms."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.harness import (
    ROOT,
    Benchmark,
)


def bench_tune(quick: bool) -> Benchmark:
    """A study on the simulator the default recipe is slowest on (the CSTR, in the zoo),
    over the space ``invoke new-sim`` writes, its first trial the config as given; then the
    default and the study's best each trained on three seeds the study did not use: env
    steps to the verdict, as the zoo counts them (benchmarks/zoo.py)."""
    import yaml

    from benchmarks.zoo import BUDGET, to_verdict
    from jobs.tune.run import run_study
    from sims.scaffold import recipe_space

    samples, cap = (2, 8_000) if quick else (8, 320_000)
    seeds = () if quick else (1, 2, 3)
    work = Path(tempfile.mkdtemp(prefix="aml-rl-tune-"))
    default = ROOT / "jobs" / "configs" / "cstr_ppo.yaml"
    base = yaml.safe_load(default.read_text())
    base["stop"].update(max_env_steps=cap, max_wall_s=None)  # env steps decide, not the load
    base["trajectories"] = {"enabled": False}
    (work / "cstr.yaml").write_text(yaml.safe_dump(base))
    space = recipe_space("cstr")
    (work / "space.yaml").write_text(space)
    study = run_study(
        space=work / "space.yaml", config=work / "cstr.yaml", samples=samples,
        scheduler="fifo", runs_root=work / "runs",
    )  # fmt: skip
    best = study["best"]
    given = next((t for t in study["trials"] if t["given"]), None)
    keys = list(yaml.safe_load(space))
    result = Benchmark(
        "tune",
        conditions=(
            f"CSTR (the zoo member the default recipe needs most env steps on), study of "
            f"{samples} trials over the space new-sim writes ({', '.join(keys)}), FIFO, the "
            f"first trial the config as given, each trial stopped on the verdict or at "
            f"{cap:,} env steps (seed 0); then the default and the best config trained on "
            f"seeds {', '.join(map(str, seeds)) or '-'} to the verdict ({BUDGET:,} env steps "
            f"at most); records in {work}"
        ),
    )
    result.add("trials run", len(study["trials"]), "trials", f"{samples} sampled")
    beat = sum(t["beaten_at"] is not None for t in study["trials"])
    result.add("trials that beat the baseline", beat, "trials", f"within {cap:,} env steps")
    if given is not None:
        result.add(
            "config as given: env steps to the verdict (study)", given["beaten_at"], "steps",
            f"{given['trial']}",
        )  # fmt: skip
    result.add(
        "best trial: env steps to the verdict (study)", best["beaten_at"], "steps", best["trial"]
    )
    for key, value in best["params"].items():
        result.add(
            f"best {key}", value, "", "default: " + str((given or {}).get("params", {}).get(key))
        )
    best_config = work / "runs" / "cstr_ppo" / study["study"] / "best.yaml"
    if best["given"]:  # nothing sampled did better: there is nothing to check on other seeds
        result.add(
            "a config faster to the verdict than the default", None, "", "the study",
            "found", False,
        )  # fmt: skip
        return result
    steps: dict[str, list[int | None]] = {"default": [], "best": []}
    for seed in seeds:
        for name, config in (("default", default), ("best", best_config)):
            found = to_verdict(config, seed, BUDGET, work / f"{name}-{seed}")
            steps[name].append(found["env_steps_to_verdict"])
            result.add(
                f"seed {seed}: env steps to the verdict ({name} config)",
                found["env_steps_to_verdict"], "steps", "not reached = did not beat it",
            )  # fmt: skip
    if seeds and None not in steps["default"] + steps["best"]:
        ratio = sum(steps["best"]) / sum(steps["default"])  # type: ignore[arg-type]
        result.add(
            f"best / default env steps to the verdict, seeds {', '.join(map(str, seeds))}",
            ratio, "x", "default config, same run", "< 1: the study found a faster config",
            ratio < 1,
        )  # fmt: skip
    return result
