"""RLlib callbacks: trajectory logging on the env runners, and simulator failures."""

from __future__ import annotations

import collections
import json
import os
import time
from pathlib import Path
from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback

from jobs.faults import (
    FAULT_RECORD,
    SimulatorGaveUp,
    fault_log,
    ray_log,
    read_record,
    send_fault_tracebacks_to,
    send_ray_notes_to,
)
from jobs.rundir import SCENARIO, column_units, disk_full, write_atomic
from jobs.trajectories import Rows
from sims.registry import resolve

FAILED_EPISODES = "aml_rl_failed_episodes"  # metric key, under env_runners/
# The episode's return in the simulator's units (RLlib's own is of the normalised rewards the
# learner sees); averaged over RLlib's window for its episode_return_mean, 100 episodes.
EPISODE_RETURN = "aml_rl_episode_return"
RETURN_WINDOW = 100
DISK_FULL = "aml_rl_disk_full"  # set when a trajectory file could not be written: no space
# Episodes in a row that end in a simulator failure, none completing, before the env runner
# gives up: a simulator that fails at every step would otherwise be recreated for ever inside
# one sample (RLlib counts only completed steps towards it). A simulator that fails on 1% of
# steps fails 87% of 200-step episodes: 100 in a row happens with probability 1e-6.
MAX_FAILED_EPISODES_IN_A_ROW = 100
# A simulator is failing while at least half of the last FAULT_WINDOW episodes on an env
# runner ended in a fault; failing for ``stop.max_fault_s`` in a row ends the run, whatever
# completes in between (a short episode that completes no longer starts the count again).
FAULT_WINDOW = 20
# this process's newest trajectory files, since take_written() last ran (one per sample call;
# bounded, for the runners whose driver never asks: taking turns, evaluation)
_written: collections.deque[str] = collections.deque(maxlen=64)


def take_written() -> list[str]:
    """The trajectory files this process's env runner wrote since the last call (sampling
    ahead hands them to the driver with their batch: jobs.sample_ahead)."""
    names = list(_written)
    _written.clear()
    return names


def _episode_steps(chunks: list[Any]) -> tuple[list[dict], list[float]]:
    """Infos (reset first) and rewards of a whole episode from its chunks, in order; the
    simulator's own rewards where the learner's were normalised (``info["reward"]``)."""
    infos: list[dict] = []
    rewards: list[float] = []
    for i, chunk in enumerate(chunks):
        chunk_infos = list(chunk.get_infos())
        infos.extend(chunk_infos if i == 0 else chunk_infos[1:])  # a chunk repeats its start
        rewards.extend(float(r) for r in chunk.get_rewards())
    raw = [info.get("reward") for info in infos[1:]]
    if raw and all(r is not None for r in raw):
        rewards = [float(r) for r in raw]
    return infos, rewards


class TrajectoryLogger(RLlibCallback):
    """Logs every k-th finished episode of each env runner, one Parquet file per sample batch.

    Rows are buffered per episode in the env runner and written in ``on_sample_end``, so
    files hold whole episodes and are written once (temp file + rename): a killed run never
    leaves a corrupt file. States and actions come from ``info`` (named, physical units) for
    every kind of simulator; their units go into each file's schema metadata. Simulator
    failures (the env is recreated by RLlib's fault tolerance) are written as rows with an
    ``error`` and counted in the metrics.
    """

    def __init__(
        self,
        *,
        folder: str,
        sim: str,
        run_id: str,
        session: str,
        every_k_episodes: int = 1,
        enabled: bool = True,
        max_fault_s: float = 120.0,
        deadline: float | None = None,
    ) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.run = self.folder.parent
        self.max_fault_s = max_fault_s
        self.deadline = deadline  # time.time() at which max_wall_s is reached
        self._outcomes: collections.deque[bool] = collections.deque(maxlen=FAULT_WINDOW)
        self._failing_since: float | None = None
        send_fault_tracebacks_to(fault_log(self.run))
        send_ray_notes_to(ray_log(self.run))
        self.units = column_units(resolve(sim))
        self.run_id = run_id
        self.session = session
        self.every = every_k_episodes
        self.enabled = enabled
        self._rows = Rows()
        self._episodes = 0
        self._files = 0
        self._env: Any = None
        self._failed_in_a_row = 0

    def _phase(self, env_runner: Any) -> str:
        return "eval" if env_runner.config.in_evaluation else "train"

    def on_episode_end(
        self,
        *,
        episode: Any,
        env_runner: Any = None,
        metrics_logger: Any = None,
        prev_episode_chunks: list | None = None,
        **kwargs: Any,
    ) -> None:
        self._episodes += 1
        self._failed_in_a_row = 0
        self._outcome(failed=False)
        last = episode.get_infos(-1)
        if metrics_logger is not None and isinstance(last, dict) and "episode_return" in last:
            metrics_logger.log_value(EPISODE_RETURN, last["episode_return"], window=RETURN_WINDOW)
        if not self.enabled or (self._episodes - 1) % self.every:
            return
        chunks = [*(prev_episode_chunks or []), episode]
        infos, rewards = _episode_steps(chunks)
        base = {
            "run_id": self.run_id,
            "phase": self._phase(env_runner),
            "controller": "agent",
            "env_runner": env_runner.worker_index,
            "episode_id": episode.id_,
            "lesson": infos[0]["lesson"],
        }
        self._rows.add_episode(
            base=base,
            scenario=infos[0]["scenario"],
            states=[info["states"] for info in infos],
            actions=[None] + [info["action"] for info in infos[1:]],
            rewards=[None, *rewards],
            terminated=episode.is_terminated,
            truncated=episode.is_truncated,
        )

    def on_sample_end(
        self, *, env_runner: Any = None, metrics_logger: Any = None, **kwargs: Any
    ) -> None:
        # One file per sample batch: large enough to be cheap, small enough that a kill
        # loses at most one batch of rows.
        runner = f"r{env_runner.worker_index:03d}-{os.getpid()}"
        name = f"{self._phase(env_runner)}-{self.session}-{runner}-{self._files:06d}.parquet"
        try:
            written = self._rows.flush(self.folder / name, units=self.units)
        except OSError as exc:
            if not disk_full(exc) or metrics_logger is None:
                raise
            # Raising here would leave RLlib restarting this env runner forever; the driver
            # stops the run at its last checkpoint instead (these rows belong to iterations
            # the resume will replay).
            self._rows = Rows()
            metrics_logger.log_value(DISK_FULL, 1, reduce="sum")
            return
        if written is not None:
            self._files += 1
            _written.append(name)

    def on_environment_created(
        self, *, env_runner: Any = None, metrics_logger: Any = None, env: Any = None, **kwargs: Any
    ) -> None:
        """RLlib recreates the env after a simulator failure: record what the old one saw."""
        previous, self._env = self._env, env
        if previous is None:
            given_up = read_record(self.run)
            if given_up is not None:  # a replaced env runner: given up already
                raise SimulatorGaveUp(given_up.get("cause", "the simulator failed repeatedly"))
            return
        faults = [getattr(sub.unwrapped, "fault", None) for sub in getattr(previous, "envs", [])]
        faults = [fault for fault in faults if fault]
        for fault in faults:
            self._rows.add(
                {
                    "run_id": self.run_id,
                    "phase": self._phase(env_runner),
                    "controller": "agent",
                    "env_runner": env_runner.worker_index,
                    "episode_id": None,
                    "lesson": fault["lesson"],
                    "step": fault["step"],
                    "error": fault["error"],
                    **{f"{SCENARIO}{k}": float(v) for k, v in fault["scenario"].items()},
                }
            )
        if faults and metrics_logger is not None:
            # Lifetime sum: the count must survive iterations and checkpoints alike.
            metrics_logger.log_value(FAILED_EPISODES, len(faults), reduce="lifetime_sum")
        self._failed_in_a_row += len(faults)
        for _ in faults:
            self._outcome(failed=True)
        cause = self._give_up(time.time()) if faults else None
        if cause is not None:
            self.on_sample_end(env_runner=env_runner, metrics_logger=metrics_logger)  # the rows
            record = {"cause": cause, "last_fault": faults[-1], "at": time.time()}
            write_atomic(self.run / FAULT_RECORD, json.dumps(record))
            raise SimulatorGaveUp(cause)

    def _outcome(self, *, failed: bool) -> None:
        self._outcomes.append(failed)
        failing = 2 * sum(self._outcomes) >= len(self._outcomes)
        if not failing:
            self._failing_since = None
        elif self._failing_since is None:
            self._failing_since = time.time()

    def _give_up(self, now: float) -> str | None:
        """Why this env runner stops sampling a simulator that keeps failing, or None."""
        if self._failed_in_a_row >= MAX_FAILED_EPISODES_IN_A_ROW:
            return f"{self._failed_in_a_row} episodes in a row failed and none completed"
        if self._failing_since is not None and now - self._failing_since >= self.max_fault_s:
            return (
                f"most episodes failed for {now - self._failing_since:.0f} s "
                f"(stop.max_fault_s {self.max_fault_s:g})"
            )
        if self._failing_since is not None and self.deadline is not None and now >= self.deadline:
            return "the simulator was still failing when max_wall_s was reached"
        return None
