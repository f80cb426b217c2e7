"""Gymnasium's synchronous vector env, each sub-env's info handed on whole.

RLlib reads a vector env's infos through Gymnasium's ``DictInfoToList``, which splits the
vector's merged info dict back into one dict per sub-env. Gymnasium's own merge
(``VectorEnv._add_info``) goes down every nested dict and makes each leaf a NumPy column, and
the split goes down again to take the columns apart: for the CSTR's info (the states, the
action in physical units, the scenario, the lesson: about twenty leaves) the round trip was
the largest share of Gymnasium's 7.5% of a training iteration (BENCHMARKS.md, profile).
Here each top-level key's value goes into a column of objects as it is, which
``DictInfoToList`` takes apart in one pass: every sub-env's info arrives as the env returned
it, the same values (not NumPy scalars made from them) under the same keys.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class WholeInfoVectorEnv(gym.vector.SyncVectorEnv):
    """``SyncVectorEnv`` whose merged infos hold each sub-env's values unconverted, one
    object column and one ``_key`` mask per top-level key."""

    def _add_info(
        self, vector_infos: dict[str, Any], env_info: dict[str, Any], env_num: int
    ) -> dict[str, Any]:
        for key, value in env_info.items():
            if key not in vector_infos:
                vector_infos[key] = np.full(self.num_envs, None, dtype=object)
                vector_infos[f"_{key}"] = np.zeros(self.num_envs, dtype=np.bool_)
            vector_infos[key][env_num] = value
            vector_infos[f"_{key}"][env_num] = True
        return vector_infos
