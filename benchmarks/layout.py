"""`invoke bench --only layout`: the ``auto`` layout against every explicit layout of the
throughput benchmark, side by side in rounds, on this machine."""

from __future__ import annotations

import os
import statistics

from benchmarks.harness import Benchmark
from benchmarks.throughput import _algo, _layout_sets, _rate

EXPLICIT = {
    "1 runner x 8 envs, taking turns": (1, 8),
    "0 runners x 8 envs": (0, 8),
    "2 runners x 4 envs, taking turns": (2, 4),
}
AUTO = "auto (the default, sampling ahead where it can)"


def bench_layout(quick: bool) -> Benchmark:
    """Every layout once per round, five rounds, medians (this machine drifts by tens of
    percent within minutes); target: ``auto`` within 5% of the fastest."""
    import ray
    import torch

    from jobs.config import DEFAULT_CONFIG, load_config
    from jobs.layout import ray_nodes, resolve_layout

    torch.set_num_threads(1)  # as `invoke train` runs its learner
    rounds, iterations, batch = (1, 1, 1000) if quick else (5, 3, 4000)
    sizes = [f"training.train_batch_size={batch}"]
    layouts = {"1 runner x 8 envs, taking turns": (1, 8)} if quick else EXPLICIT
    variants = {AUTO: sizes} | {
        name: [*sizes, *_layout_sets(shape)] for name, shape in layouts.items()
    }
    ray.init(include_dashboard=False, logging_level="ERROR", ignore_reinit_error=True)
    chosen = resolve_layout(load_config(DEFAULT_CONFIG, sizes), ray_nodes())
    result = Benchmark(
        "layout",
        conditions=(
            f"default CSTR PPO config, train batch {batch}, {iterations} timed iteration(s) "
            f"after 2 warm-up, {rounds} round(s) of every layout, medians; {os.cpu_count()} "
            f"CPUs; auto chose: {chosen.describe()}"
        ),
    )
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, sets in variants.items():
            algo = _algo(sets, None)
            rates[name].append(_rate(algo, iterations))
            algo.stop()
    median = {name: statistics.median(values) for name, values in rates.items()}
    for name, value in median.items():
        result.add(f"env steps/s, {name}", value, "steps/s", "the others, same rounds")
    fastest = max(median, key=median.get)
    ratio = median[AUTO] / median[fastest]
    result.add(
        f"auto / the fastest ({fastest})", ratio, "x", "the fastest layout's median",
        ">= 0.95x", ratio >= 0.95,
    )  # fmt: skip
    return result
