"""PPO's torch learner, less RLlib's per-tensor Python on the hot path; the same numbers.

An update of the recipe's networks on one CPU thread is a few hundred microseconds of
arithmetic, so the Python around it counts: per minibatch, RLlib's learner checks every
gradient for NaN twice, one tensor at a time (24 checks and 24 host syncs for two small
MLPs), and its Adam steps one tensor at a time on CPU. Here the check is one reduction over
all gradients, and Adam takes the multi-tensor path. Where a gradient is not finite, RLlib's
own code handles it, as before. And it drops RLlib's "off-policyness" metric, a mean per
minibatch that synchronous PPO knows in advance (the updates since sampling) and nothing
here reads. The updates are the same bit for bit (tests/jobs/test_learner.py), so every
figure measured before holds step for step.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner


class LeanPPOTorchLearner(PPOTorchLearner):
    def configure_optimizers_for_module(self, module_id: Any, config: Any = None) -> None:
        params = self.get_parameters(self._module[module_id])
        # foreach: the same element-wise kernels as the single-tensor loop, one call each
        self.register_optimizer(
            module_id=module_id,
            optimizer=torch.optim.Adam(params, foreach=True),
            params=params,
            lr_or_lr_schedule=config.lr,
        )

    def apply_gradients(self, gradients_dict: dict[Any, torch.Tensor]) -> None:
        grads = [g for g in gradients_dict.values() if g is not None]
        if (
            len(grads) != len(gradients_dict)
            or self._grad_scalers is not None
            or self._lr_scheduler_classes is not None
        ):
            return super().apply_gradients(gradients_dict)
        if not torch.stack(torch._foreach_norm(grads)).isfinite().all():
            # NaN or inf somewhere (or a norm that overflows): RLlib's own handling
            return super().apply_gradients(gradients_dict)
        for pid, grad in gradients_dict.items():
            self._params[pid].grad = grad
        for module_id, optimizer_names in self._module_optimizers.items():
            for optimizer_name in optimizer_names:
                self.get_optimizer(module_id, optimizer_name).step()

    def _compute_off_policyness(self, batch: Any) -> None:
        pass
