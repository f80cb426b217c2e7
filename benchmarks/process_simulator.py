"""`invoke bench --only process_simulator`: a C simulator's step and training rate
against Python's."""

from __future__ import annotations

import functools
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import (
    ROOT,
    Benchmark,
    percentiles,
)
from benchmarks.throughput import _rate


def bench_process_sim(quick: bool) -> Benchmark:
    """The C Simple Adder as a process simulator against the in-process Python one: the
    protocol's round trip per step, and training throughput with the same config."""
    import shutil

    import ray

    from jobs.algorithms import algorithm_config
    from jobs.config import load_config
    from sims.package import use_package
    from sims.registry import resolve

    result = Benchmark("process_simulator")
    if shutil.which("cc") is None:
        result.skipped = "no C compiler (cc) to build sims/native/simple_adder.c"
        return result
    package = Path(tempfile.mkdtemp(prefix="aml-rl-adder-c-"))
    subprocess.run(
        ["cc", "-O2", "-o", str(package / "simple_adder"),
         str(ROOT / "sims" / "native" / "simple_adder.c"), "-lm"],
        check=True,
    )  # fmt: skip
    use_package(package)  # for the environments made here; the env runners get it below
    steps = 2000 if quick else 20000
    action = np.array([0.1], dtype=np.float32)
    for sim, label in (("simple_adder_c", "C process"), ("simple_adder", "Python in process")):
        env = resolve(sim).make_env()
        env.reset(seed=0)
        for _ in range(200):  # warm-up (and the process's start)
            if any(env.step(action)[2:4]):
                env.reset()
        seconds = []
        for _ in range(steps):
            start = time.perf_counter()
            _, _, terminated, truncated, _ = env.step(action)
            seconds.append(time.perf_counter() - start)
            if terminated or truncated:
                env.reset()
        env.close()
        p50, p99 = percentiles(seconds)  # milliseconds
        result.add(f"env.step p50, {label}", p50 * 1e3, "µs", "the other simulator")
        result.add(f"env.step p99, {label}", p99 * 1e3, "µs", "the other simulator")

    # a vector of 4 C simulators: all requests, then all answers, against one by one
    import gymnasium as gym

    from sims.registry import RLlibEnv

    config = {"sim": "simple_adder_c", "lessons": None, "lesson": 0}
    vectors = {
        "pipelined": RLlibEnv({**config, "num_envs": 4}),
        "one by one (gymnasium SyncVectorEnv)": gym.vector.SyncVectorEnv(
            [functools.partial(RLlibEnv, config)] * 4
        ),
    }
    actions = np.zeros((4, 1), dtype=np.float32)
    for label, vector in vectors.items():
        vector.reset(seed=0)
        seconds = []
        for _ in range(steps // 4):
            start = time.perf_counter()
            vector.step(actions)
            seconds.append(time.perf_counter() - start)
        vector.close()
        result.add(
            f"vector step p50, 4 C processes, {label}", percentiles(seconds)[0] * 1e3, "µs",
            "the other way",
        )  # fmt: skip

    ray.init(include_dashboard=False, logging_level="ERROR", ignore_reinit_error=True)
    iterations = 1 if quick else 5
    rates = {}
    for sim in ("simple_adder", "simple_adder_c"):
        cfg = load_config(
            ROOT / "jobs" / "configs" / "simple_adder_ppo.yaml",
            [f"sim={sim}", "env_runners.num_env_runners=1", "env_runners.num_envs_per_env_runner=4",
             "training.train_batch_size=4000", f"sim_package={package}"],
        )  # fmt: skip
        algo = algorithm_config(cfg, None).build_algo()
        rates[sim] = _rate(algo, iterations)
        algo.stop()
        result.add(f"training env steps/s, {sim}", rates[sim], "steps/s", "-")
    ratio = rates["simple_adder_c"] / rates["simple_adder"]
    result.add(
        "C process / in-process Python throughput", ratio, "x",
        "in-process Python Simple Adder, same config, same run", ">= 0.8", ratio >= 0.8,
    )  # fmt: skip
    result.conditions = (
        f"{steps:,} timed env.step calls after 200 warm-up; training: simple_adder_ppo.yaml, "
        f"1 env runner x 4 envs, train batch 4000, {iterations} timed iterations after 2 "
        "warm-up"
    )
    return result
