"""The training entrypoint: ``python -m jobs.train --config FILE [--set key=value ...]``.

The same code runs on a laptop, in a container and on an Azure ML cluster; only the Ray
address (``RAY_ADDRESS``) and the output location (``--runs-dir``) differ.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from rich.console import Console

from jobs.config import DEFAULT_CONFIG, ConfigError, ExperimentConfig, load_config
from jobs.rundir import (
    CHECKPOINT_META,
    RunDir,
    RunError,
    read_checkpoint_meta,
    write_atomic,
    write_json,
)
from jobs.trajectories import trajectory_files

console = Console(highlight=False, soft_wrap=True)
_ENTRY = time.time()  # when this module finished importing its dependencies


@dataclass
class Progress:
    """Counters that survive resumes: they live in every checkpoint's metadata."""

    iteration: int = 0
    env_steps: int = 0
    episodes: int = 0
    wall_time_s: float = 0.0
    sessions: int = 0
    mlflow_run_id: str | None = None


def iteration_metrics(result: Mapping[str, Any], steps_per_s: float) -> dict[str, float]:
    """Stable, namespaced metric names from an RLlib result dict."""
    runners = result.get("env_runners", {})
    learner = result.get("learners", {}).get("default_policy", {})
    metrics = {
        "env_runners/episode_return_mean": runners.get("episode_return_mean"),
        "env_runners/episode_len_mean": runners.get("episode_len_mean"),
        "env_runners/episodes_total": runners.get("num_episodes_lifetime"),
        "env_runners/env_steps_sampled_lifetime": result.get("num_env_steps_sampled_lifetime"),
        "env_runners/env_step_failures": runners.get("num_env_step_failures", 0),
        "env_runners/failed_episodes": runners.get("aml_rl_failed_episodes", 0),
        "perf/env_steps_per_s": steps_per_s,
        "learner/total_loss": learner.get("total_loss"),
        "learner/policy_loss": learner.get("policy_loss"),
        "learner/vf_loss": learner.get("vf_loss"),
        "learner/entropy": learner.get("entropy"),
    }
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


def stop_reason(
    cfg: ExperimentConfig, progress: Progress, episode_return: float | None
) -> str | None:
    stop = cfg.stop
    if (
        stop.target_return is not None
        and episode_return is not None
        and episode_return >= stop.target_return
    ):
        return f"target_return {stop.target_return} reached ({episode_return:.4g})"
    if stop.max_env_steps is not None and progress.env_steps >= stop.max_env_steps:
        return f"max_env_steps {stop.max_env_steps} reached"
    if stop.max_wall_s is not None and progress.wall_time_s >= stop.max_wall_s:
        return f"max_wall_s {stop.max_wall_s:g} reached"
    return None


def eta_s(cfg: ExperimentConfig, progress: Progress, steps_per_s: float) -> float | None:
    """Seconds left under the tightest budget (ignoring target_return, which cannot be foreseen)."""
    left = []
    if cfg.stop.max_env_steps is not None and steps_per_s > 0:
        left.append(max(0.0, (cfg.stop.max_env_steps - progress.env_steps) / steps_per_s))
    if cfg.stop.max_wall_s is not None:
        left.append(max(0.0, cfg.stop.max_wall_s - progress.wall_time_s))
    return min(left) if left else None


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress_line(cfg: ExperimentConfig, progress: Progress, metrics: Mapping[str, float]) -> str:
    ret = metrics.get("env_runners/episode_return_mean")
    rate = metrics.get("perf/env_steps_per_s", 0.0)
    budget = f"/{cfg.stop.max_env_steps:,}" if cfg.stop.max_env_steps else ""
    failures = metrics.get("env_runners/env_step_failures", 0)
    return (
        f"iter {progress.iteration:4d} | return {ret:9.3f} | "
        if ret is not None
        else f"iter {progress.iteration:4d} | return       n/a | "
    ) + (
        f"env steps {progress.env_steps:,}{budget} | {rate:,.0f} steps/s | "
        f"elapsed {_clock(progress.wall_time_s)} | ETA {_clock(eta_s(cfg, progress, rate))}"
        + (f" | sim failures {failures:.0f}" if failures else "")
    )


class Tracker:
    """MLflow: a SQLite store in the run directory, or the URI in MLFLOW_TRACKING_URI
    (Azure ML sets it to the workspace's)."""

    def __init__(self, run: RunDir, cfg: ExperimentConfig, progress: Progress) -> None:
        import mlflow

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.mlflow = mlflow
        mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or run.mlflow_uri)
        mlflow.set_experiment(cfg.experiment)
        active = mlflow.start_run(run_id=progress.mlflow_run_id, run_name=run.run_id)
        progress.mlflow_run_id = active.info.run_id
        if progress.sessions == 1:
            mlflow.log_params(_flatten(cfg.model_dump(mode="json")))
            mlflow.set_tags(
                {"sim": cfg.sim, "algorithm": cfg.algorithm, "config_digest": cfg.digest()}
            )

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.mlflow.log_metrics(dict(metrics), step=step)

    def close(self, status: str, final_checkpoint: str) -> None:
        # On Azure ML the job is this MLflow run: `invoke register-model` reads these tags.
        self.mlflow.set_tags({"final_checkpoint": final_checkpoint, "status": status})
        self.mlflow.end_run(status="FINISHED" if status == "completed" else "KILLED")


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


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


def _trajectory_summary(run: RunDir) -> dict[str, Any]:
    files = trajectory_files(run.trajectories)
    rows = sum(pq.ParquetFile(path).metadata.num_rows for path in files)
    return {"folder": "trajectories", "files": len(files), "rows": rows}


def check_ray_version(expected: str | None = None) -> None:
    """The image records the Ray version it was built with; the job refuses another one."""
    import ray

    expected = expected or os.environ.get("AML_RL_RAY_VERSION")
    if expected and expected != ray.__version__:
        raise RunError(
            f"Ray version mismatch: this image was built for Ray {expected} (AML_RL_RAY_VERSION) "
            f"but Ray {ray.__version__} is installed; rebuild the image with `invoke build` so "
            "that every node runs the host's Ray"
        )


def start_ray() -> None:
    import ray

    check_ray_version()
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        ray.init(include_dashboard=False, logging_level=logging.WARNING, configure_logging=True)
        return
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except RuntimeError as exc:
        if "version" in str(exc).lower():  # Ray's own check when a node's version differs
            raise RunError(
                f"Ray version mismatch joining the cluster at {address}: {exc}"
            ) from None
        raise


def prepare(
    config: Path | None,
    sets: list[str],
    smoke: bool,
    resume: Path | None,
    runs_root: Path,
    run_dir: Path | None = None,
) -> tuple[ExperimentConfig, RunDir, Progress, Path | None]:
    """Everything that can fail on user input, before Ray starts."""
    if run_dir is not None and RunDir.has_checkpoint(run_dir):
        # A fixed run directory that already has a checkpoint: this job was restarted
        # (a preempted low-priority node): continue, exactly as --resume would.
        console.print(f"{run_dir} already holds a checkpoint: resuming after a restart")
        resume, config = run_dir, None
    if resume is None:
        cfg = load_config(config or DEFAULT_CONFIG, sets, smoke=smoke)
        run = (
            RunDir.at(run_dir) if run_dir is not None else RunDir.create(runs_root, cfg.experiment)
        )
        write_atomic(run.config, cfg.to_yaml())
        return cfg, run, Progress(), None
    if config is not None:
        raise ConfigError(
            f"--resume {resume} takes its config from the run; drop --config {config}"
        )
    run = RunDir.open(resume)
    cfg = load_config(run.config, sets, smoke=smoke)
    checkpoint = run.latest_checkpoint()
    progress = Progress()
    if checkpoint is not None:
        meta = read_checkpoint_meta(checkpoint)
        if meta["sim"] != cfg.sim:
            raise RunError(
                f"{checkpoint}: trained on simulator {meta['sim']!r}, but {run.config} says "
                f"{cfg.sim!r}; restore the run's config or start a new run"
            )
        progress = Progress(
            iteration=meta["iteration"],
            env_steps=meta["env_steps"],
            episodes=meta["episodes"],
            wall_time_s=meta["wall_time_s"],
            sessions=meta["sessions"],
            mlflow_run_id=meta.get("mlflow_run_id"),
        )
    if sets:
        write_atomic(run.config, cfg.to_yaml())
    return cfg, run, progress, checkpoint


def train(
    config: Path | None = None,
    *,
    sets: list[str] | None = None,
    smoke: bool = False,
    resume: Path | None = None,
    runs_root: Path = Path("runs"),
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """Train, checkpoint, assess; returns the summary that is also written to summary.json."""
    from jobs.algorithms import algorithm_config
    from jobs.callbacks import TrajectoryLogger

    cfg, run, progress, checkpoint = prepare(
        config, list(sets or []), smoke, resume, runs_root, run_dir
    )
    progress.sessions += 1
    session = f"s{progress.sessions:02d}"
    callbacks = functools.partial(
        TrajectoryLogger,
        folder=str(run.trajectories.resolve()),
        run_id=run.run_id,
        session=session,
        every_k_episodes=cfg.trajectories.every_k_episodes,
        enabled=cfg.trajectories.enabled,
    )
    algo_config = algorithm_config(cfg, callbacks)  # raises ConfigError before Ray starts
    console.print(f"run {run.path} ({'resuming from ' + checkpoint.name if checkpoint else 'new'})")

    started = time.perf_counter()
    timeline = {"entry": _ENTRY, "prepared": time.time()}  # wall-clock, for start-up benchmarks
    start_ray()
    timeline["ray_started"] = time.time()
    algo = algo_config.build_algo()
    timeline["algorithm_built"] = time.time()
    if checkpoint is not None:
        algo.restore_from_path(str(checkpoint.resolve()))
        console.print(
            f"resumed at iteration {progress.iteration}, {progress.env_steps:,} env steps, "
            f"{progress.wall_time_s:.0f} s of earlier training"
        )
    observation_shape = observation_shape_for(cfg)
    tracker = Tracker(run, cfg, progress)
    status, reason, metrics = "completed", None, {}
    session_wall = progress.wall_time_s
    loop_start = time.perf_counter()
    try:
        while reason is None:
            steps_before = progress.env_steps
            tick = time.perf_counter()
            result = algo.train()
            took = time.perf_counter() - tick
            timeline.setdefault("first_iteration", time.time())
            progress.iteration = int(result["training_iteration"])
            progress.env_steps = int(
                result.get("num_env_steps_sampled_lifetime", progress.env_steps)
            )
            progress.episodes = int(
                result.get("env_runners", {}).get("num_episodes_lifetime", progress.episodes)
            )
            progress.wall_time_s = session_wall + (time.perf_counter() - loop_start)
            metrics = iteration_metrics(
                result, (progress.env_steps - steps_before) / took if took else 0.0
            )
            tracker.log(metrics, step=progress.iteration)
            with run.metrics.open("a") as fh:  # one JSON line per iteration
                fh.write(
                    json.dumps(
                        {
                            "iteration": progress.iteration,
                            "env_steps": progress.env_steps,
                            "wall_time_s": round(progress.wall_time_s, 3),
                            **metrics,
                        }
                    )
                    + "\n"
                )
            console.print(progress_line(cfg, progress, metrics))
            reason = stop_reason(cfg, progress, metrics.get("env_runners/episode_return_mean"))
            if reason is None and progress.iteration % cfg.checkpoints.every_iterations == 0:
                save_checkpoint(algo, run, cfg, progress, observation_shape)
    except KeyboardInterrupt:
        status, reason = "interrupted", "interrupted (Ctrl-C)"
        console.print("interrupted: saving a checkpoint before exiting")
    last_checkpoint = save_checkpoint(algo, run, cfg, progress, observation_shape)
    algo.stop()
    tracker.close(status, str(last_checkpoint.relative_to(run.path)))

    assessment = None
    if cfg.assessment.enabled and status == "completed":
        from jobs.assess import assess

        result = assess(
            last_checkpoint,
            scenarios=cfg.assessment.scenarios,
            out=run.assessment,
            trajectories=run.trajectories if cfg.trajectories.enabled else None,
            run_id=run.run_id,
        )
        assessment = result.to_json()["kpis"]
        print_kpis(result.table, title=f"assessment of {last_checkpoint.name} vs baseline")

    summary = {
        "run_id": run.run_id,
        "experiment": cfg.experiment,
        "sim": cfg.sim,
        "algorithm": cfg.algorithm,
        "status": status,
        "stop_reason": reason,
        "iterations": progress.iteration,
        "env_steps_sampled": progress.env_steps,
        "episodes_total": progress.episodes,
        "wall_time_s": round(progress.wall_time_s, 3),
        "session_wall_time_s": round(time.perf_counter() - started, 3),
        "sessions": progress.sessions,
        "episode_return_mean": metrics.get("env_runners/episode_return_mean"),
        "env_step_failures": metrics.get("env_runners/env_step_failures", 0.0),
        "failed_episodes": metrics.get("env_runners/failed_episodes", 0.0),
        "checkpoint": str(last_checkpoint.relative_to(run.path)),
        "trajectories": _trajectory_summary(run),
        "assessment": assessment,
        "config_digest": cfg.digest(),
        "mlflow_run_id": progress.mlflow_run_id,
        "timeline": timeline,
    }
    write_json(run.summary, summary)
    console.print(f"summary: {run.summary}")
    if status == "interrupted":
        raise KeyboardInterrupt
    return summary


def observation_shape_for(cfg: ExperimentConfig) -> list[int]:
    from sims.registry import make_env

    return list(make_env(cfg.sim).observation_space.shape)


def print_kpis(table: Any, title: str) -> None:
    from rich.table import Table

    view = Table(title=title)
    for column in table.columns:
        view.add_column(str(column), justify="left" if column == "controller" else "right")
    for row in table.itertuples(index=False):
        view.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    # Off a terminal (a log file, CI) rich assumes 80 columns and would cut the KPI names.
    (console if console.is_terminal else Console(width=160, highlight=False)).print(view)


# Azure ML sets one of these on every node of a distributed job; 0 (or unset) is the head.
RANK_VARIABLES = ("AZUREML_NODE_RANK", "NODE_RANK", "OMPI_COMM_WORLD_RANK")


def node_rank() -> int:
    for name in RANK_VARIABLES:
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return 0


def wait_as_worker(
    rank: int, run_dir: Path | None, poll_s: float = 10.0, timeout_s: float | None = None
) -> int:
    """On a worker node, Azure ML has already joined this node's Ray to the head's cluster and
    the driver runs only on the head: stay up until the head writes the run's summary."""
    console.print(f"node {rank}: a Ray worker (started by Azure ML); the driver runs on the head")
    if run_dir is None:
        return 0
    waited = 0.0
    while not (run_dir / "summary.json").exists():
        if timeout_s is not None and waited >= timeout_s:
            console.print(f"node {rank}: no summary after {waited:.0f} s; leaving")
            return 1
        time.sleep(poll_s)
        waited += poll_s
    console.print(f"node {rank}: the head finished the run; leaving")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.train", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--config", type=Path, help="experiment YAML (default jobs/configs/cstr_ppo.yaml)"
    )
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set training.lr=1e-4 (repeatable)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="a tiny budget through the same code path"
    )
    parser.add_argument(
        "--resume", type=Path, metavar="RUN_DIR", help="continue a run from its newest checkpoint"
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=Path(os.environ.get("AML_RL_RUNS_DIR", "runs")),
        help="where run directories go (default runs/)",
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        help="use exactly this run directory, resumed if it holds a checkpoint "
        "(Azure ML jobs pass their output folder)",
    )
    args = parser.parse_args(argv)
    rank = node_rank()
    if rank:
        return wait_as_worker(rank, args.run_dir)
    try:
        train(
            args.config,
            sets=args.sets,
            smoke=args.smoke,
            resume=args.resume,
            runs_root=args.runs_dir,
            run_dir=args.run_dir,
        )
    except (ConfigError, RunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
