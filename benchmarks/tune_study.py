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
    over the space ``invoke new-sim`` writes, its first trial the config as given, confirmed
    on three seeds the study did not use (``--confirm-seeds``): env steps to the verdict, as
    the zoo counts them (benchmarks/zoo.py)."""
    import yaml

    from jobs.tune.run import run_study
    from sims.scaffold import recipe_space

    # --quick checks the path: the config as given only (its confirmation is tested apart)
    samples, cap = (1, 8_000) if quick else (8, 320_000)
    seeds = [1] if quick else [1, 2, 3]
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
        scheduler="fifo", runs_root=work / "runs", confirm_seeds=seeds,
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
            f"{cap:,} env steps (seed 0); then the best config and the config as given trained "
            f"on seeds {', '.join(map(str, seeds))} to the verdict, as capped (the study's "
            f"--confirm-seeds); records in {work}"
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
    confirmation = study.get("confirmation")
    if confirmation is None:  # nothing sampled did better: there is nothing to confirm
        result.add(
            "a config faster to the verdict than the default", None, "", "the study",
            "found", False,
        )  # fmt: skip
        return result
    for name, key in (("config as given", "given_steps"), ("best", "best_steps")):
        for seed, steps in zip(seeds, confirmation[key], strict=True):
            result.add(
                f"seed {seed}: env steps to the verdict ({name})", steps, "steps",
                f"not reached = not within {cap:,}",
            )  # fmt: skip
    result.add(
        "the study's lead confirmed on the other seeds (median env steps to the verdict)",
        float(confirmation["confirmed"]), "", confirmation["said"],
        "confirmed: the study found a faster config", confirmation["confirmed"],
    )  # fmt: skip
    return result
