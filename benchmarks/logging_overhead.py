"""`invoke bench --only trajectory_logging_overhead`: off, ours, and a CSV logger
written the way the published samples write one."""

from __future__ import annotations

import functools
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    Benchmark,
)
from benchmarks.throughput import _algo, _rate, reference_csv_logger


def bench_logging_overhead(quick: bool) -> Benchmark:
    import ray

    from jobs.callbacks import TrajectoryLogger

    repeats, iterations = (1, 1) if quick else (5, 8)
    folder = Path(tempfile.mkdtemp(prefix="aml-rl-bench-"))
    variants: dict[str, Callable[[], Any]] = {
        "off": lambda: None,
        "project": lambda: functools.partial(
            TrajectoryLogger,
            folder=str(folder / "parquet"),
            sim="cstr",
            run_id="bench",
            session="b",
        ),
        "reference CSV": lambda: reference_csv_logger(str(folder / "reference.csv")),
    }
    ray.init(include_dashboard=False, logging_level="ERROR", ignore_reinit_error=True)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    sets = [
        "env_runners.num_env_runners=1",
        "env_runners.num_envs_per_env_runner=8",
        f"training.train_batch_size={1000 if quick else 4000}",
    ]
    for _ in range(repeats):
        for name, make in variants.items():  # interleaved: off, project, reference, off, ...
            algo = _algo(sets, make())
            rates[name].append(_rate(algo, iterations))
            algo.stop()
    off = statistics.median(rates["off"])
    result = Benchmark(
        "trajectory_logging_overhead",
        conditions=(
            f"{repeats} interleaved repeats x {iterations} iterations, 1 runner x 8 envs; "
            "every episode logged"
        ),
    )
    result.add("env steps/s, logging off", off, "steps/s", "-")
    # How far apart identical runs land here: overheads inside this spread are noise.
    spread = 100.0 * (max(rates["off"]) - min(rates["off"])) / off
    result.add("spread of the logging-off repeats (max - min)", spread, "%", "logging off")
    for name in ("project", "reference CSV"):
        overhead = 100.0 * (1.0 - statistics.median(rates[name]) / off)
        target = "<= 5%" if name == "project" else ""
        result.add(
            f"overhead, {name} logger",
            overhead,
            "%",
            "logging off",
            target,
            overhead <= 5.0 if name == "project" else None,
        )
    return result
