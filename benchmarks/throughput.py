"""`invoke bench --only training_throughput`: env steps/s for several env-runner
layouts."""

from __future__ import annotations

import csv
import os
import time
from typing import Any

from benchmarks.harness import (
    ROOT,
    Benchmark,
)


# -- 2, 3: training throughput and trajectory-logging overhead -----------------------------
def reference_csv_logger(path: str) -> type:
    """How the published samples log: per batch, reopen a CSV, check its header, append rows."""
    from ray.rllib.callbacks.callbacks import RLlibCallback

    class ReferenceCsvLogger(RLlibCallback):
        def on_episode_end(self, *, episode, env_runner=None, prev_episode_chunks=None, **kwargs):
            chunks = [*(prev_episode_chunks or []), episode]
            rows = []
            for chunk in chunks:
                for info, reward in zip(chunk.get_infos()[1:], chunk.get_rewards(), strict=False):
                    rows.append({**info["states"], **info["action"], "reward": float(reward)})
            if not rows:
                return
            header = list(rows[0])
            exists = os.path.exists(path)
            if exists:
                with open(path, newline="") as fh:
                    if next(csv.reader(fh), None) != header:
                        raise ValueError("CSV header changed")
            with open(path, "a", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=header)
                if not exists:
                    writer.writeheader()
                writer.writerows(rows)

    return ReferenceCsvLogger


def _rate(algo: Any, iterations: int) -> float:
    algo.train()  # warm-up: the first iteration includes compilation and actor start-up
    steps_before = algo.train()["num_env_steps_sampled_lifetime"]
    start = time.perf_counter()
    last = steps_before
    for _ in range(iterations):
        last = algo.train()["num_env_steps_sampled_lifetime"]
    return (last - steps_before) / (time.perf_counter() - start)


def _algo(sets: list[str], callbacks: Any) -> Any:
    from jobs.algorithms import algorithm_config
    from jobs.config import load_config

    cfg = load_config(ROOT / "jobs" / "configs" / "cstr_ppo.yaml", sets)
    return algorithm_config(cfg, callbacks).build_algo()


def bench_throughput(quick: bool) -> Benchmark:
    import ray

    layouts = [(1, 8)] if quick else [(0, 8), (1, 4), (1, 8), (2, 4)]
    iterations = 1 if quick else 5
    batch = 1000 if quick else 4000
    result = Benchmark(
        "training_throughput",
        conditions=(
            f"default CSTR PPO config, train batch {batch}, {iterations} timed iterations "
            f"after 2 warm-up, {os.cpu_count()} CPUs"
        ),
    )
    ray.init(include_dashboard=False, logging_level="ERROR", ignore_reinit_error=True)
    rates = {}
    for runners, envs in layouts:
        sets = [
            f"env_runners.num_env_runners={runners}",
            f"env_runners.num_envs_per_env_runner={envs}",
            f"training.train_batch_size={batch}",
            "training.minibatch_size=500",
        ]
        algo = _algo(sets, None)
        rates[(runners, envs)] = _rate(algo, iterations)
        algo.stop()
        result.add(
            f"env steps/s, {runners} runner(s) x {envs} envs",
            rates[(runners, envs)],
            "steps/s",
            "other layouts",
        )
    best = max(rates, key=rates.get)
    result.add(
        f"best layout: {best[0]} runner(s) x {best[1]} envs",
        rates[best],
        "steps/s",
        "MACHINE.md: PPO CartPole ~2,800",
        ">= 2,000",
        rates[best] >= 2000,
    )
    return result
