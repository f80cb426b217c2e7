"""PPO's torch learner, less RLlib's per-tensor Python on the hot path; the same numbers.

An update of the recipe's networks on one CPU thread is a few hundred microseconds of
arithmetic, so the Python around it counts. Per minibatch, RLlib's learner
- checks every gradient for NaN twice, one tensor at a time (24 checks and 24 host syncs
  for two small MLPs); here it is one reduction over all gradients, and where one is not
  finite RLlib's own code handles it, as before;
- steps Adam one tensor at a time on CPU; here Adam takes the multi-tensor path;
- clips by the global norm with one norm, one ``nan_to_num`` and one multiply per tensor
  (39 calls for the recipe's networks); here each is one multi-tensor call over them all,
  which on CPU runs the same kernel per tensor (on a GPU, torch's fused multi-tensor norm
  may round its last bit differently);
- computes and logs six loss statistics (policy and value losses, explained variance,
  entropy, KL) that it keeps only for the last minibatch (window 1); here the loss computes
  what the gradient needs, and the statistics are computed once, from the last minibatch's
  tensors, before PPO reads its KL to adapt the KL coefficient;
- cuts each minibatch out of the batch as a ``SampleBatch`` of slices per column, joined
  where one wraps around an epoch; here the batch is gathered once per epoch in the same
  shuffled row order (the same ``np.random.permutation`` per epoch as RLlib's iterator) and
  each minibatch is a view of it;
- logs eight step counters (module and env steps trained, their lifetime sums, the mean
  minibatch size, the weights' sequence number) through the metrics logger, each call a
  lookup and a lock; here they are tallied per minibatch and logged once per update: sums
  of the same counts, reduced to the same values;
- logs an "off-policyness" mean that synchronous PPO knows in advance (the updates since
  sampling) and nothing here reads; here it does not.
The updates, the statistics and the step counters are the same bit for bit on CPU
(tests/jobs/test_learner.py), so every figure measured before holds step for step.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import tree
from ray.rllib.algorithms.ppo.ppo import (
    LEARNER_RESULTS_KL_KEY,
    LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY,
    LEARNER_RESULTS_VF_LOSS_UNCLIPPED_KEY,
)
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core import ALL_MODULES
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import (
    MODULE_TRAIN_BATCH_SIZE_MEAN,
    NUM_ENV_STEPS_TRAINED,
    NUM_ENV_STEPS_TRAINED_LIFETIME,
    NUM_MODULE_STEPS_TRAINED,
    NUM_MODULE_STEPS_TRAINED_LIFETIME,
    WEIGHTS_SEQ_NO,
)
from ray.rllib.utils.minibatch_utils import MiniBatchCyclicIterator
from ray.rllib.utils.torch_utils import clip_gradients, explained_variance


class GatherMinibatches:
    """RLlib's ``MiniBatchCyclicIterator`` for one module's flat batch, by index: the same
    minibatches, row for row. RLlib's shuffles the batch whenever a minibatch runs past its
    end (one ``np.random.permutation`` of its rows), then slices each minibatch out of it as a
    ``SampleBatch`` of its own and joins the two slices of one that wraps around; here the
    permutations compose into one row order, the batch is gathered in it once per epoch, and
    a minibatch is a view of each column (one join where it wraps)."""

    def __init__(
        self, batch: MultiAgentBatch, *, num_epochs: int, minibatch_size: int, shuffle: bool
    ) -> None:
        ((self._module_id, module_batch),) = batch.policy_batches.items()
        self._columns = dict(module_batch)
        self._rows = len(module_batch)
        self._env_steps = len(batch)
        self._num_epochs, self._minibatch_size, self._shuffle = num_epochs, minibatch_size, shuffle

    @staticmethod
    def handles(batch: MultiAgentBatch) -> bool:
        """One module, rows that are single time steps, every column a tensor or array of
        them."""
        if len(batch.policy_batches) != 1:
            return False
        (module_batch,) = batch.policy_batches.values()
        rows = len(module_batch)
        return (
            rows > 0
            and not module_batch._slice_seq_lens_in_B
            and module_batch.get(SampleBatch.SEQ_LENS) is None
            and all(
                isinstance(leaf, torch.Tensor | np.ndarray) and leaf.shape[:1] == (rows,)
                for leaf in tree.flatten(dict(module_batch))
            )
        )

    def __iter__(self) -> Iterator[MultiAgentBatch]:
        rows = np.arange(self._rows)
        shuffled = self._columns  # the batch in its current row order
        start, epochs = 0, 0
        while epochs < self._num_epochs:
            pieces, needed = [], self._minibatch_size
            while start + needed >= self._rows:  # runs past the end: the tail, then reshuffle
                pieces.append(_rows(shuffled, start, self._rows))
                needed -= self._rows - start
                start, epochs = 0, epochs + 1
                if self._shuffle:
                    rows = rows[np.random.permutation(self._rows)]
                    shuffled = _gather(self._columns, rows)
            if needed > 0:
                pieces.append(_rows(shuffled, start, start + needed))
                start += needed
            minibatch = pieces[0] if len(pieces) == 1 else _concat(pieces)
            yield MultiAgentBatch(
                {self._module_id: SampleBatch(minibatch)}, env_steps=self._env_steps
            )


def _gather(columns: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    index = torch.from_numpy(rows)
    return tree.map_structure(
        lambda column: column[index] if isinstance(column, torch.Tensor) else column[rows],
        columns,
    )


def _rows(columns: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    return tree.map_structure(lambda column: column[start:stop], columns)


def _concat(pieces: list[dict[str, Any]]) -> dict[str, Any]:
    return tree.map_structure(
        lambda *parts: (
            torch.cat(parts) if isinstance(parts[0], torch.Tensor) else np.concatenate(parts)
        ),
        *pieces,
    )


class LeanPPOTorchLearner(PPOTorchLearner):
    _last_loss: dict[Any, dict[str, Any]]
    """Per module, the last minibatch's tensors its loss statistics are computed from."""
    _minibatch_rows: dict[Any, list[int]]
    """Per module, the rows of each minibatch of this update, in order."""
    _minibatch_env_steps: list[int]
    """The env steps of each minibatch of this update, as RLlib counts them."""

    def build(self) -> None:
        super().build()
        self._last_loss, self._minibatch_rows, self._minibatch_env_steps = {}, {}, []

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
    def _get_clip_function() -> Any:
        return clip_by_global_norm

    def _compute_off_policyness(self, batch: Any) -> None:
        pass

    def _create_iterator_if_necessary(self, *, training_data: Any, **kwargs: Any) -> Any:
        batch_iter = super()._create_iterator_if_necessary(training_data=training_data, **kwargs)
        if type(batch_iter) is not MiniBatchCyclicIterator:
            return batch_iter
        batch = batch_iter._batch
        if batch_iter._num_total_minibatches or not GatherMinibatches.handles(batch):
            return batch_iter
        return GatherMinibatches(
            batch,
            num_epochs=batch_iter._num_epochs,
            minibatch_size=batch_iter._minibatch_size,
            shuffle=batch_iter._shuffle_batch_per_epoch,
        )

    def compute_loss_for_module(
        self, *, module_id: Any, config: Any, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> torch.Tensor:
        """RLlib's PPO loss, op for op where the gradient flows; its statistics deferred
        to :meth:`after_gradient_based_update`."""
        module = self.module[module_id].unwrapped()
        if Columns.LOSS_MASK in batch:
            mask = batch[Columns.LOSS_MASK]
            num_valid = torch.sum(mask)

            def mean(data: torch.Tensor) -> torch.Tensor:
                return torch.sum(data[mask]) / num_valid

        else:
            mean = torch.mean
        current = module.get_train_action_dist_cls().from_logits(
            fwd_out[Columns.ACTION_DIST_INPUTS]
        )
        logp_ratio = torch.exp(current.logp(batch[Columns.ACTIONS]) - batch[Columns.ACTION_LOGP])
        kl = None
        if config.use_kl_loss:
            previous = module.get_exploration_action_dist_cls().from_logits(
                batch[Columns.ACTION_DIST_INPUTS]
            )
            kl = mean(previous.kl(current))
        entropy = current.entropy()
        advantages = batch[Postprocessing.ADVANTAGES]
        surrogate = torch.min(
            advantages * logp_ratio,
            advantages * torch.clamp(logp_ratio, 1 - config.clip_param, 1 + config.clip_param),
        )
        values = vf_loss = None
        if config.use_critic:
            values = module.compute_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS))
            vf_loss = torch.pow(values - batch[Postprocessing.VALUE_TARGETS], 2.0)
            vf_clipped = torch.clamp(vf_loss, 0, config.vf_clip_param)
        else:  # RLlib's: no value loss, a zero in its place
            vf_clipped = torch.tensor(0.0, device=surrogate.device)
        entropy_coeff = self.entropy_coeff_schedulers_per_module[module_id].get_current_value()
        total = mean(-surrogate + config.vf_loss_coeff * vf_clipped - entropy_coeff * entropy)
        if kl is not None:
            total += self.curr_kl_coeffs_per_module[module_id] * kl
        self._last_loss[module_id] = dict(
            mean=mean, surrogate=surrogate, entropy=entropy, kl=kl, values=values,
            vf_loss=vf_loss, vf_clipped=vf_clipped, targets=batch[Postprocessing.VALUE_TARGETS],
        )  # fmt: skip
        return total

    def _log_steps_trained_metrics(self, batch: MultiAgentBatch) -> None:
        for module_id, module_batch in batch.policy_batches.items():
            self._minibatch_rows.setdefault(module_id, []).append(len(module_batch))
        self._minibatch_env_steps.append(batch.env_steps())

    def _log_steps_trained(self) -> None:
        """RLlib's step counters for this update's minibatches, one call each: the sums of
        what it logs per minibatch, and the mean minibatch size (once when every minibatch
        has the same rows, as ``GatherMinibatches`` cuts them, else each)."""
        log = self.metrics.log_value
        for module_id, rows in self._minibatch_rows.items():
            log((module_id, WEIGHTS_SEQ_NO), self._weights_seq_no, window=1)
            for size in rows[:1] if len(set(rows)) == 1 else rows:
                log((module_id, MODULE_TRAIN_BATCH_SIZE_MEAN), size, reduce="mean")
            steps = sum(rows)
            log((module_id, NUM_MODULE_STEPS_TRAINED), steps, reduce="sum")
            for key, reduce in (
                ((module_id, NUM_MODULE_STEPS_TRAINED_LIFETIME), "lifetime_sum"),
                ((ALL_MODULES, NUM_MODULE_STEPS_TRAINED), "sum"),
                ((ALL_MODULES, NUM_MODULE_STEPS_TRAINED_LIFETIME), "lifetime_sum"),
            ):
                log(key, steps, reduce=reduce, with_throughput=True)
        if self._minibatch_env_steps:
            steps = sum(self._minibatch_env_steps)
            for key, reduce in (
                ((ALL_MODULES, NUM_ENV_STEPS_TRAINED), "sum"),
                ((ALL_MODULES, NUM_ENV_STEPS_TRAINED_LIFETIME), "lifetime_sum"),
            ):
                log(key, steps, reduce=reduce, with_throughput=True)
        self._minibatch_rows, self._minibatch_env_steps = {}, []

    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        self._log_steps_trained()
        with torch.no_grad():
            for module_id, last in self._last_loss.items():
                self.metrics.log_dict(_loss_statistics(**last), key=module_id, window=1)
        self._last_loss = {}
        super().after_gradient_based_update(timesteps=timesteps)  # PPO reads the KL here


def clip_by_global_norm(
    gradients_dict: dict[Any, torch.Tensor | None], *, grad_clip: float | None, grad_clip_by: str
) -> torch.Tensor | None:
    """RLlib's ``clip_gradients`` by the global norm, op for op, each per-tensor step one
    multi-tensor call; the other modes (and a missing gradient) are RLlib's own."""
    grads = list(gradients_dict.values())
    if (
        grad_clip is None
        or grad_clip_by != "global_norm"
        or not grads
        or any(g is None for g in grads)
    ):
        return clip_gradients(gradients_dict, grad_clip=grad_clip, grad_clip_by=grad_clip_by)
    norms = torch.stack(torch._foreach_norm(grads, 2.0)).nan_to_num(neginf=-10e8, posinf=10e8)
    total = torch.norm(norms, 2.0).nan_to_num(neginf=-10e8, posinf=10e8)
    coeff = torch.clamp(grad_clip / torch.clamp(total + 1e-6, min=grad_clip), max=1.0)
    torch._foreach_mul_(grads, coeff)
    return total


def _loss_statistics(
    *,
    mean: Any,
    surrogate: Any,
    entropy: Any,
    kl: Any,
    values: Any,
    vf_loss: Any,
    vf_clipped: Any,
    targets: Any,
) -> dict[str, torch.Tensor]:
    """What RLlib's PPO loss logs, from one minibatch's tensors (a zero for each value
    statistic without a critic, and for the KL without a KL loss, as RLlib's)."""
    zero = torch.tensor(0.0, device=surrogate.device)
    return {
        POLICY_LOSS_KEY: -mean(surrogate),
        VF_LOSS_KEY: zero if values is None else mean(vf_clipped),
        LEARNER_RESULTS_VF_LOSS_UNCLIPPED_KEY: zero if values is None else mean(vf_loss),
        LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY: explained_variance(
            targets, zero if values is None else values
        ),
        ENTROPY_KEY: mean(entropy),
        LEARNER_RESULTS_KL_KEY: zero if kl is None else kl,
    }
