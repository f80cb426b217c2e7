"""`invoke bench --only warm_start`: the default recipe from scratch against the same recipe
started from the baseline (``training.warm_start_steps``, jobs.warm_start) on the CSTR, in
env steps and seconds of training to the verdict, the same seeds side by side."""

from __future__ import annotations

from benchmarks.harness import Benchmark
from benchmarks.sample_ahead import race

STEPS = 500  # fitting updates: about 35 passes over the 20 baseline episodes' 1,800 steps
VARIANTS = {
    "from scratch (the default)": [],
    f"warm start ({STEPS} updates on the baseline)": [f"training.warm_start_steps={STEPS}"],
}


def bench_warm_start(quick: bool) -> Benchmark:
    return race("warm_start", VARIANTS, quick)
