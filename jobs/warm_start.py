"""Start from the user's controller: before PPO's first batch, fit the policy to the
baseline's actions on the lesson's scenarios (``training.warm_start_steps``).

The baseline drives the training environment (the config's lesson, its own seeds) for a few
episodes; the policy is then fitted to those (observation, action) pairs in the learner,
and the env runners get the fitted weights. A continuous action's mean is fitted (squared
error) and its spread left as PPO starts it: fitted by likelihood (RLlib's BC loss) the
spread shrinks with the error, and PPO, exploring too little, stayed on the copy (the CSTR
sat within 1% of its PI for 360,000 env steps). A discrete action is fitted by likelihood.
PPO then trains as usual. The verdict does not change meaning: the agent must still beat the
baseline by the margin, not copy it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from jobs.assess import Controller, with_baseline
from jobs.config import ExperimentConfig
from sims.handle import SimHandle

EPISODES = 20  # baseline episodes collected; their seeds are the run's seed onwards


@dataclass
class WarmStart:
    """What the fit did, for summary.json."""

    episodes: int
    pairs: int
    steps: int
    loss_before: float
    loss_after: float
    """The fit's loss over all pairs: a continuous action's squared error, a discrete one's
    negative log-likelihood."""


def baseline_pairs(
    handle: SimHandle, cfg: ExperimentConfig, episodes: int = EPISODES
) -> tuple[np.ndarray, np.ndarray]:
    """Observations and the baseline's actions (as the policy outputs them) on the config's
    lesson, ``episodes`` episodes from seed ``cfg.seed``."""
    assert handle.baseline is not None  # jobs.algorithms refuses the setting without one
    env = handle.make_env(lessons=cfg.lessons, lesson=cfg.lesson)
    baseline = with_baseline(handle, env, Controller(lambda obs, info: None))["baseline"]
    observations, actions = [], []
    try:
        for episode in range(episodes):
            obs, info = env.reset(seed=cfg.seed + episode)
            baseline.reset()
            done = False
            while not done:
                action = baseline.act(obs, info)
                observations.append(np.asarray(obs, dtype=np.float32))
                actions.append(np.asarray(action))
                obs, _, terminated, truncated, info = env.step(action)
                done = terminated or truncated
    finally:
        env.close()
    return np.stack(observations), np.stack(actions)


def fit(module: Any, obs: np.ndarray, actions: np.ndarray, *, steps: int, lr: float,
        minibatch: int, seed: int) -> tuple[float, float]:  # fmt: skip
    """``steps`` Adam updates of ``module`` (an RLlib torch RLModule) on minibatches of the
    pairs; the mean loss over all pairs before and after."""
    import torch
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.distribution.torch.torch_distribution import TorchDiagGaussian

    dist_class = module.get_train_action_dist_cls()
    x = torch.as_tensor(obs)
    y = torch.as_tensor(actions)

    gaussian = issubclass(dist_class, TorchDiagGaussian)

    def loss(index: Any) -> Any:
        inputs = module.forward_train({Columns.OBS: x[index]})[Columns.ACTION_DIST_INPUTS]
        if gaussian:  # the mean only: the spread stays as PPO starts it, so it explores
            mean, _ = inputs.chunk(2, dim=-1)
            return ((mean - y[index]) ** 2).mean()
        return -dist_class.from_logits(inputs).logp(y[index]).mean()

    everything = torch.arange(len(x))
    with torch.no_grad():
        before = float(loss(everything))
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        optimizer.zero_grad()
        loss(torch.as_tensor(rng.integers(0, len(x), size=minibatch))).backward()
        optimizer.step()
    with torch.no_grad():
        after = float(loss(everything))
    module.zero_grad(set_to_none=True)  # PPO's first update starts from clean gradients
    return before, after


def warm_start(algo: Any, handle: SimHandle, cfg: ExperimentConfig) -> WarmStart:
    """Fit the learner's policy to the baseline, then give the env runners its weights."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    obs, actions = baseline_pairs(handle, cfg)
    t = cfg.training

    def on_learner(learner: Any) -> tuple[float, float]:
        return fit(
            learner.module[DEFAULT_MODULE_ID], obs, actions, steps=t.warm_start_steps,
            lr=t.lr, minibatch=t.minibatch_size, seed=cfg.seed,
        )  # fmt: skip

    (first, *_) = algo.learner_group.foreach_learner(on_learner)  # one call per learner
    before, after = first.get()
    algo.env_runner_group.sync_weights(
        from_worker_or_learner_group=algo.learner_group, inference_only=True
    )
    return WarmStart(EPISODES, len(obs), t.warm_start_steps, before, after)
