"""PPO's torch learner, less RLlib's per-tensor Python on the hot path; the same numbers.

An update of the recipe's networks on one CPU thread is a few hundred microseconds of
arithmetic, so the Python around it counts. Per minibatch, RLlib's learner
- checks every gradient for NaN twice, one tensor at a time (24 checks and 24 host syncs
  for two small MLPs); here it is one reduction over all gradients, and where one is not
  finite RLlib's own code handles it, as before;
- clips by the global norm with a norm, a ``nan_to_num`` and a multiply per tensor; here
  torch's multi-tensor ops do each in one call (on CPU they run the same per-tensor kernels);
- steps Adam one tensor at a time on CPU; here Adam takes the multi-tensor path;
- puts the module in training mode (a walk over its two dozen submodules) before every
  forward pass; here only when it is not;
- logs an "off-policyness" mean that synchronous PPO knows in advance (the updates since
  sampling) and nothing here reads; here it does not.
The updates are the same bit for bit (tests/jobs/test_learner.py), so every figure measured
before holds step for step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.utils.torch_utils import clip_gradients

OVERFLOW = 10e8
"""What RLlib's global norm puts in place of an infinite norm (``nan_to_num``)."""


def clip_by_global_norm(
    gradients: dict[Any, torch.Tensor | None], *, grad_clip: float | None, grad_clip_by: str
) -> torch.Tensor | None:
    """RLlib's ``clip_gradients`` for ``global_norm``, in multi-tensor calls: the same norm
    (each gradient's, its NaN and infinities replaced, then the norm of those), the same
    coefficient, the same gradients, in place; any other mode is RLlib's own."""
    grads = [g.detach() for g in gradients.values() if g is not None]
    if grad_clip is None or grad_clip_by != "global_norm" or not grads:
        return clip_gradients(gradients, grad_clip=grad_clip, grad_clip_by=grad_clip_by)
    norms = torch.stack(torch._foreach_norm(grads, 2.0))
    norms = norms.nan_to_num(neginf=-OVERFLOW, posinf=OVERFLOW)
    total = torch.norm(norms, 2.0).nan_to_num(neginf=-OVERFLOW, posinf=OVERFLOW)
    coeff = torch.clamp(grad_clip / torch.clamp(total + 1e-6, min=grad_clip), max=1.0)
    torch._foreach_mul_(grads, coeff)
    return total


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

    @staticmethod
    def _get_clip_function() -> Callable:
        return clip_by_global_norm

    def _uncompiled_update(self, batch: dict[Any, Any], **kwargs: Any) -> Any:
        if self.config.num_learners > 1:  # DDP: RLlib's, with its no_sync
            return super()._uncompiled_update(batch, **kwargs)
        fwd_out = {}
        for module_id, module_batch in batch.items():
            if module_id not in self.module:
                continue
            module = self.module[module_id]
            if not module.training:
                module.train()
            # TorchRLModule.forward_train less its train() walk: RLModule's (which refuses
            # an inference-only module), then the module's own _forward_train
            fwd_out[module_id] = RLModule.forward_train(module, module_batch)
        loss_per_module = self.compute_losses(fwd_out=fwd_out, batch=batch)
        gradients = self.compute_gradients(loss_per_module)
        self.apply_gradients(self.postprocess_gradients(gradients))
        return fwd_out, loss_per_module, {}

    def _compute_off_policyness(self, batch: Any) -> None:
        pass
