"""From an :class:`ExperimentConfig` to one RLlib ``AlgorithmConfig`` (new API stack)."""

from __future__ import annotations

import inspect
import math
from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.algorithms.appo import APPOConfig
from ray.rllib.algorithms.impala import IMPALAConfig
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

from jobs.config import ConfigError, ExperimentConfig
from jobs.connectors import use_fused_connectors
from jobs.layout import Layout, local_nodes, resolve_layout
from sims.package import package_source
from sims.registry import RLlibEnv, resolve

CONFIG_CLASSES: dict[str, type[AlgorithmConfig]] = {
    "PPO": PPOConfig,
    "APPO": APPOConfig,
    "IMPALA": IMPALAConfig,
}


def algorithm_config(
    cfg: ExperimentConfig, callbacks: Any, layout: Layout | None = None
) -> AlgorithmConfig:
    """The whole experiment as one fluent chain; ``callbacks`` builds the RLlibCallback.
    ``layout``: where the work goes (jobs.layout); by default as this machine holds it."""
    layout = layout or resolve_layout(cfg, local_nodes())
    handle = resolve(cfg.sim)
    env_config = handle.env_config(lessons=cfg.lessons, lesson=cfg.lesson)
    t = cfg.training
    if t.normalize_rewards:  # sims.registry.RLlibEnv scales them; returns stay in sim units
        env_config["normalize_rewards_gamma"] = t.gamma
    if cfg.sim_package:  # each env runner materialises it on its own machine
        env_config["sim_package"] = package_source(cfg.sim_package)
        env_config["sim_package_sha256"] = cfg.sim_package_sha256
    batched = cfg.env_runners.batched
    if batched and (handle.spec is None or handle.spec.batch_simulator is None):
        raise ConfigError(
            f"env_runners.batched: true, but simulator {cfg.sim!r} has no batch form (its spec "
            "names no batch_simulator); add one (sims.contract.BatchSimulator, README "
            "'Many scenarios in one call') or drop the setting"
        )
    if batched:  # one batch simulator steps the env runner's envs (sims.batch.BatchVectorEnv)
        env_config["batched"] = True
    config = (
        CONFIG_CLASSES[cfg.algorithm]()
        # Every env runner resolves the simulator's name itself (importing a user's module).
        .environment(RLlibEnv, env_config=env_config)
        .env_runners(
            num_env_runners=layout.num_env_runners,
            num_envs_per_env_runner=layout.num_envs_per_env_runner,
        )
        .learners(
            num_learners=layout.num_learners,
            num_gpus_per_learner=layout.num_gpus_per_learner,
        )
        .training(
            lr=t.lr,
            gamma=t.gamma,
            # the recipe's batch in total: each learner updates on its share
            train_batch_size_per_learner=layout.train_batch_size_per_learner,
            minibatch_size=layout.minibatch_size,
            num_epochs=t.num_epochs,
            entropy_coeff=t.entropy_coeff,
            grad_clip=t.grad_clip,
        )
        .rl_module(model_config=model_config(cfg))
        .fault_tolerance(
            # A simulator that raises or returns NaN must not end the run: the failing
            # env is recreated and its episode dropped; a dead env runner is replaced.
            restart_failed_sub_environments=True,
            restart_failed_env_runners=True,
        )
        .callbacks(callbacks)
        .debugging(seed=cfg.seed, log_level="WARN")
    )
    # One agent, no recurrent state: RLlib's env-runner pipelines, fused (the same data)
    use_fused_connectors(config)
    # Every env runner's vector is ours (sims.registry.RLlibEnv): the simulators of a process
    # or batch simulator step together (sims.process, sims.batch), and each sub-env's info
    # reaches RLlib whole, without Gymnasium's merge into NumPy columns (sims.vector)
    config.env_runners(gym_env_vectorize_mode="vector_entry_point")
    if t.warm_start_steps and handle.baseline is None:
        raise ConfigError(
            f"training.warm_start_steps: {t.warm_start_steps}, but simulator {cfg.sim!r} has no "
            "baseline to start from; give its spec a baseline, or set it to 0"
        )
    if cfg.env_runners.sample_ahead is True and not layout.sample_ahead:
        raise ConfigError(
            f"env_runners.sample_ahead: true needs PPO with env_runners.num_env_runners >= 1 "
            f"(here {cfg.algorithm} with {layout.num_env_runners}): "
            + (
                "sampling in the driver cannot overlap learning; set num_env_runners: 1"
                if cfg.algorithm == "PPO"
                else f"{cfg.algorithm} samples asynchronously already; drop the setting"
            )
        )
    if layout.sample_ahead:  # PPO's runners sample the next batch while the learner updates
        from jobs.sample_ahead import SampleAheadPPO

        config.algo_class = SampleAheadPPO
        # The connectors keep no state; syncing it would wait for the batch in flight.
        config.env_runners(merge_env_runner_states=False, broadcast_env_runner_states=False)
    if cfg.min_time_s_per_iteration is not None:
        config.reporting(min_time_s_per_iteration=cfg.min_time_s_per_iteration)
    if cfg.algorithm == "PPO":
        from jobs.learner import LeanPPOTorchLearner
        from jobs.sample_ahead import SampleAheadLearner  # its batches one update old

        learner = SampleAheadLearner if layout.sample_ahead else LeanPPOTorchLearner
        config.training(lambda_=t.gae_lambda).learners(learner_class=learner)
    known = training_settings(CONFIG_CLASSES[cfg.algorithm])
    unknown = [key for key in t.extra if key not in known]
    if unknown:
        typed = [key for key in unknown if key in TYPED_SETTINGS]
        hint = "; ".join(f"{key}: use {TYPED_SETTINGS[key]}" for key in typed)
        raise ConfigError(
            f"training.extra: {', '.join(unknown)} not {cfg.algorithm} training settings "
            f"(the arguments of RLlib's {CONFIG_CLASSES[cfg.algorithm].__name__}.training())"
            + (f"; {hint}" if hint else "; check the names against RLlib's documentation")
        )
    for key, value in t.extra.items():
        expected = _kind(getattr(config, key))
        if expected is not None and value is not None and _kind(value) != expected:
            raise ConfigError(
                f"training.extra.{key}: {value!r} is {_kind(value)}, but RLlib's {cfg.algorithm} "
                f"setting {key} takes {expected} (default {getattr(config, key)!r}); "
                f"give {expected}"
            )
    if t.extra:
        config.training(**t.extra)
    return config


TYPED_SETTINGS = {
    "model_config": "training.hidden, training.share_layers and training.activation",
    "model": "training.hidden, training.share_layers and training.activation",
    "num_env_runners": "env_runners.num_env_runners",
    "num_envs_per_env_runner": "env_runners.num_envs_per_env_runner",
    "vf_share_layers": "training.share_layers",
    "train_batch_size_per_learner": "training.train_batch_size",
    "lambda": "training.gae_lambda",
}
"""RLlib names a user may reach for that are typed config keys here (or not training())."""


def training_settings(cls: type[AlgorithmConfig]) -> set[str]:
    """The keyword arguments ``cls().training()`` takes, over its class hierarchy, less the
    ones this config sets through typed keys (a model, the layout)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        method = vars(klass).get("training")
        if method is None:
            continue
        for name, param in inspect.signature(method).parameters.items():
            if name != "self" and param.kind is not param.VAR_KEYWORD:
                names.add(name)
    return names - set(TYPED_SETTINGS)


def model_config(cfg: ExperimentConfig) -> DefaultModelConfig:
    """The policy and value networks of the recipe.

    Hidden layers orthogonal with gain sqrt(2) and the heads with gain 0.01 (CleanRL's and
    Stable-Baselines3's PPO): the first actions have mean ~0 and log-std ~0, a Gaussian of
    unit spread over the [-1, 1] action range, so the policy explores from the start rather
    than sitting at one edge; the value head starts near zero, where normalised targets are.
    """
    t = cfg.training
    return DefaultModelConfig(
        fcnet_hiddens=list(t.hidden),
        fcnet_activation=t.activation,
        fcnet_kernel_initializer="orthogonal_",
        fcnet_kernel_initializer_kwargs={"gain": math.sqrt(2)},
        head_fcnet_hiddens=[],
        head_fcnet_kernel_initializer="orthogonal_",
        head_fcnet_kernel_initializer_kwargs={"gain": 0.01},
        vf_share_layers=t.share_layers,
    )


def _kind(value: Any) -> str | None:
    """What kind of value an RLlib setting holds; None where any is accepted."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return None
