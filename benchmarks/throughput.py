"""`invoke bench --only training_throughput`: env steps/s for several env-runner
layouts."""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
import time
from collections import Counter
from typing import Any

from benchmarks import peer
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

    cfg = load_config(CONFIG, sets)
    return algorithm_config(cfg, callbacks).build_algo()


CONFIG = ROOT / "jobs" / "configs" / "cstr_ppo.yaml"


@dataclasses.dataclass
class PeerRun:
    """Stable-Baselines3's PPO over a number of batches: its env steps/s, and its seconds per
    batch in each of its two phases, which take turns in one process."""

    rate: float
    collect_s: float
    """Seconds to collect one batch: its envs' steps, its policy's inference, its buffer."""
    train_s: float
    """Seconds to train on one batch: every epoch and minibatch."""


def peer_run(sets: list[str], steps: int) -> PeerRun | None:
    """Stable-Baselines3's PPO with the config's own hyperparameters
    (:func:`benchmarks.peer.recipe_kwargs`) on the environment the env runners step
    (``sims.registry.RLlibEnv``, reward scaling included), 8 envs in its DummyVecEnv, in this
    process on one torch thread, over ``steps`` after one warm-up rollout. None without the
    bench extra."""
    if not peer.available():
        return None
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from jobs.algorithms import algorithm_config
    from jobs.config import load_config
    from sims.registry import RLlibEnv

    cfg = load_config(CONFIG, sets)
    env_config = algorithm_config(cfg, None).env_config
    vec = make_vec_env(lambda: RLlibEnv(env_config), n_envs=peer.ENVS, seed=cfg.seed)
    try:
        kwargs = peer.recipe_kwargs(cfg.training)
        model = PPO("MlpPolicy", vec, seed=cfg.seed, device="cpu", verbose=0, **kwargs)
        model.learn(total_timesteps=cfg.training.train_batch_size)  # warm-up
        seconds: Counter[str] = Counter()
        for phase in ("collect_rollouts", "train"):  # PPO.learn calls both through self
            setattr(model, phase, _timed(getattr(model, phase), phase, seconds))
        start = time.perf_counter()
        model.learn(total_timesteps=steps, reset_num_timesteps=False)
        wall = time.perf_counter() - start
    finally:
        vec.close()
    batches = steps / cfg.training.train_batch_size
    return PeerRun(
        rate=steps / wall,
        collect_s=seconds["collect_rollouts"] / batches,
        train_s=seconds["train"] / batches,
    )


def _timed(method: Any, name: str, seconds: Counter[str]) -> Any:
    @functools.wraps(method)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - start

    return timed


def _layout_sets(shape: tuple[int, int] | None) -> list[str]:
    """``--set`` items for an explicit layout (runners, envs each), PPO taking turns; none for
    ``auto``."""
    if shape is None:
        return []
    runners, envs = shape
    return [
        f"env_runners.num_env_runners={runners}",
        f"env_runners.num_envs_per_env_runner={envs}",
        "env_runners.sample_ahead=false",
    ]


def bench_throughput(quick: bool) -> Benchmark:
    """Every variant once per round, rounds one after the other, and the median of each: this
    machine's speed drifts by tens of percent within minutes, which a one-after-the-other
    sequence would read as differences between the variants."""
    import statistics

    import ray
    import torch

    torch.set_num_threads(1)  # as `invoke train` runs its learner, and as the peer runs
    rounds = 1 if quick else 5
    iterations = 1 if quick else 4
    batch = 1000 if quick else 4000
    sizes = [f"training.train_batch_size={batch}"]
    default = "auto (the default layout, sampling ahead)"  # cstr_ppo.yaml; jobs/layout.py
    layouts: dict[str, tuple[int, int] | None] = {default: None}
    if not quick:
        layouts["1 runner(s) x 8 envs, taking turns"] = (1, 8)
        layouts["0 runner(s) x 8 envs"] = (0, 8)
        layouts["2 runner(s) x 4 envs, taking turns"] = (2, 4)
    variants = {name: [*sizes, *_layout_sets(shape)] for name, shape in layouts.items()}
    batched = "the default with the batched CSTR (env_runners.batched)"
    turns = "the default taking turns (env_runners.sample_ahead: false)"
    variants[batched] = [*sizes, "env_runners.batched=true"]
    variants[turns] = [*sizes, "env_runners.sample_ahead=false"]
    sb3 = "Stable-Baselines3 PPO"
    result = Benchmark(
        "training_throughput",
        conditions=(
            f"default CSTR PPO config (the recipe: minibatch 128, 10 epochs), train batch "
            f"{batch}, {iterations} timed iterations after 2 warm-up; Stable-Baselines3's PPO "
            f"with the same hyperparameters on the same environment, {peer.ENVS} envs in one "
            f"process, over the same env steps; {rounds} round(s) of every variant, medians; "
            f"{os.cpu_count()} CPUs"
        ),
    )
    ray.init(include_dashboard=False, logging_level="ERROR", ignore_reinit_error=True)
    rates: dict[str, list[float]] = {name: [] for name in [*variants, sb3]}
    for _ in range(rounds):
        for name, sets in variants.items():
            algo = _algo(sets, None)
            rates[name].append(_rate(algo, iterations))
            algo.stop()
        measured = peer_run(sizes, iterations * batch)
        if measured is not None:
            rates[sb3].append(measured.rate)
    median = {name: statistics.median(v) if v else None for name, v in rates.items()}
    for name, value in median.items():
        result.add(f"env steps/s, {name}", value, "steps/s", "the others, same rounds")
    spread = rates[default]
    result.add(
        "spread of the default's rounds (max - min)",
        100 * (max(spread) - min(spread)) / median[default] if len(spread) > 1 else None,
        "%",
        "its median",
    )
    best = max(layouts, key=lambda name: median[name])
    for label, name, least in (
        ("the default", default, 1.0),
        (f"best layout ({best})", best, None),
        ("the default, batched CSTR", batched, 2.0),
        ("the default taking turns", turns, None),
    ):
        ratio = median[name] / median[sb3] if median[sb3] else None
        target = f">= {least:.1f}x" if least else ""
        result.add(
            f"{label} / Stable-Baselines3",
            ratio,
            "x",
            "Stable-Baselines3 PPO, median of the same rounds",
            target,
            ratio >= least if least and ratio is not None else None,
        )
    return result
