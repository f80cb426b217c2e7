"""Stable-Baselines3's PPO, the single-process peer users compare us with: on the same
environment, judged by the project's own assessment and verdict on a schedule in env steps.

A bench-only dependency (the ``bench`` extra): callers check :func:`available` first."""

from __future__ import annotations

import time
from typing import Any

ENVS = 8
"""Envs in its DummyVecEnv, as the recipe spreads 8 envs over its env runners."""
ASSESS_EVERY = 40_000
"""Env steps between assessments: the recipe's 10 iterations of 4,000-step batches."""


def available() -> bool:
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        return False
    return True


def activation_class(name: str) -> type:
    """The torch module of a recipe's ``training.activation``."""
    import torch

    return {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "silu": torch.nn.SiLU}[name]


def recipe_kwargs(training: Any) -> dict[str, Any]:
    """``PPO(...)`` arguments that mirror a recipe (:class:`jobs.config.Training`): batch,
    minibatch, epochs, learning rate, discount, GAE, entropy, gradient clip, and separate
    policy and value networks of the same widths and activation."""
    return {
        "learning_rate": training.lr,
        "n_steps": training.train_batch_size // ENVS,
        "batch_size": training.minibatch_size,
        "n_epochs": training.num_epochs,
        "gamma": training.gamma,
        "gae_lambda": training.gae_lambda,
        "ent_coef": training.entropy_coeff,
        "max_grad_norm": training.grad_clip or 1e9,
        "policy_kwargs": {
            "net_arch": {"pi": list(training.hidden), "vf": list(training.hidden)},
            "activation_fn": activation_class(training.activation),
        },
    }


def first_verdict(verdicts: list[dict[str, Any]]) -> dict[str, Any]:
    """From assessments in order (each with ``env_steps``, ``training_s`` and the verdict):
    the env steps and seconds of training to the first that beat the baseline (None where
    none did), the last verdict, and all of them."""
    beating = [v for v in verdicts if v["beats"]]
    return {
        "env_steps_to_verdict": beating[0]["env_steps"] if beating else None,
        "seconds_to_verdict": beating[0]["training_s"] if beating else None,
        "verdict": verdicts[-1] if verdicts else None,
        "verdicts": verdicts,
    }


def train(
    sim: str,
    seed: int,
    budget: int,
    *,
    margin: float = 0.0,
    ppo_kwargs: dict[str, Any] | None = None,
    to_the_end: bool = False,
    assess_every: int = ASSESS_EVERY,
) -> dict[str, Any]:
    """``PPO("MlpPolicy", env, **ppo_kwargs)`` (its defaults where none) on
    ``resolve(sim).make_env()``, assessed every ``assess_every`` env steps by the project's
    assessment against ``margin``; stops at the first verdict unless ``to_the_end``.

    Returns the env steps and seconds of training (its assessments excluded) to the first
    verdict that beat the baseline (None where none did), and every assessment's verdict."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    from jobs.assess import Controller, compare, default_scenarios
    from jobs.verdict import decide
    from sims.registry import resolve

    handle = resolve(sim)
    scenarios = default_scenarios(handle)
    judge_env = handle.make_env()
    verdicts: list[dict[str, Any]] = []

    class Assess(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next = assess_every
            self.assessing = 0.0
            self.start = time.perf_counter()

        def _on_step(self) -> bool:
            if self.num_timesteps < self.next:
                return True
            self.next += assess_every
            training_s = time.perf_counter() - self.start - self.assessing
            began = time.perf_counter()
            agent = Controller(lambda obs, info: self.model.predict(obs, deterministic=True)[0])
            result, _ = compare(handle, judge_env, scenarios, agent)
            verdict = decide(result.to_json(), handle, margin)
            self.assessing += time.perf_counter() - began
            verdicts.append(
                {"env_steps": self.num_timesteps, "training_s": training_s, **verdict.to_json()}
            )
            return to_the_end or not verdict.beats

    vec = make_vec_env(lambda: handle.make_env(), n_envs=ENVS, seed=seed)
    try:
        model = PPO("MlpPolicy", vec, seed=seed, device="cpu", verbose=0, **(ppo_kwargs or {}))
        model.learn(total_timesteps=budget, callback=Assess())
    finally:
        vec.close()
        judge_env.close()
    return {**first_verdict(verdicts), "env_steps": int(model.num_timesteps)}
