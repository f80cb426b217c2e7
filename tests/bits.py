"""Digests that compare two runs to the bit, for the scripts the tests run in a process of
their own (``tests.conftest.script_json``)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np


def weights(learner: Any) -> str:
    """The learner's default module's weights, every tensor in name order."""
    state = learner.module["default_policy"].state_dict()
    return hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()


def episodes(sampled: list[Any]) -> str:
    """Sampled episodes: observations, actions, rewards, the action's log-probability and
    distribution inputs, and how each ended."""
    digest = hashlib.sha256()
    for episode in sampled:
        for part in (
            episode.get_observations(),
            episode.get_actions(),
            episode.get_rewards(),
            episode.get_extra_model_outputs("action_logp"),
            episode.get_extra_model_outputs("action_dist_inputs"),
            [episode.is_terminated, episode.is_truncated],
        ):
            digest.update(np.asarray(part).tobytes())
    return digest.hexdigest()
