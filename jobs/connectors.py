"""RLlib's default env-runner connectors for one agent and a feed-forward module, fused: the
same data in and out, without the round trip through per-env items in between.

Per vector step, RLlib's default env-to-module pipeline gathers each sub-env's last
observation as an item keyed by its episode, batches the items and makes a tensor; its
module-to-env pipeline samples the actions, makes arrays, splits every column back into
per-episode items, unsquashes each item's action on its own and lists the items again. Each
of those eleven pieces is timed into RLlib's metrics as it runs. For the recipe's small
networks that Python was 18% of an iteration (``invoke bench --only profile``). Here each
direction is one piece that calls the same RLlib functions (the episode's
``get_observations``, ``batch``, ``convert_to_torch_tensor``, ``GetActions``,
``convert_to_numpy``, ``unsquash_action`` or ``clip_action``) on the whole batch at once:
element-wise arithmetic on a stacked array is the same arithmetic as on its rows, so the
observations, actions, log-probabilities and actions sent to the env are the same to the bit
(tests/jobs/test_connectors.py), and so is all training that follows.

Used where RLlib's default pipelines would hold nothing else: a single agent and a module
without recurrent state, which every config here is (jobs.algorithms builds the model;
``training.extra`` cannot set one).
"""

from __future__ import annotations

import functools
from typing import Any

from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.connectors.module_to_env import GetActions
from ray.rllib.core.columns import Columns
from ray.rllib.utils.numpy import convert_to_numpy
from ray.rllib.utils.spaces.space_utils import (
    batch as stack,
)
from ray.rllib.utils.spaces.space_utils import (
    clip_action,
    get_base_struct_from_space,
    unbatch,
    unsquash_action,
)
from ray.rllib.utils.torch_utils import convert_to_torch_tensor


class ObservationsToModule(ConnectorV2):
    """Every sub-env's latest observation, stacked in env order, as a tensor: what
    AddObservationsFromEpisodesToBatch, BatchIndividualItems and NumpyToTensor make of
    them for a single agent without recurrent state."""

    def __init__(self, *args: Any, device: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._device = device

    def __call__(self, *, rl_module: Any, batch: dict, episodes: list, **kwargs: Any) -> Any:
        if Columns.OBS not in batch:
            observations = stack([episode.get_observations(-1) for episode in episodes])
            batch[Columns.OBS] = convert_to_torch_tensor(observations, device=self._device)
        return batch


class ActionsToEnv(ConnectorV2):
    """The module's output to what the env runner reads: actions sampled (GetActions), as
    arrays, the env's copy unsquashed or clipped into its action space, and every other
    column as a list of per-env items, as RLlib's default pipeline leaves them."""

    def __init__(
        self, *args: Any, normalize_actions: bool = True, clip_actions: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.normalize_actions = normalize_actions
        self.clip_actions = clip_actions
        self._sample_actions = GetActions()

    def recompute_output_action_space(self, input_observation_space: Any, input_action_space: Any):
        self._action_space_struct = get_base_struct_from_space(input_action_space)
        return input_action_space

    def __call__(
        self, *, rl_module: Any, batch: dict, episodes: list, explore: Any = None, **kwargs: Any
    ) -> Any:
        batch = self._sample_actions(
            rl_module=rl_module, batch=batch, episodes=episodes, explore=explore
        )
        batch = convert_to_numpy(batch)
        actions = batch[Columns.ACTIONS]
        if self.normalize_actions:
            batch[Columns.ACTIONS_FOR_ENV] = unsquash_action(actions, self._action_space_struct)
        elif self.clip_actions:
            batch[Columns.ACTIONS_FOR_ENV] = clip_action(actions, self._action_space_struct)
        for column, data in batch.items():
            if column not in (Columns.ACTIONS, Columns.ACTIONS_FOR_ENV):
                batch[column] = unbatch(data)
        return batch


def observations_to_module(env: Any = None, spaces: Any = None, device: Any = None) -> Any:
    """``config.env_runners(env_to_module_connector=...)``."""
    return ObservationsToModule(device=device)


def actions_to_env(
    env: Any = None, spaces: Any = None, *, normalize_actions: bool, clip_actions: bool
) -> Any:
    """``config.env_runners(module_to_env_connector=functools.partial(actions_to_env,
    normalize_actions=..., clip_actions=...))``, with the config's own two settings."""
    return ActionsToEnv(normalize_actions=normalize_actions, clip_actions=clip_actions)


def use_fused_connectors(config: Any) -> None:
    """Replace RLlib's default env-runner pipelines with the two fused pieces."""
    config.env_runners(
        env_to_module_connector=observations_to_module,
        module_to_env_connector=functools.partial(
            actions_to_env,
            normalize_actions=config.normalize_actions,
            clip_actions=config.clip_actions,
        ),
        add_default_connectors_to_env_to_module_pipeline=False,
        add_default_connectors_to_module_to_env_pipeline=False,
    )


def use_rllib_connectors(config: Any) -> Any:
    """RLlib's own default pipelines instead (to compare against: the profile, the tests)."""
    return config.env_runners(
        env_to_module_connector=None,
        module_to_env_connector=None,
        add_default_connectors_to_env_to_module_pipeline=True,
        add_default_connectors_to_module_to_env_pipeline=True,
    )
