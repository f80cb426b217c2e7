"""The run directory: ``runs/<experiment>/<run-id>/``, its files, and atomic writes."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CHECKPOINT_PREFIX = "iter-"
CHECKPOINT_META = "aml_rl.json"  # our metadata inside each RLlib checkpoint folder


class RunError(ValueError):
    """A path given as a run or checkpoint is not one; the message says what is missing."""


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename: never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as tmp:
        tmp.write(text)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def new_run_id(now: datetime | None = None) -> str:
    """Sorts by start time (UTC), with a random suffix so that parallel starts never collide."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def create(cls, runs_root: Path, experiment: str) -> RunDir:
        run = cls(runs_root / experiment / new_run_id())
        run.path.mkdir(parents=True)
        return run

    @classmethod
    def at(cls, path: Path) -> RunDir:
        """A run in exactly ``path`` (an Azure ML output folder), created if need be."""
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @staticmethod
    def has_checkpoint(path: Path) -> bool:
        return (path / "config.yaml").is_file() and RunDir(path).latest_checkpoint() is not None

    @classmethod
    def open(cls, path: Path) -> RunDir:
        """An existing run; :class:`RunError` naming what is missing if ``path`` is not one."""
        if not path.is_dir():
            raise RunError(
                f"{path}: no such directory; pass a run directory such as runs/cstr_ppo/<run-id>"
            )
        if not (path / "config.yaml").is_file():
            raise RunError(
                f"{path}: not a run directory (no config.yaml); pass a folder made by "
                "`invoke train`, such as runs/cstr_ppo/<run-id>"
            )
        return cls(path)

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def trajectories(self) -> Path:
        return self.path / "trajectories"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def assessment(self) -> Path:
        return self.path / "assessment"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{(self.path / 'mlflow.db').resolve()}"

    def checkpoint_dirs(self) -> list[Path]:
        """Complete checkpoints, oldest first (a checkpoint is complete once renamed)."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(p for p in self.checkpoints.iterdir() if p.name.startswith(CHECKPOINT_PREFIX))

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoint_dirs()
        return found[-1] if found else None

    def checkpoint_path(self, iteration: int) -> Path:
        return self.checkpoints / f"{CHECKPOINT_PREFIX}{iteration:06d}"

    def prune_checkpoints(self, keep: int) -> None:
        for old in self.checkpoint_dirs()[:-keep]:
            shutil.rmtree(old)


def read_checkpoint_meta(checkpoint: Path) -> dict[str, Any]:
    """Our metadata of an RLlib checkpoint; :class:`RunError` if it is not one of ours."""
    meta = checkpoint / CHECKPOINT_META
    if not meta.is_file():
        raise RunError(
            f"{checkpoint}: not an aml-rl checkpoint (no {CHECKPOINT_META}); pass a folder "
            "under a run's checkpoints/, such as runs/cstr_ppo/<run-id>/checkpoints/iter-000010"
        )
    return json.loads(meta.read_text())
