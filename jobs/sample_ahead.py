"""PPO whose env runners sample the next batch while the learner updates on this one.

RLlib's PPO takes turns: the env runners sample a train batch, then wait while the learner
updates on it. With ``env_runners.sample_ahead`` each runner is asked for its next batch as
soon as it hands over this one, so sampling (in the runner processes) and learning (in the
driver) run at the same time, on different cores. The price is one update of staleness:
each batch was sampled by the policy from before the previous update. PPO's clipped
objective already weighs every action by the ratio of the current policy to the one that
sampled it (the sampling policy's log-probabilities travel with the episodes), so the loss
stays correct. But the clip would then be centred on the policy from before the previous
update: samples whose ratio that update already moved past the clip give no gradient, and a
stale batch teaches less. So the learner clips around the policy it starts this update from
(the proximal policy) and weighs each sample by how much likelier that policy finds the
action than the one that sampled it, "decoupled PPO" (Hilton, Cobbe and Schulman, "Batch
size-invariance for policy optimization", 2021). Where the two policies are the same, as in
PPO taking turns, this is PPO's loss exactly.

Built on RLlib's own asynchronous requests (``foreach_env_runner_async_fetch_ready``, as
APPO and IMPALA sample), with its fault tolerance: a runner that dies is restarted by the
algorithm, and its lost request is simply not waited for.
"""

from __future__ import annotations

from typing import Any

import torch
import tree
from ray.rllib.algorithms.ppo import PPO
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core import ALL_MODULES
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_MODULE_STEPS_TRAINED_LIFETIME,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)

from jobs.callbacks import take_written
from jobs.learner import LeanPPOTorchLearner

TAG = "sample_ahead"
WAIT_S = 0.05  # how long one poll for the runners' batches waits


def _sample(runner: Any) -> tuple[Any, Any, list[str]]:
    return runner.sample(), runner.get_metrics(), take_written()


class SampleAheadPPO(PPO):
    """RLlib's PPO with the sampling of batch k+1 overlapping the update on batch k."""

    trajectory_files_trained_on: set[str]
    """The trajectory files of the batches handed to the learner. A runner writes its next
    batch's file before the learner has it, so a checkpoint covers only these (a resume
    rolls the others back, jobs.checkpoints)."""

    def setup(self, config: Any) -> None:
        super().setup(config)
        self.trajectory_files_trained_on = set()
        # RLlib hands the learner's first weights to the env runners with their states,
        # which sampling ahead does not broadcast (jobs.algorithms): without this, the first
        # two batches would come from the runners' own random weights, not the learner's.
        if self.env_runner_group is not None:
            self.env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group, inference_only=True
            )

    def training_step(self) -> None:
        group = self.env_runner_group
        if group is None or group.num_healthy_remote_env_runners() == 0:
            super().training_step()  # sampling in the driver: nothing to overlap
            self.trajectory_files_trained_on.update(take_written())
            return

        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            episodes, metrics = [], []
            steps = 0
            # Collect this batch (asked for at the last iteration, or now at the first);
            # each runner that hands over its part is at once asked for its next one.
            while steps < self.config.total_train_batch_size:
                if group.num_healthy_remote_env_runners() == 0:
                    break  # every runner failed; the algorithm restarts them
                ready = group.foreach_env_runner_async_fetch_ready(
                    _sample, tag=TAG, timeout_seconds=WAIT_S
                )
                for sampled, stats, files in ready:
                    these = tree.flatten(sampled)
                    episodes.extend(these)
                    metrics.append(stats)
                    self.trajectory_files_trained_on.update(files)
                    steps += sum(len(episode) for episode in these)
            if not episodes:
                return
            self.metrics.aggregate(metrics, key=ENV_RUNNER_RESULTS)

        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            learner_results = self.learner_group.update(
                episodes=episodes,
                timesteps={
                    NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                        (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME)
                    ),
                    NUM_MODULE_STEPS_TRAINED_LIFETIME: self.metrics.peek(
                        (LEARNER_RESULTS, ALL_MODULES, NUM_MODULE_STEPS_TRAINED_LIFETIME),
                        default=0,
                    ),
                },
                num_epochs=self.config.num_epochs,
                minibatch_size=self.config.minibatch_size,
                shuffle_batch_per_epoch=self.config.shuffle_batch_per_epoch,
            )
            self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)

        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            # Queued behind each runner's request in flight: the batch after next uses them.
            self.env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group,
                policies=set(learner_results[0].keys()) - {ALL_MODULES},
                inference_only=True,
            )


class ProximalPolicy(ConnectorV2):
    """The last piece of the learner's pipeline (after GAE): the batch as decoupled PPO reads
    it. The module, with the weights this update starts from, gives each action its
    log-probability and distribution inputs; they replace the sampling policy's, so PPO's
    ratio, clip and KL term are taken to the proximal policy, and each advantage is scaled by
    the importance weight proximal / sampling policy, so the objective stays an expectation
    under the policy that sampled the batch."""

    def __call__(self, *, rl_module: Any, batch: dict, episodes: Any, **kwargs: Any) -> Any:
        for module_id, columns in batch.items():
            module = rl_module[module_id].unwrapped()
            with torch.no_grad():
                inputs = module.forward_train(columns)[Columns.ACTION_DIST_INPUTS]
                dist = module.get_train_action_dist_cls().from_logits(inputs)
                logp = dist.logp(columns[Columns.ACTIONS])
                weight = torch.exp(logp - columns[Columns.ACTION_LOGP])
            columns[Postprocessing.ADVANTAGES] = columns[Postprocessing.ADVANTAGES] * weight
            columns[Columns.ACTION_LOGP] = logp
            columns[Columns.ACTION_DIST_INPUTS] = inputs
        return batch


class SampleAheadLearner(LeanPPOTorchLearner):
    """The lean PPO learner, its batches read through :class:`ProximalPolicy`."""

    def build(self) -> None:
        super().build()  # PPO's pipeline, GAE last
        if (
            self._learner_connector is not None
            and self.config.add_default_connectors_to_learner_pipeline
        ):
            self._learner_connector.append(ProximalPolicy())
