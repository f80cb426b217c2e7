"""`invoke bench --only startup`: a training run's start-up time and its shares."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import (
    ROOT,
    Benchmark,
)


# -- 6. start-up ---------------------------------------------------------------------------
def bench_startup(quick: bool) -> Benchmark:
    runs = Path(tempfile.mkdtemp(prefix="aml-rl-startup-"))
    spawn = time.time()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.train",
            "--smoke",
            "--runs-dir",
            str(runs),
            "--set",
            "assessment.enabled=false",
            "--set",
            "stop.beats_baseline=false",  # it assesses; start-up is measured without it
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(
            "start-up benchmark: smoke training failed:\n"
            f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    (summary,) = runs.rglob("summary.json")
    t = json.loads(summary.read_text())["timeline"]
    total = t["first_iteration"] - spawn
    result = Benchmark(
        "startup",
        conditions="`python -m jobs.train --smoke`, from process spawn to the first iteration",
    )
    result.add("spawn to first iteration", total, "s", "-")
    parts = {
        "importing (Python, Ray, RLlib, torch) and validating the config": t["prepared"] - spawn,
        "starting Ray": t["ray_started"] - t["prepared"],
        "building the algorithm (env runners, learner)": t["algorithm_built"] - t["ray_started"],
        "first iteration": t["first_iteration"] - t["algorithm_built"],
    }
    for name, seconds in parts.items():
        result.add(f"share: {name}", 100.0 * seconds / total, "%", "spawn to first iteration")
    return result
