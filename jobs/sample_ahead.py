"""PPO whose env runners sample the next batch while the learner updates on this one.

RLlib's PPO takes turns: the env runners sample a train batch, then wait while the learner
updates on it. With ``env_runners.sample_ahead`` each runner is asked for its next batch as
soon as it hands over this one, so sampling (in the runner processes) and learning (in the
driver) run at the same time, on different cores. The price is one update of staleness:
each batch was sampled by the policy from before the previous update. PPO's clipped
objective already weighs every action by the ratio of the current policy to the one that
sampled it (the sampling policy's log-probabilities travel with the episodes), so the loss
stays correct; the clipping bounds how far a stale batch moves the policy.

Built on RLlib's own asynchronous requests (``foreach_env_runner_async_fetch_ready``, as
APPO and IMPALA sample), with its fault tolerance: a runner that dies is restarted by the
algorithm, and its lost request is simply not waited for.
"""

from __future__ import annotations

from typing import Any

import tree
from ray.rllib.algorithms.ppo import PPO
from ray.rllib.core import ALL_MODULES
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

TAG = "sample_ahead"
WAIT_S = 0.05  # how long one poll for the runners' batches waits


def _sample(runner: Any) -> tuple[Any, Any]:
    return runner.sample(), runner.get_metrics()


class SampleAheadPPO(PPO):
    """RLlib's PPO with the sampling of batch k+1 overlapping the update on batch k."""

    def training_step(self) -> None:
        group = self.env_runner_group
        if group is None or group.num_healthy_remote_env_runners() == 0:
            return super().training_step()  # sampling in the driver: nothing to overlap

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
                for sampled, stats in ready:
                    these = tree.flatten(sampled)
                    episodes.extend(these)
                    metrics.append(stats)
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
