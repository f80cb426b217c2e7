"""Checkpoints, the counters that survive resumes, and what makes a resume exact.

A checkpoint is the unit of commitment: the iterations' metrics are written to metrics.jsonl
and MLflow only once the checkpoint that holds them is saved, and each checkpoint records the
trajectory files that existed when it was saved. A resume from a checkpoint therefore finds
nothing of the iterations it rolls back except trajectory files, which it moves aside.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobs.config import ExperimentConfig
from jobs.rundir import (
    CHECKPOINT_META,
    RunDir,
    RunError,
    read_checkpoint_meta,
    session_tag,
    write_atomic,
    write_json,
)
from jobs.trajectories import trajectory_files

METRICS = "metrics.jsonl"  # in a checkpoint: the lines of the iterations since the previous one
TRAJECTORIES = "trajectories.json"  # in a checkpoint: the trajectory files it covers
ROLLED_BACK_PHASES = ("train-", "eval-")  # files training writes; assessments' stay


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


RESTORES_WITH = (
    "algorithm",
    "training.hidden",
    "training.share_layers",
    "training.activation",
    "training.extra.model_config",
)
"""The config keys a checkpoint's saved state is shaped by: a resume may change any other
(a learning rate, a budget, the lesson), never these."""


def restores_with(cfg: ExperimentConfig, handle: Any) -> dict[str, Any]:
    """What a checkpoint fits, by name: the simulator, its spaces and the network the config
    builds. Saved in every checkpoint and compared, before Ray starts, on a resume."""
    data = cfg.model_dump(mode="json")
    record: dict[str, Any] = {
        "sim": cfg.sim,
        "observation_shape": list(handle.observation_shape),
        "actions": list(handle.actions),
    }
    for key in RESTORES_WITH:
        value: Any = data
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        record[key] = value
    return record


def refuse_another_model(
    checkpoint: Path, meta: Mapping[str, Any], now: Mapping[str, Any], source: str
) -> None:
    """A resume whose config or simulator builds something the checkpoint does not fit:
    one message naming the key and both values, before anything starts or changes."""
    saved = meta.get("restores_with")
    if saved is None:  # saved by an earlier aml-rl: only the simulator was recorded
        saved = {"sim": meta.get("sim")}
    differ = [key for key in saved if key in now and saved[key] != now[key]]
    if not differ:
        return
    what = "; ".join(f"{key} {saved[key]!r} there, {now[key]!r} now" for key in differ)
    raise RunError(
        f"{checkpoint} cannot be resumed with {source}: {what}. A checkpoint restores only "
        "into the network and spaces it was trained with; drop the change, or start a new "
        "run with it (invoke train --config ...). Nothing in the run was changed"
    )


def save_checkpoint(
    algo: Any,
    run: RunDir,
    cfg: ExperimentConfig,
    progress: Progress,
    record: Mapping[str, Any],
    metrics: list[Mapping[str, Any]] = (),
) -> Path:
    """Save into a hidden folder, add our metadata, the pending metrics lines and the list of
    trajectory files, then rename: a checkpoint is whole or absent (a failed save, a full disk
    included, leaves no folder behind). The metadata lists every file's size and SHA-256, so
    that a file cut short later is told from a checkpoint that does not fit."""
    final = run.checkpoint_path(progress.iteration)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        algo.save_to_path(str(tmp.resolve()))
        write_atomic(tmp / METRICS, "".join(json.dumps(dict(line)) + "\n" for line in metrics))
        write_json(tmp / TRAJECTORIES, _trained_on(algo, run, progress.sessions))
        meta = {**_meta(cfg, progress, record), "files": _file_digests(tmp)}
        write_json(tmp / CHECKPOINT_META, meta)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    run.prune_checkpoints(cfg.checkpoints.keep)
    return final


def _meta(cfg: ExperimentConfig, progress: Progress, record: Mapping[str, Any]) -> dict:
    return {
        "sim": cfg.sim,
        "lessons": str(cfg.lessons.resolve()) if cfg.lessons else None,
        "lesson": cfg.lesson,
        "algorithm": cfg.algorithm,
        "config_digest": cfg.digest(),
        "observation_shape": record["observation_shape"],
        "restores_with": dict(record),
        "iteration": progress.iteration,
        "env_steps": progress.env_steps,
        "episodes": progress.episodes,
        "wall_time_s": progress.wall_time_s,
        "sessions": progress.sessions,
        "mlflow_run_id": progress.mlflow_run_id,
        "saved_at": datetime.now(UTC).isoformat(),
    }


def _file_digests(folder: Path) -> dict[str, list]:
    """``{relative path: [size, sha256]}`` of every file under ``folder``."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        out[path.relative_to(folder).as_posix()] = [path.stat().st_size, digest]
    return out


def damage(checkpoint: Path, meta: Mapping[str, Any]) -> str | None:
    """What is wrong with a checkpoint's files against the sizes and digests saved with it
    (a file cut short, missing, changed), or None when they are whole. A checkpoint saved by
    an earlier aml-rl has no digests: None, it cannot be told to be damaged."""
    saved = meta.get("files")
    if not isinstance(saved, dict):
        return None
    for name, (size, digest) in saved.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size:,} bytes, {size:,} when saved"
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            return f"{name} differs from what was saved (SHA-256)"
    return None


def _trained_on(algo: Any, run: RunDir, session: int) -> list[str]:
    """The training files whose episodes the learner has had. Sampling ahead, a runner writes
    the next batch's file before the learner gets that batch: this session's files count only
    once handed over (``SampleAheadPPO.trajectory_files_trained_on``)."""
    names = _training_files(run)
    handed_over = getattr(algo, "trajectory_files_trained_on", None)
    if handed_over is None:
        return names
    ahead = f"train-{session_tag(session)}-"
    return [name for name in names if name in handed_over or not name.startswith(ahead)]


def roll_back_untrained(run: RunDir, checkpoint: Path) -> int:
    """Move the training files that ``checkpoint`` does not cover to trajectories/rolled-back/
    (written after it, or sampled ahead and never trained on); returns how many moved."""
    covered = checkpoint / TRAJECTORIES
    if not covered.is_file():
        return 0
    committed = set(json.loads(covered.read_text()))
    moved = 0
    for name in set(_training_files(run)) - committed:
        run.rolled_back.mkdir(parents=True, exist_ok=True)
        os.replace(run.trajectories / name, run.rolled_back / name)
        moved += 1
    return moved


def _training_files(run: RunDir) -> list[str]:
    return [
        p.name for p in trajectory_files(run.trajectories) if p.name.startswith(ROLLED_BACK_PHASES)
    ]


def set_aside(checkpoint: Path) -> Path:
    """Rename a checkpoint that cannot be restored so that nothing picks it up again (it is
    kept for a post-mortem, never deleted)."""
    target = checkpoint.with_name(f".corrupt-{checkpoint.name}")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(checkpoint, target)
    return target


@dataclass
class Reconciled:
    """What a resume from a checkpoint changed in the run directory."""

    metrics_dropped: int = 0  # lines of iterations after the checkpoint (or cut short)
    iterations_dropped: list[int] = field(default_factory=list)
    metrics_restored: list[dict] = field(default_factory=list)  # lines only the checkpoint had
    trajectory_files_rolled_back: int = 0
    partial_checkpoints_removed: int = 0

    def notes(self) -> list[str]:
        out = []
        if self.metrics_dropped:
            out.append(f"{self.metrics_dropped} metrics line(s) after the checkpoint dropped")
        if self.iterations_dropped:
            # only when a newer checkpoint could not be restored: its lines had been committed
            first, last = min(self.iterations_dropped), max(self.iterations_dropped)
            out.append(
                f"MLflow keeps its values of the rolled-back iterations {first}-{last} (MLflow "
                "cannot delete metric values); metrics.jsonl holds each iteration once"
            )
        if self.metrics_restored:
            out.append(f"{len(self.metrics_restored)} metrics line(s) restored from it")
        if self.trajectory_files_rolled_back:
            out.append(
                f"{self.trajectory_files_rolled_back} trajectory file(s) of rolled-back "
                "iterations moved to trajectories/rolled-back/"
            )
        if self.partial_checkpoints_removed:
            out.append(f"{self.partial_checkpoints_removed} partial checkpoint(s) removed")
        return out


def reconcile(run: RunDir, checkpoint: Path) -> Reconciled:
    """Make the run directory what it was when ``checkpoint`` was saved: metrics.jsonl holds
    each iteration up to it once, trajectory files written after it move to
    trajectories/rolled-back/, and half-saved checkpoint folders go."""
    meta = read_checkpoint_meta(checkpoint)
    done = Reconciled()
    kept: list[str] = []
    last = 0
    if run.metrics.is_file():
        for text in run.metrics.read_text().splitlines():
            try:
                iteration = int(json.loads(text)["iteration"])
            except (ValueError, KeyError, TypeError):
                done.metrics_dropped += 1  # a line cut short by a kill
                continue
            if iteration <= meta["iteration"]:
                kept.append(text)
                last = max(last, iteration)
            else:
                done.metrics_dropped += 1
                done.iterations_dropped.append(iteration)
    pending = checkpoint / METRICS
    if pending.is_file():  # killed between saving the checkpoint and writing its lines
        for text in pending.read_text().splitlines():
            if json.loads(text)["iteration"] > last:
                kept.append(text)
                done.metrics_restored.append(json.loads(text))
    if done.metrics_dropped or done.metrics_restored:
        write_atomic(run.metrics, "".join(line + "\n" for line in kept))
    done.trajectory_files_rolled_back = roll_back_untrained(run, checkpoint)
    for partial in run.checkpoints.glob(".*.tmp"):
        shutil.rmtree(partial, ignore_errors=True)
        done.partial_checkpoints_removed += 1
    return done


@dataclass
class Candidate:
    """One of a run's checkpoints as a resume finds it."""

    path: Path
    meta: dict[str, Any] | None
    """Its metadata; None where it cannot be read."""
    damage: str | None
    """Why its files are not whole (checked against their saved digests); None if whole."""


def restorable(run: RunDir) -> list[Candidate]:
    """The run's checkpoints, newest first; a resume uses the first whole one and sets aside
    the damaged ones before it only once that one has restored."""
    out = []
    for checkpoint in reversed(run.checkpoint_dirs()):
        try:
            meta = read_checkpoint_meta(checkpoint)
        except RunError:
            out.append(Candidate(checkpoint, None, f"its {CHECKPOINT_META} cannot be read"))
            continue
        out.append(Candidate(checkpoint, meta, damage(checkpoint, meta)))
    return out


def no_checkpoint_restores(run: RunDir, reasons: list[str]) -> RunError:
    return RunError(
        f"{run.path}: no checkpoint can be restored ({'; '.join(reasons) or 'none left'}); "
        "start a new run"
    )
