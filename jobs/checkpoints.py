"""Checkpoints and the counters that survive resumes (they live in each checkpoint's metadata)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobs.config import ExperimentConfig
from jobs.rundir import CHECKPOINT_META, RunDir, write_json


@dataclass
class Progress:
    """Counters that survive resumes: they live in every checkpoint's metadata."""

    iteration: int = 0
    env_steps: int = 0
    episodes: int = 0
    wall_time_s: float = 0.0
    sessions: int = 0
    mlflow_run_id: str | None = None

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Progress:
        """The counters a checkpoint's metadata recorded."""
        return cls(
            iteration=meta["iteration"],
            env_steps=meta["env_steps"],
            episodes=meta["episodes"],
            wall_time_s=meta["wall_time_s"],
            sessions=meta["sessions"],
            mlflow_run_id=meta.get("mlflow_run_id"),
        )

    def advance(self, result: dict[str, Any], wall_time_s: float) -> None:
        """Take the counters of one RLlib training result."""
        self.iteration = int(result["training_iteration"])
        self.env_steps = int(result.get("num_env_steps_sampled_lifetime", self.env_steps))
        self.episodes = int(
            result.get("env_runners", {}).get("num_episodes_lifetime", self.episodes)
        )
        self.wall_time_s = wall_time_s


def save_checkpoint(
    algo: Any, run: RunDir, cfg: ExperimentConfig, progress: Progress, observation_shape: list[int]
) -> Path:
    """Save into a hidden folder, add our metadata, then rename: a checkpoint is whole or absent."""
    final = run.checkpoint_path(progress.iteration)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    algo.save_to_path(str(tmp.resolve()))
    meta = {
        "sim": cfg.sim,
        "lessons": str(cfg.lessons.resolve()) if cfg.lessons else None,
        "lesson": cfg.lesson,
        "algorithm": cfg.algorithm,
        "config_digest": cfg.digest(),
        "observation_shape": observation_shape,
        "iteration": progress.iteration,
        "env_steps": progress.env_steps,
        "episodes": progress.episodes,
        "wall_time_s": progress.wall_time_s,
        "sessions": progress.sessions,
        "mlflow_run_id": progress.mlflow_run_id,
        "saved_at": datetime.now(UTC).isoformat(),
    }
    write_json(tmp / CHECKPOINT_META, meta)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    run.prune_checkpoints(cfg.checkpoints.keep)
    return final
