"""The run directory: ``runs/<experiment>/<run-id>/``, its files, and atomic writes."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CHECKPOINT_PREFIX = "iter-"
CHECKPOINT_META = "aml_rl.json"  # our metadata inside each RLlib checkpoint folder


class Metric:
    """The names of the metrics in ``metrics.jsonl`` and MLflow: spelled here only."""

    RETURN = "env_runners/episode_return_mean"
    LENGTH = "env_runners/episode_len_mean"
    EPISODES = "env_runners/episodes_total"
    ENV_STEPS = "env_runners/env_steps_sampled_lifetime"
    STEP_FAILURES = "env_runners/env_step_failures"
    FAILED_EPISODES = "env_runners/failed_episodes"
    STEPS_PER_S = "perf/env_steps_per_s"
    TOTAL_LOSS = "learner/total_loss"
    POLICY_LOSS = "learner/policy_loss"
    VF_LOSS = "learner/vf_loss"
    ENTROPY = "learner/entropy"


STATE, ACTION, SCENARIO = "state_", "action_", "scenario_"
"""Prefixes of trajectory columns: a state's, an action's and a scenario parameter's."""


ASSESS_PREFIX = "assess-"


def session_tag(number: int) -> str:
    """A session's part of its trajectory files' names (``train-s02-...``)."""
    return f"s{number:02d}"


def assessment_episode_id(scenario: str, controller: str) -> str:
    """The episode id of an assessment episode: its scenario and controller."""
    return f"{ASSESS_PREFIX}{scenario}-{controller}"


def assessment_scenario(episode_id: str) -> str | None:
    """The scenario of an assessment episode's id; None for any other episode's."""
    if not episode_id.startswith(ASSESS_PREFIX) or "-" not in episode_id[len(ASSESS_PREFIX) :]:
        return None
    return episode_id[len(ASSESS_PREFIX) :].rsplit("-", 1)[0]


def column_units(handle: Any) -> dict[str, str]:
    """Units of a simulator's trajectory columns (``state_<name>``, ``action_<name>``)."""
    return {
        **{f"{STATE}{name}": unit for name, unit in handle.state_units.items()},
        **{f"{ACTION}{name}": unit for name, unit in handle.action_units.items()},
    }


class RunError(ValueError):
    """A path given as a run or checkpoint is not one; the message says what is missing."""


def disk_full(exc: BaseException) -> bool:
    """ENOSPC, however a library wrapped it (torch, pyarrow and SQLite raise their own)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        text = str(seen).lower()
        if "no space left" in text or "disk is full" in text or "file write failed" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename: never half-written.
    Readable as any file the user writes is (the umask's, not the temporary file's
    owner-only 0600): a team's artifact server or a colleague reads runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as tmp:
        tmp.write(text)
        tmp.flush()
        os.fchmod(tmp.fileno(), 0o666 & ~_UMASK)
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)


def _umask() -> int:
    mask = os.umask(0o077)  # the only way to read it is to set it (strict, for the instant)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once, at import: os.umask is process-wide, threads write files too


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

    @property
    def rolled_back(self) -> Path:
        """Trajectory files of iterations a resume rolled back (kept, never read)."""
        return self.trajectories / "rolled-back"

    RESERVE_BYTES = 4 << 20  # what ending the MLflow run needs on a full disk (its journal)

    def reserve(self) -> None:
        """Set aside disk space (written, not sparse) that a full disk gives back, so that the
        run can still close its MLflow run and say what happened."""
        try:
            (self.path / ".reserve").write_bytes(bytes(self.RESERVE_BYTES))
        except OSError as exc:
            if not disk_full(exc):
                raise
            (self.path / ".reserve").unlink(missing_ok=True)
            raise

    def release_reserve(self) -> None:
        (self.path / ".reserve").unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One process per run directory: a second one is refused, naming the holder. The
        lock dies with its process (SIGKILL included). Where the file system has no locks
        (some network mounts), the run goes on unlocked."""
        path = self.path / ".lock"
        with open(path, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise RunError(
                    f"{self.path} is in use by {holder}; wait for it to finish or stop it, then "
                    "resume"
                ) from None
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
            fh.seek(0)
            fh.truncate()
            started = datetime.now(UTC).isoformat(timespec="seconds")
            fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}\n")
            fh.flush()
            yield

    def prune_checkpoints(self, keep: int) -> None:
        for old in self.checkpoint_dirs()[:-keep]:
            shutil.rmtree(old)


def read_summary(run: Path) -> dict[str, Any]:
    """A run's summary.json; :class:`RunError` naming the file when it is missing or is not one."""
    path = Path(run) / "summary.json"
    if not path.is_file():
        raise RunError(f"{run}: no summary.json; the run has not finished (or this is not a run)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(
            f"{path}: not a run summary ({type(exc).__name__}); re-run or restore it"
        ) from None
    if not isinstance(data, dict):
        raise RunError(
            f"{path}: not a run summary (a JSON object with run_id, status, ...); re-run or "
            "restore it"
        )
    return data


def read_checkpoint_meta(checkpoint: Path) -> dict[str, Any]:
    """Our metadata of an RLlib checkpoint; :class:`RunError` if it is not one of ours, or if
    it cannot be read."""
    meta = checkpoint / CHECKPOINT_META
    if not meta.is_file():
        raise RunError(
            f"{checkpoint}: not an aml-rl checkpoint (no {CHECKPOINT_META}); pass a folder "
            "under a run's checkpoints/, such as runs/cstr_ppo/<run-id>/checkpoints/iter-000010"
        )
    try:
        data = json.loads(meta.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{meta}: cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise RunError(f"{meta}: not a checkpoint's metadata (a JSON object)")
    return data
