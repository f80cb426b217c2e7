"""`invoke bench --only profile`: where a CSTR training iteration's time goes, and what the
cuts of the hot path buy, side by side in one process.

The iteration runs with its env runner in the driver (``num_env_runners=0``), so that one
set of timers sees sampling and learning; each timer wraps one method of RLlib, Gymnasium
or the project for the length of the run (:class:`Stopwatch`), and nested timers are
reported exclusive of what they contain. The default layout (one env runner process) adds
sending the episodes from the runner to the learner; its own split comes from RLlib's
timers in the throughput benchmark.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks.harness import ROOT, Benchmark
from benchmarks.peer import activation_class
from benchmarks.throughput import peer_run

SAMPLING = [
    ("simulator (CSTR.step)", "simulator"),
    ("adapter (sims.adapter.SimEnv.step, less the simulator)", "adapter"),
    ("reward scaling (NormalizeReward, RewardInUnits)", "reward"),
    ("Gymnasium's vector env and wrappers (infos, checks)", "vector"),
    ("policy inference (forward_exploration)", "inference"),
    ("connectors: env to module", "env_to_module"),
    ("connectors: module to env (sampling, clipping actions)", "module_to_env"),
    ("the project's callbacks (trajectory logging, metrics)", "callbacks"),
    ("RLlib's sampling loop (episodes, metrics)", "sampling_rest"),
]
LEARNING = [
    ("learner connector (GAE, batching)", "learner_connector"),
    ("forward pass (forward_train)", "forward"),
    ("losses (PPO loss, KL, metrics)", "losses"),
    ("backward pass", "backward"),
    ("gradient clipping", "clip"),
    ("optimizer step (Adam)", "optimizer"),
    ("RLlib's update loop (minibatches, metrics)", "learning_rest"),
]


PIPES = ("env_to_module", "module_to_env")
PLAIN = "plain PyTorch (the same update, no framework)"


class Stopwatch:
    """Seconds spent inside wrapped methods, by bucket; a bucket re-entered from inside
    itself (a pipeline calling its base class) counts once."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self._inside: Counter[str] = Counter()

    @contextlib.contextmanager
    def wrap(self, cls: type, method: str, bucket: str) -> Iterator[None]:
        own = method in vars(cls)
        original = getattr(cls, method)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._inside[bucket]:
                return original(*args, **kwargs)
            self._inside[bucket] += 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[bucket] += time.perf_counter() - start
                self._inside[bucket] -= 1

        setattr(cls, method, timed)
        try:
            yield
        finally:
            if own:
                setattr(cls, method, original)
            else:
                delattr(cls, method)


def _timers(watch: Stopwatch, simulator: type) -> contextlib.ExitStack:
    import gymnasium as gym
    from gymnasium.wrappers.vector import DictInfoToList
    from ray.rllib.connectors.connector_pipeline_v2 import ConnectorPipelineV2
    from ray.rllib.connectors.env_to_module import EnvToModulePipeline
    from ray.rllib.connectors.learner.learner_connector_pipeline import (
        LearnerConnectorPipeline,
    )
    from ray.rllib.connectors.module_to_env import ModuleToEnvPipeline
    from ray.rllib.core.learner.learner import Learner
    from ray.rllib.core.learner.torch.torch_learner import TorchLearner
    from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    from jobs.callbacks import TrajectoryLogger
    from jobs.learner import LeanPPOTorchLearner
    from sims.adapter import SimEnv
    from sims.registry import RewardInUnits

    stack = contextlib.ExitStack()
    for cls, method, bucket in [
        (SingleAgentEnvRunner, "sample", "sampling"),
        (DictInfoToList, "step", "env_step"),
        (gym.wrappers.NormalizeReward, "step", "reward_outer"),
        (RewardInUnits, "step", "reward_inner"),
        (SimEnv, "step", "sim_env"),
        (simulator, "step", "simulator"),
        (TorchRLModule, "forward_exploration", "inference"),
        (TrajectoryLogger, "on_episode_end", "callbacks"),
        (TrajectoryLogger, "on_sample_end", "callbacks"),
        (Learner, "update", "learning"),
        (TorchRLModule, "forward_train", "forward"),
        (Learner, "compute_losses", "losses"),
        (TorchLearner, "compute_gradients", "backward"),
        (Learner, "postprocess_gradients", "clip"),
        (TorchLearner, "apply_gradients", "optimizer"),
        (LeanPPOTorchLearner, "apply_gradients", "optimizer"),
    ]:
        stack.enter_context(watch.wrap(cls, method, bucket))
    # One wrapper on the pipelines' common __call__, attributed by the pipeline's class.
    original = ConnectorPipelineV2.__call__

    @functools.wraps(original)
    def call(pipeline: Any, *args: Any, **kwargs: Any) -> Any:
        bucket = {
            EnvToModulePipeline: "env_to_module",
            ModuleToEnvPipeline: "module_to_env",
            LearnerConnectorPipeline: "learner_connector",
        }.get(type(pipeline))
        if bucket is None:
            return original(pipeline, *args, **kwargs)
        start = time.perf_counter()
        try:
            return original(pipeline, *args, **kwargs)
        finally:
            watch.seconds[bucket] += time.perf_counter() - start

    stack.enter_context(_replaced(ConnectorPipelineV2, "__call__", call))
    return stack


@contextlib.contextmanager
def _replaced(cls: type, name: str, value: Any) -> Iterator[None]:
    original = vars(cls)[name]
    setattr(cls, name, value)
    try:
        yield
    finally:
        setattr(cls, name, original)


def exclusive(seconds: Counter[str]) -> dict[str, float]:
    """Each bucket of :data:`SAMPLING` and :data:`LEARNING` without what it contains."""
    s = seconds
    reward = s["reward_outer"] - s["sim_env"]
    out = {
        "simulator": s["simulator"],
        "adapter": s["sim_env"] - s["simulator"],
        "reward": reward,
        "vector": s["env_step"] - s["reward_outer"],
        "inference": s["inference"],
        "callbacks": s["callbacks"],
        "env_to_module": s["env_to_module"],
        "module_to_env": s["module_to_env"],
        "learner_connector": s["learner_connector"],
        "forward": s["forward"],
        "losses": s["losses"],
        "backward": s["backward"],
        "clip": s["clip"],
        "optimizer": s["optimizer"],
    }
    out["sampling_rest"] = s["sampling"] - sum(
        out[k]
        for k in ("simulator", "adapter", "reward", "vector", "inference", "callbacks", *PIPES)
    )
    out["learning_rest"] = s["learning"] - sum(
        out[k] for k in ("learner_connector", "forward", "losses", "backward", "clip", "optimizer")
    )
    return out


def _reward_scalers(env_runner: Any) -> list[Any]:
    """Every sub-environment's ``NormalizeReward`` wrapper."""
    import gymnasium as gym

    found = []
    for env in env_runner.env.unwrapped.envs:
        while env is not None:
            if isinstance(env, gym.wrappers.NormalizeReward):
                found.append(env)
            env = getattr(env, "env", None)
    return found


def _use_stats(env_runner: Any, cls: type) -> None:
    """Swap each sub-env's running return statistics for ``cls``, keeping their values."""
    for scaler in _reward_scalers(env_runner):
        old, new = scaler.return_rms, cls()
        new.mean, new.var, new.count = float(old.mean), float(old.var), float(old.count)
        scaler.return_rms = new


def _use_infos(env_runner: Any, whole: bool) -> None:
    """The env runner's vector hands each sub-env's info on whole (sims.vector, as built), or
    merges them into NumPy columns as Gymnasium's own vector does."""
    import gymnasium as gym

    vector = env_runner.env.unwrapped
    if whole:
        vector.__dict__.pop("_add_info", None)
    else:
        vector._add_info = functools.partial(gym.vector.VectorEnv._add_info, vector)


def _use_learner(algo: Any, lean: bool) -> None:
    """RLlib's own PPO learner, or jobs.learner's: the same object, its class and its Adam's
    path swapped (the weights and the optimizer's state stay)."""
    from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner

    from jobs.learner import LeanPPOTorchLearner

    learner = algo.learner_group._learner
    learner.__class__ = LeanPPOTorchLearner if lean else PPOTorchLearner
    for optimizer in learner._named_optimizers.values():
        for group in optimizer.param_groups:
            group["foreach"] = True if lean else None  # None: torch's CPU default, one by one


def _pipelines(algo: Any, env_runner: Any) -> dict[bool, tuple[Any, Any]]:
    """The env runner's connector pipelines, fused (jobs.connectors, as built) or RLlib's
    defaults (built here from the same config, less the fused pieces)."""
    from jobs.connectors import use_rllib_connectors

    defaults = use_rllib_connectors(algo.config.copy(copy_frozen=False))
    e = env_runner
    return {
        True: (e._env_to_module, e._module_to_env),
        False: (
            defaults.build_env_to_module_connector(env=e.env, spaces=e.spaces, device=e._device),
            defaults.build_module_to_env_connector(env=e.env, spaces=e.spaces),
        ),
    }


def variants(pipelines: dict[bool, tuple[Any, Any]]) -> dict[str, Any]:
    """name -> how to set the process up for it: the hot path as it was, and with the cuts,
    one after the other."""
    import torch
    from gymnasium.wrappers.utils import RunningMeanStd

    from sims.registry import ScalarMeanStd

    # torch's own default (a thread per core), not this process's setting: in a whole
    # `invoke bench` run an earlier benchmark has set 1 already
    threads = os.cpu_count() or 1

    def setup(stats: type, torch_threads: int, *, lean: bool, fused: bool, infos: bool) -> Any:
        def apply(algo: Any, env_runner: Any) -> None:
            _use_stats(env_runner, stats)
            _use_infos(env_runner, whole=infos)
            torch.set_num_threads(torch_threads)
            _use_learner(algo, lean=lean)
            # the next sample starts from fresh episodes: no pipeline's cache carries over
            env_runner._env_to_module, env_runner._module_to_env = pipelines[fused]
            env_runner._needs_initial_reset = True

        return apply

    return {
        "as it was": setup(RunningMeanStd, threads, lean=False, fused=False, infos=False),
        "scalar return statistics": setup(
            ScalarMeanStd, threads, lean=False, fused=False, infos=False
        ),
        f"and 1 torch thread (not {threads})": setup(
            ScalarMeanStd, 1, lean=False, fused=False, infos=False
        ),
        "and the lean PPO learner (jobs/learner.py)": setup(
            ScalarMeanStd, 1, lean=True, fused=False, infos=False
        ),
        "and the fused env-runner connectors (jobs/connectors.py)": setup(
            ScalarMeanStd, 1, lean=True, fused=True, infos=False
        ),
        "and infos handed on whole (sims/vector.py)": setup(
            ScalarMeanStd, 1, lean=True, fused=True, infos=True
        ),
    }


def bench_profile(quick: bool) -> Benchmark:
    import tempfile
    from pathlib import Path

    import ray

    from jobs.algorithms import algorithm_config
    from jobs.callbacks import TrajectoryLogger
    from jobs.config import load_config
    from sims.registry import resolve

    repeats = 1 if quick else 5
    batch = 1000 if quick else 4000
    result = Benchmark(
        "profile",
        conditions=(
            f"default CSTR PPO config with its trajectory logging, env runner in the driver "
            f"(0 x 8 envs), train batch {batch}; {repeats} interleaved iterations of each "
            "variant after one warm-up; shares of the iteration's wall time, exclusive; "
            "Stable-Baselines3's PPO after ours, with the same hyperparameters and batch on the "
            "same environment (8 envs, one process, one torch thread, no trajectory logging), "
            "its collection and training timed apart"
        ),
    )
    cfg = load_config(
        ROOT / "jobs" / "configs" / "cstr_ppo.yaml",
        ["env_runners.num_env_runners=0", f"training.train_batch_size={batch}"],
    )
    folder = Path(tempfile.mkdtemp(prefix="aml-rl-profile-")) / "trajectories"
    folder.mkdir()
    callbacks = functools.partial(
        TrajectoryLogger, folder=str(folder), sim=cfg.sim, run_id="profile", session="s00"
    )
    ray.init(include_dashboard=False, logging_level="ERROR", ignore_reinit_error=True)
    algo = algorithm_config(cfg, callbacks).build_algo()
    runner = algo.env_runner_group.local_env_runner
    simulator = type(resolve(cfg.sim).spec.simulator())
    setups = variants(_pipelines(algo, runner))
    watches = {name: Stopwatch() for name in setups}
    walls: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    try:
        lifetime = algo.train()["num_env_steps_sampled_lifetime"]  # warm-up
        for _ in range(repeats):
            for name, setup in setups.items():
                setup(algo, runner)
                with _timers(watches[name], simulator):
                    start = time.perf_counter()
                    out = algo.train()
                    walls[name] += time.perf_counter() - start
                steps[name] += out["num_env_steps_sampled_lifetime"] - lifetime
                lifetime = out["num_env_steps_sampled_lifetime"]
        updates = _learner_updates(algo, cfg, rounds=2 if quick else 8)
    finally:
        algo.stop()
    # the peer's two phases, on the same environment and batch, in this process after ours
    peer = peer_run([f"training.train_batch_size={batch}"], (2 if quick else 10) * batch)
    rates = {name: steps[name] / walls[name] for name in setups}
    for name, watch in watches.items():
        shares = exclusive(watch.seconds)
        wall = walls[name]
        if name == list(setups)[-1]:
            result.reading = _reading(name, shares, watch.seconds, wall, rates)
        result.add(f"{name}: env steps/s", rates[name], "steps/s", "the other variants")
        for phase, label in (("sampling", SAMPLING), ("learning", LEARNING)):
            result.add(f"{name}: {phase}", 100 * watch.seconds[phase] / wall, "%", "iteration time")
            for text, key in label:
                result.add(
                    f"{name}: {phase} / {text}", 100 * shares[key] / wall, "%", "iteration time"
                )
    for name, seconds in updates.items():
        result.add(
            f"{name}: seconds to update on one batch", statistics.median(seconds), "s",
            "the other learner, interleaved rounds, medians",
        )  # fmt: skip
    lean = statistics.median(updates["lean"]) / statistics.median(updates["RLlib's"])
    result.add("lean / RLlib's learner, seconds per batch", lean, "x", "RLlib's PPO learner")
    result.add(
        "lean / plain PyTorch, seconds per batch",
        statistics.median(updates["lean"]) / statistics.median(updates[PLAIN]),
        "x",
        "the same update in plain PyTorch",
    )
    result.reading += (
        f" The learner alone, one batch's update (every epoch and minibatch), taking turns: "
        f"{lean:.2f}x RLlib's seconds with jobs/learner.py (the same weights to the bit)."
    )
    if peer is not None:
        last = watches[list(setups)[-1]].seconds
        ours = {"sample": last["sampling"] / repeats, "learn": last["learning"] / repeats}
        result.add("ours: seconds to sample one batch", ours["sample"], "s", "the last variant")
        result.add("ours: seconds to learn from one batch", ours["learn"], "s", "the last variant")
        result.add("Stable-Baselines3 PPO: seconds to collect one batch", peer.collect_s, "s",
                   "the same env, batch and hyperparameters, one process")  # fmt: skip
        result.add("Stable-Baselines3 PPO: seconds to train on one batch", peer.train_s, "s",
                   "the same env, batch and hyperparameters, one process")  # fmt: skip
        result.add("sampling: ours / SB3's", ours["sample"] / peer.collect_s, "x", "SB3 PPO")
        result.add("learning: ours / SB3's", ours["learn"] / peer.train_s, "x", "SB3 PPO")
        # With sampling hidden behind learning (sampling ahead, a free simulator), a run can
        # go no faster than its learner: the ceiling of any layout, against SB3's pace.
        sb3_rate = batch / (peer.collect_s + peer.train_s)
        ceilings = {name: batch / statistics.median(updates[name]) for name in ("lean", PLAIN)}
        for name, ceiling in ceilings.items():
            result.add(f"ceiling with sampling hidden, {name}: env steps/s", ceiling,
                       "steps/s", "one batch / its learner's seconds")  # fmt: skip
            result.add(f"ceiling with sampling hidden, {name} / SB3", ceiling / sb3_rate, "x",
                       "SB3 PPO, collection and training, this run")  # fmt: skip
        result.reading += (
            f" With sampling wholly hidden behind learning, no layout can beat its learner: "
            f"{ceilings['lean']:,.0f} env steps/s with ours "
            f"({ceilings['lean'] / sb3_rate:.2f}x SB3's {sb3_rate:,.0f} here), "
            f"{ceilings[PLAIN]:,.0f} ({ceilings[PLAIN] / sb3_rate:.2f}x) with the same update "
            f"in plain PyTorch."
        )
        result.reading += (
            f" Stable-Baselines3's PPO on the same environment and batch: {peer.collect_s:.2f} s "
            f"to collect it and {peer.train_s:.2f} s to train on it, against our "
            f"{ours['sample']:.2f} s and {ours['learn']:.2f} s "
            f"({ours['sample'] / peer.collect_s:.1f}x and {ours['learn'] / peer.train_s:.1f}x)."
        )
    return result


def plain_update(algo: Any, cfg: Any) -> Callable[[], None]:
    """One batch's PPO update written in plain eager PyTorch, without a framework around it:
    the recipe's two networks (policy and value, separate, the same widths and activation),
    RLlib's PPO loss (clipped surrogate, KL penalty, clipped value loss, entropy term), the
    global-norm clip and Adam's multi-tensor step, every epoch and minibatch over a batch of
    the same size and shapes. What it costs is the floor for any learner of these networks
    on this machine: the same arithmetic, nothing else."""
    import torch
    from torch import nn

    t, ppo = cfg.training, algo.config
    env = algo.env_runner_group.local_env_runner.env
    obs_dim = math.prod(env.single_observation_space.shape)
    act_dim = math.prod(env.single_action_space.shape)
    activation = activation_class(t.activation)

    def mlp(outputs: int) -> nn.Sequential:
        layers, width = [], obs_dim
        for hidden in t.hidden:
            layers += [nn.Linear(width, hidden), activation()]
            width = hidden
        return nn.Sequential(*layers, nn.Linear(width, outputs))

    policy, value = mlp(2 * act_dim), mlp(1)
    params = [*policy.parameters(), *value.parameters()]
    adam = torch.optim.Adam(params, lr=t.lr, foreach=True)
    rows = t.train_batch_size
    obs, actions = torch.randn(rows, obs_dim), torch.randn(rows, act_dim)
    old_logits = torch.randn(rows, 2 * act_dim) * 0.1
    old_logp, advantages, targets = torch.randn(rows), torch.randn(rows), torch.randn(rows)
    columns = (obs, actions, old_logits, old_logp, advantages, targets)

    def dist(logits: torch.Tensor) -> torch.distributions.Normal:
        mean, log_std = logits.chunk(2, dim=-1)
        return torch.distributions.Normal(mean, log_std.exp(), validate_args=False)

    size = t.minibatch_size
    minibatches = math.ceil(t.num_epochs * rows / size)  # as RLlib's cyclic iterator

    def update() -> None:
        order = torch.cat([torch.randperm(rows) for _ in range(t.num_epochs + 1)])
        for start in range(0, minibatches * size, size):
            o, a, old, logp, adv, target = (c[order[start : start + size]] for c in columns)
            current = dist(policy(o))
            ratio = torch.exp(current.log_prob(a).sum(-1) - logp)
            clipped = torch.clamp(ratio, 1 - ppo.clip_param, 1 + ppo.clip_param)
            surrogate = torch.min(adv * ratio, adv * clipped)
            vf = torch.clamp((value(o).squeeze(-1) - target) ** 2, 0, ppo.vf_clip_param)
            entropy = current.entropy().sum(-1)
            loss = torch.mean(-surrogate + ppo.vf_loss_coeff * vf - ppo.entropy_coeff * entropy)
            if ppo.use_kl_loss:
                kl = torch.distributions.kl_divergence(dist(old), current).sum(-1)
                loss = loss + ppo.kl_coeff * torch.mean(kl)
            adam.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip:
                nn.utils.clip_grad_norm_(params, t.grad_clip, foreach=True)
            adam.step()

    return update


def _learner_updates(algo: Any, cfg: Any, rounds: int) -> dict[str, list[float]]:
    """Seconds for the learner's whole update on one batch (every epoch and minibatch), with
    RLlib's PPO learner, with jobs.learner's and in plain PyTorch (:func:`plain_update`),
    taking turns on fresh batches: the learner alone, without the sampling that shares an
    iteration with it."""
    import torch

    torch.set_num_threads(1)
    runner = algo.env_runner_group.local_env_runner
    t = cfg.training
    plain = plain_update(algo, cfg)
    seconds: dict[str, list[float]] = {"RLlib's": [], "lean": [], PLAIN: []}
    for _ in range(rounds):
        for name in seconds:
            if name == PLAIN:
                start = time.perf_counter()
                plain()
                seconds[name].append(time.perf_counter() - start)
                continue
            _use_learner(algo, lean=name == "lean")
            episodes = runner.sample(num_timesteps=t.train_batch_size)
            start = time.perf_counter()
            algo.learner_group.update(
                episodes=episodes,
                timesteps={"num_env_steps_sampled_lifetime": 0},  # for schedules: none
                num_epochs=t.num_epochs,
                minibatch_size=t.minibatch_size,
                shuffle_batch_per_epoch=True,
            )
            seconds[name].append(time.perf_counter() - start)
    return seconds


def _reading(
    name: str, shares: dict[str, float], seconds: Counter[str], wall: float, rates: dict
) -> str:
    """Where the time goes, the largest shares first, and what the cuts bought."""
    labels = {key: text for text, key in SAMPLING + LEARNING}
    top = sorted(shares, key=shares.get, reverse=True)[:5]
    first, last = rates[next(iter(rates))], rates[name]
    return (
        f"Where an iteration's time goes ({name}): sampling "
        f"{100 * seconds['sampling'] / wall:.0f}%, learning "
        f"{100 * seconds['learning'] / wall:.0f}%, one after the other. The largest shares: "
        + "; ".join(f"{labels[key]} {100 * shares[key] / wall:.1f}%" for key in top)
        + f". The cuts together: {last / first:.2f}x the env steps/s of the hot path as it was."
    )
