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

    cfg = load_config(CONFIG, sets)
    return algorithm_config(cfg, callbacks).build_algo()


CONFIG = ROOT / "jobs" / "configs" / "cstr_ppo.yaml"
PEER_ENVS = 8


def peer_rate(sets: list[str], steps: int) -> float | None:
    """Stable-Baselines3's PPO with the config's own hyperparameters (batch, minibatch,
    epochs, learning rate, GAE, gradient clip, separate tanh networks of the same widths) on
    the environment the env runners step (``sims.registry.RLlibEnv``, reward scaling
    included), 8 envs in its DummyVecEnv, in this process on one torch thread; env steps/s
    over ``steps`` after one warm-up rollout. None without the bench extra."""
    try:
        import torch
        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_vec_env
    except ImportError:
        return None
    from jobs.algorithms import algorithm_config
    from jobs.config import load_config
    from sims.registry import RLlibEnv

    cfg = load_config(CONFIG, sets)
    t = cfg.training
    env_config = algorithm_config(cfg, None).env_config
    vec = make_vec_env(lambda: RLlibEnv(env_config), n_envs=PEER_ENVS, seed=cfg.seed)
    try:
        model = PPO(
            "MlpPolicy",
            vec,
            learning_rate=t.lr,
            n_steps=t.train_batch_size // PEER_ENVS,
            batch_size=t.minibatch_size,
            n_epochs=t.num_epochs,
            gamma=t.gamma,
            gae_lambda=t.gae_lambda,
            ent_coef=t.entropy_coeff,
            max_grad_norm=t.grad_clip or 1e9,
            policy_kwargs={
                "net_arch": {"pi": list(t.hidden), "vf": list(t.hidden)},
                "activation_fn": torch.nn.Tanh,
            },
            seed=cfg.seed,
            device="cpu",
            verbose=0,
        )
        model.learn(total_timesteps=t.train_batch_size)  # warm-up
        start = time.perf_counter()
        model.learn(total_timesteps=steps, reset_num_timesteps=False)
        return steps / (time.perf_counter() - start)
    finally:
        vec.close()


def bench_throughput(quick: bool) -> Benchmark:
    import ray
    import torch

    torch.set_num_threads(1)  # as `invoke train` runs its learner, and as the peer runs
    default = (1, 8)  # jobs/configs/cstr_ppo.yaml
    layouts = [default] if quick else [default, (0, 8), (2, 4)]
    iterations = 1 if quick else 5
    batch = 1000 if quick else 4000
    result = Benchmark(
        "training_throughput",
        conditions=(
            f"default CSTR PPO config (the recipe: minibatch 128, 10 epochs), train batch "
            f"{batch}, {iterations} timed iterations after 2 warm-up, {os.cpu_count()} CPUs; "
            f"Stable-Baselines3's PPO with the same hyperparameters on the same environment, "
            f"{PEER_ENVS} envs in one process, over the same env steps"
        ),
    )
    ray.init(include_dashboard=False, logging_level="ERROR", ignore_reinit_error=True)
    sizes = [f"training.train_batch_size={batch}"]
    rates = {}
    for runners, envs in layouts:
        sets = [
            *sizes,
            f"env_runners.num_env_runners={runners}",
            f"env_runners.num_envs_per_env_runner={envs}",
        ]
        algo = _algo(sets, None)
        rates[(runners, envs)] = _rate(algo, iterations)
        algo.stop()
        result.add(
            f"env steps/s, {runners} runner(s) x {envs} envs"
            + (" (the default)" if (runners, envs) == default else ""),
            rates[(runners, envs)],
            "steps/s",
            "other layouts",
        )
    best = max(rates, key=rates.get)
    algo = _algo([*sizes, "env_runners.batched=true"], None)  # the CSTR's batch form
    batched = _rate(algo, iterations)
    algo.stop()
    result.add(
        "env steps/s, the default with the batched CSTR (env_runners.batched)",
        batched,
        "steps/s",
        "the default",
    )
    algo = _algo([*sizes, "env_runners.sample_ahead=true"], None)
    ahead = _rate(algo, iterations)
    algo.stop()
    result.add(
        "env steps/s, the default sampling ahead (env_runners.sample_ahead)",
        ahead,
        "steps/s",
        "the default",
    )
    peer = peer_rate(sizes, iterations * batch)
    result.add("env steps/s, Stable-Baselines3 PPO", peer, "steps/s", "same env, same run")
    for label, rate, least in (
        ("the default", rates[default], 1.0),
        (f"best layout ({best[0]} x {best[1]})", rates[best], None),
        ("the default, batched CSTR", batched, 2.0),
        ("the default sampling ahead", ahead, None),
    ):
        ratio = rate / peer if peer else None
        target = f">= {least:.1f}x" if least else ""
        result.add(
            f"{label} / Stable-Baselines3",
            ratio,
            "x",
            "Stable-Baselines3 PPO, same run",
            target,
            ratio >= least if least and ratio is not None else None,
        )
    return result
