"""env_runners.sample_ahead: the env runners sample the next batch while the learner
updates, in real Ray actors; misconfigured, one message says why."""

from __future__ import annotations

import json
import math
from typing import Any

import gymnasium as gym
import pytest
import torch
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.evaluation.postprocessing import Postprocessing

from jobs.algorithms import algorithm_config
from jobs.config import ConfigError, load_config
from jobs.sample_ahead import ProximalPolicy
from tests.conftest import ROOT, script_json

# Two iterations of each kind in its own process (a Ray of its own); after each, how many
# sample requests are still in flight: sampling ahead leaves the next batch on its way.
IN_FLIGHT = """
import json, sys
import ray
from jobs.algorithms import algorithm_config
from jobs.config import load_config
from jobs.sample_ahead import TAG
ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
out = {}
for ahead in ("false", "true"):
    cfg = load_config("jobs/configs/cstr_ppo.yaml", [
        "training.train_batch_size=400", "training.minibatch_size=100", "training.num_epochs=1",
        "env_runners.num_envs_per_env_runner=2", f"env_runners.sample_ahead={ahead}",
    ])
    algo = algorithm_config(cfg, None).build_algo()
    learner = algo.learner_group.get_weights()["default_policy"]
    runner = algo.env_runner_group.foreach_env_runner(
        lambda r: r.module.get_state(inference_only=True), local_env_runner=False)[0]
    same = sorted(k for k, v in runner.items() if (learner[k] == v).all())
    steps = [algo.train()["num_env_steps_sampled_lifetime"] for _ in range(2)]
    out[ahead] = {
        "algorithm": type(algo).__name__,
        "learner": type(algo.learner_group._learner).__name__,
        "weights": {"runner": sorted(runner), "as_the_learners": same},
        "in_flight": algo.env_runner_group.num_in_flight_async_reqs(TAG),
        "steps": steps,
    }
    algo.stop()
print(json.dumps(out))
"""


def test_sampling_ahead_keeps_the_next_batch_in_flight_while_the_learner_updates():
    out, _ = script_json(IN_FLIGHT)
    assert out["false"]["algorithm"] == "PPO" and out["false"]["in_flight"] == 0
    assert out["true"]["algorithm"] == "SampleAheadPPO"
    assert out["true"]["in_flight"] == 1  # the batch after this one, already sampling
    assert out["true"]["learner"] == "SampleAheadLearner"
    for kind in ("false", "true"):  # the first batch is sampled by the learner's first weights
        weights = out[kind]["weights"]
        assert weights["runner"] and weights["as_the_learners"] == weights["runner"], out
    for kind in ("false", "true"):  # each iteration still trains on a whole batch
        first, second = out[kind]["steps"]
        assert first >= 400 and second >= 800, out


def test_a_run_that_samples_ahead_completes_and_is_assessed(default_smoke):
    run, _ = default_smoke  # the default config: auto samples ahead beside the driver's CPU
    summary = json.loads((run / "summary.json").read_text())
    assert summary["layout"]["sample_ahead"] is True, summary["layout"]
    assert summary["status"] == "completed"
    assert summary["env_steps_sampled"] >= 400
    assert set(summary["assessment"]) == {"agent", "baseline"}


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["env_runners.num_env_runners=0"],
            "needs PPO with env_runners.num_env_runners >= 1 (here PPO with 0): sampling in "
            "the driver cannot overlap learning; set num_env_runners: 1",
        ),
        (
            ["algorithm=APPO"],
            "(here APPO with 1): APPO samples asynchronously already; drop the setting",
        ),
    ],
)
def test_sampling_ahead_where_it_cannot_overlap_is_refused_with_the_reason(sets, message):
    cfg = load_config(
        ROOT / "jobs" / "configs" / "cstr_ppo.yaml", ["env_runners.sample_ahead=true", *sets]
    )
    with pytest.raises(ConfigError) as caught:
        algorithm_config(cfg, None)
    assert message in str(caught.value)


def _ppo_module() -> Any:
    obs, act = gym.spaces.Box(-1.0, 1.0, (3,)), gym.spaces.Box(-1.0, 1.0, (2,))
    return RLModuleSpec(
        module_class=DefaultPPOTorchRLModule,
        observation_space=obs,
        action_space=act,
        model_config=DefaultModelConfig(fcnet_hiddens=[16]),
    ).build()


def test_a_stale_batch_is_read_against_the_policy_the_update_starts_from():
    torch.manual_seed(0)
    module = _ppo_module()
    n = 64
    batch = {Columns.OBS: torch.randn(n, 3), Columns.ACTIONS: torch.randn(n, 2)}
    with torch.no_grad():
        inputs = module.forward_train(batch)[Columns.ACTION_DIST_INPUTS]
        logp = module.get_train_action_dist_cls().from_logits(inputs).logp(batch[Columns.ACTIONS])
    # the policy that sampled it found half the actions twice as likely, half half as likely
    shift = torch.where(torch.arange(n) % 2 == 0, math.log(2.0), -math.log(2.0))
    advantages = torch.randn(n)
    batch |= {
        Columns.ACTION_LOGP: logp + shift,
        Columns.ACTION_DIST_INPUTS: torch.zeros_like(inputs),
        Postprocessing.ADVANTAGES: advantages.clone(),
    }
    out = ProximalPolicy()(rl_module={"p": module}, batch={"p": batch}, episodes=[])["p"]
    # PPO's ratio, clip and KL now start from the proximal policy ...
    assert torch.equal(out[Columns.ACTION_LOGP], logp)
    assert torch.equal(out[Columns.ACTION_DIST_INPUTS], inputs)
    # ... and each advantage is weighed by proximal / sampling policy
    expected = advantages * torch.where(torch.arange(n) % 2 == 0, 0.5, 2.0)
    assert torch.allclose(out[Postprocessing.ADVANTAGES], expected, rtol=1e-5)


def test_a_batch_the_same_policy_sampled_is_left_as_ppo_reads_it():
    torch.manual_seed(1)
    module = _ppo_module()
    batch = {Columns.OBS: torch.randn(32, 3), Columns.ACTIONS: torch.randn(32, 2)}
    with torch.no_grad():
        inputs = module.forward_train(batch)[Columns.ACTION_DIST_INPUTS]
        logp = module.get_train_action_dist_cls().from_logits(inputs).logp(batch[Columns.ACTIONS])
    advantages = torch.randn(32)
    batch |= {
        Columns.ACTION_LOGP: logp,
        Columns.ACTION_DIST_INPUTS: inputs,
        Postprocessing.ADVANTAGES: advantages.clone(),
    }
    out = ProximalPolicy()(rl_module={"p": module}, batch={"p": batch}, episodes=[])["p"]
    assert torch.equal(out[Postprocessing.ADVANTAGES], advantages)  # PPO's loss, exactly
