"""jobs/learner.py: PPO's learner with less Python per minibatch updates the networks to the
same bits as RLlib's own, finite gradients or not, and reports the same loss statistics and
step counters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import script_json

# Each learner class in turn, from the same seed, in a process of its own (a Ray of its
# own): a digest of the weights at the start, after two iterations, and after one more
# update whose gradients hold a NaN (RLlib's handling: zeroed, with a warning). The gradient
# clip is small enough that every minibatch's gradients are scaled down, so the clip's
# multiply is compared too, not only its norm.
SAME_BITS = """
import json
import ray, torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from jobs.algorithms import algorithm_config
from jobs.config import load_config
from tests import bits
torch.set_num_threads(1)
STATS = ("policy_loss", "vf_loss", "vf_loss_unclipped", "vf_explained_var", "entropy",
         "mean_kl_loss", "curr_kl_coeff")
COUNTERS = {"default_policy": ("num_module_steps_trained", "num_module_steps_trained_lifetime",
                               "module_train_batch_size_mean", "weights_seq_no"),
            "__all_modules__": ("num_module_steps_trained", "num_module_steps_trained_lifetime",
                                "num_env_steps_trained", "num_env_steps_trained_lifetime")}
ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")

out = {}
for name in ("rllib", "ours"):
    cfg = load_config("jobs/configs/cstr_ppo.yaml", [
        "env_runners.num_env_runners=0", "env_runners.num_envs_per_env_runner=4",
        "training.train_batch_size=800", "training.minibatch_size=100", "training.num_epochs=2",
        "trajectories.enabled=false", "training.grad_clip=0.01",
    ])
    config = algorithm_config(cfg, None)
    if name == "rllib":
        config.learners(learner_class=PPOTorchLearner)
    algo = config.build_algo()
    learner = algo.learner_group._learner
    start = bits.weights(learner)
    counters = []
    for _ in range(2):
        result = algo.train()
        counters.append({f"{group}/{key}": float(result["learners"][group][key])
                         for group, keys in COUNTERS.items() for key in keys})
    trained = bits.weights(learner)
    grads = {pid: torch.ones_like(p) for pid, p in learner._params.items()}
    next(iter(grads.values()))[0] = float("nan")
    learner.apply_gradients(grads)
    out[name] = {
        "class": type(learner).__name__, "start": start, "trained": trained,
        "global_norm": float(result["learners"]["default_policy"][
            "gradients_default_optimizer_global_norm"]),
        "statistics": {key: float(result["learners"]["default_policy"][key]) for key in STATS},
        "counters": counters,
        "after_nan": bits.weights(learner),
        "finite": all(bool(p.isfinite().all()) for p in learner._params.values()),
    }
    algo.stop()
print(json.dumps(out))
"""


def test_the_lean_learner_updates_to_the_same_bits_as_rllibs():
    out, stderr = script_json(SAME_BITS)
    rllib, ours = out["rllib"], out["ours"]
    assert (rllib["class"], ours["class"]) == ("PPOTorchLearner", "LeanPPOTorchLearner")
    assert rllib["start"] == ours["start"] and rllib["trained"] != rllib["start"]  # it learned
    assert ours["trained"] == rllib["trained"]
    assert ours["global_norm"] == rllib["global_norm"] > 0.01  # clipped, the same norm
    # the loss statistics, computed once from the last minibatch, are RLlib's to the bit
    assert ours["statistics"] == rllib["statistics"]
    assert rllib["statistics"]["mean_kl_loss"] > 0 and rllib["statistics"]["vf_loss"] > 0
    # the step counters, logged once per update, reduce to RLlib's per-minibatch values
    assert ours["counters"] == rllib["counters"]
    first, second = rllib["counters"]
    assert first["default_policy/module_train_batch_size_mean"] == 100  # the minibatch size
    assert second["default_policy/weights_seq_no"] == 2  # the second update
    per_update = [
        counters["default_policy/num_module_steps_trained"] for counters in (first, second)
    ]
    assert min(per_update) >= 2 * 800  # 2 epochs over at least the train batch, each update
    assert second["default_policy/num_module_steps_trained_lifetime"] == sum(per_update)
    # a NaN in a gradient: zeroed and stepped as RLlib does, never written into the weights
    assert ours["after_nan"] == rllib["after_nan"] != rllib["trained"]
    assert ours["finite"] and rllib["finite"]
    assert "contain `nan/inf` values" in stderr


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize(
    ("rows", "minibatch_size", "num_epochs"), [(10, 4, 3), (7, 7, 2), (5, 8, 2)]
)
def test_gathered_minibatches_are_rllibs_row_for_row(shuffle, rows, minibatch_size, num_epochs):
    """GatherMinibatches against RLlib's MiniBatchCyclicIterator from the same np.random
    state: minibatches that wrap into the next epoch (10 rows by 4), that end exactly at an
    epoch's end (7 by 7), and that are larger than the batch (5 by 8); tensor and array
    columns."""
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
    from ray.rllib.utils.minibatch_utils import MiniBatchCyclicIterator

    from jobs.learner import GatherMinibatches

    def batch() -> MultiAgentBatch:
        columns = {
            "obs": torch.arange(rows * 3, dtype=torch.float32).reshape(rows, 3),
            "advantages": torch.arange(rows, dtype=torch.float64) / 7,
            "episode_id": np.arange(rows) * 10,
        }
        return MultiAgentBatch({"default_policy": SampleBatch(columns)}, env_steps=rows)

    def taken(iterator) -> list[dict]:
        return [
            {key: np.asarray(value).tolist() for key, value in mb["default_policy"].items()}
            for mb in iterator
        ]

    kwargs = dict(num_epochs=num_epochs, minibatch_size=minibatch_size)
    assert GatherMinibatches.handles(batch())
    np.random.seed(3)
    rllibs = taken(MiniBatchCyclicIterator(batch(), shuffle_batch_per_epoch=shuffle, **kwargs))
    np.random.seed(3)
    ours = taken(GatherMinibatches(batch(), shuffle=shuffle, **kwargs))
    assert ours == rllibs
    assert {len(mb["obs"]) for mb in ours} == {minibatch_size}
    assert len(ours) >= num_epochs * rows // minibatch_size  # every epoch covered


@pytest.mark.parametrize(
    ("scale", "poison"),
    [(1e-3, None), (10.0, None), (10.0, float("nan")), (10.0, float("inf")), (1e30, None)],
)
def test_clipping_by_the_global_norm_is_rllibs_to_the_bit(scale, poison):
    """jobs.learner.clip_by_global_norm against RLlib's clip_gradients on the same gradients:
    under the clip (untouched), over it (scaled down), with a NaN or an inf in one tensor
    (RLlib's nan_to_num on the norms), and large enough that a squared norm overflows."""
    from ray.rllib.utils.torch_utils import clip_gradients

    from jobs.learner import clip_by_global_norm

    generator = torch.Generator().manual_seed(0)
    shapes = [(64, 6), (64,), (64, 64), (64,), (2, 64), (2,)]
    grads = [torch.randn(shape, generator=generator) * scale for shape in shapes]
    if poison is not None:
        grads[2][3, 5] = poison

    def clipped(clip):
        copies = {f"p{i}": g.clone() for i, g in enumerate(grads)}
        norm = clip(copies, grad_clip=0.5, grad_clip_by="global_norm")
        return norm, copies

    (rllib_norm, rllibs), (our_norm, ours) = clipped(clip_gradients), clipped(clip_by_global_norm)
    assert (
        our_norm.view(-1).view(torch.int32).item() == rllib_norm.view(-1).view(torch.int32).item()
    )
    for key, expected in rllibs.items():
        assert torch.equal(ours[key].view(torch.int32), expected.view(torch.int32)), key
    if poison is None and scale == 1e-3:
        assert all(torch.equal(ours[f"p{i}"], g) for i, g in enumerate(grads))  # under the clip
    elif poison is None and scale == 10.0:  # scaled down to the clip
        assert torch.norm(torch.stack([torch.norm(g) for g in ours.values()])) <= 0.5 + 1e-6
    # the other modes and a missing gradient are RLlib's own
    missing = {"a": None, "b": torch.ones(3) * 4}
    assert clip_by_global_norm(missing, grad_clip=0.5, grad_clip_by="global_norm") is not None
    by_value = {"a": torch.tensor([3.0, -3.0])}
    clip_by_global_norm(by_value, grad_clip=1.0, grad_clip_by="value")
    assert by_value["a"].tolist() == [1.0, -1.0]
