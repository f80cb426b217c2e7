"""The training entrypoint: ``python -m jobs.train --config FILE [--set key=value ...]``.

The same code runs on a laptop, in a container and on an Azure ML cluster; only the Ray
address (``RAY_ADDRESS``) and the output location (``--runs-dir``) differ.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from jobs.assess import ScenarioError, default_scenarios, load_scenarios
from jobs.checkpoints import Progress, save_checkpoint
from jobs.cluster import node_rank, start_ray, wait_as_worker
from jobs.config import DEFAULT_CONFIG, ConfigError, ExperimentConfig, load_config
from jobs.console import console, print_kpis, progress_line
from jobs.rundir import RunDir, RunError, read_checkpoint_meta, write_atomic, write_json
from jobs.tracking import Tracker
from jobs.trajectories import trajectory_files
from sims.contract import SimError
from sims.registry import resolve

USER_ERRORS = (ConfigError, RunError, ScenarioError, SimError)
"""What a user can fix: shown as one message, never a traceback."""
_ENTRY = time.time()  # when this module finished importing its dependencies


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


def _trajectory_summary(run: RunDir) -> dict[str, Any]:
    files = trajectory_files(run.trajectories)
    rows = sum(pq.ParquetFile(path).metadata.num_rows for path in files)
    return {"folder": "trajectories", "files": len(files), "rows": rows}


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
        source = _source(config or DEFAULT_CONFIG, sets)
        cfg = load_config(config or DEFAULT_CONFIG, sets, smoke=smoke)
        check_before_start(cfg, source)
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
        progress = Progress.from_meta(meta)
    # after the checkpoint's simulator is compared: that mismatch is the root cause to name
    check_before_start(cfg, _source(run.config, sets))
    if sets:
        write_atomic(run.config, cfg.to_yaml())
    return cfg, run, progress, checkpoint


def check_before_start(cfg: ExperimentConfig, source: str) -> None:
    """Every file and value the run will need, checked before Ray starts and before a run
    directory exists: the simulator with its lessons and lesson, the assessment scenarios,
    ``training.extra`` against RLlib, and the env runners against this machine's CPUs."""
    from jobs.algorithms import algorithm_config

    handle = resolve(cfg.sim)
    try:
        handle.make_env(lessons=cfg.lessons, lesson=cfg.lesson).close()
    except SimError as exc:
        lessons = cfg.lessons or "(the simulator's own)"
        raise ConfigError(
            f"{source}: sim {cfg.sim!r}, lessons {lessons}, lesson {cfg.lesson!r}: {exc}"
        ) from None
    if cfg.assessment.enabled:
        if cfg.assessment.scenarios is not None:
            load_scenarios(cfg.assessment.scenarios, handle)
        else:
            default_scenarios(handle)
    algorithm_config(cfg, None)  # training.extra: names and kinds of value
    runners, cpus = cfg.env_runners.num_env_runners, os.cpu_count() or 1
    if runners > cpus and not os.environ.get("RAY_ADDRESS"):
        # Each env runner asks Ray for one CPU; more than the machine has never start.
        raise ConfigError(
            f"{source}: env_runners.num_env_runners {runners} needs {runners} CPUs, but this "
            f"machine has {cpus}; set it to {cpus} or fewer (raise "
            "env_runners.num_envs_per_env_runner for more parallel envs), or train on a cluster"
        )


def _source(config: Path, sets: list[str]) -> str:
    """Where the values came from, for messages: the file and any --set."""
    return " ".join([str(config), *(f"--set {item}" for item in sets)])


def train(
    config: Path | None = None,
    *,
    sets: list[str] | None = None,
    smoke: bool = False,
    resume: Path | None = None,
    runs_root: Path = Path("runs"),
    run_dir: Path | None = None,
    on_checkpoint: Callable[[Path, Progress], None] | None = None,
) -> dict[str, Any]:
    """Train, checkpoint, assess; returns the summary that is also written to summary.json.

    ``on_checkpoint(path, progress)`` is called after every checkpoint is saved (the
    benchmarks assess the policy there)."""
    from jobs.algorithms import algorithm_config
    from jobs.callbacks import TrajectoryLogger

    cfg, run, progress, checkpoint = prepare(
        config, list(sets or []), smoke, resume, runs_root, run_dir
    )
    handle = resolve(cfg.sim)
    progress.sessions += 1
    callbacks = functools.partial(
        TrajectoryLogger,
        folder=str(run.trajectories.resolve()),
        sim=cfg.sim,
        run_id=run.run_id,
        session=f"s{progress.sessions:02d}",
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

    def checkpoint_now() -> Path:
        saved = save_checkpoint(algo, run, cfg, progress, handle.observation_shape)
        if on_checkpoint is not None:
            on_checkpoint(saved, progress)
        return saved

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
            progress.advance(result, wall_time_s=session_wall + time.perf_counter() - loop_start)
            metrics = iteration_metrics(
                result, (progress.env_steps - steps_before) / took if took else 0.0
            )
            record_iteration(run, tracker, progress, metrics)
            console.print(progress_line(cfg, progress, metrics))
            reason = stop_reason(cfg, progress, metrics.get("env_runners/episode_return_mean"))
            if reason is None and progress.iteration % cfg.checkpoints.every_iterations == 0:
                checkpoint_now()
    except KeyboardInterrupt:
        status, reason = "interrupted", "interrupted (Ctrl-C)"
        console.print("interrupted: saving a checkpoint before exiting")
    last_checkpoint = checkpoint_now()
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
        title = f"assessment of {last_checkpoint.name} vs baseline"
        print_kpis(result.table, title=title, units=handle.kpi_units)

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
        "units": {"trajectories": handle.units, "kpis": handle.kpi_units},
        "config_digest": cfg.digest(),
        "mlflow_run_id": progress.mlflow_run_id,
        "timeline": timeline,
    }
    write_json(run.summary, summary)
    console.print(f"summary: {run.summary}")
    console.print(f"see it: invoke view {run.path}")
    if status == "interrupted":
        raise KeyboardInterrupt
    return summary


def record_iteration(
    run: RunDir, tracker: Tracker, progress: Progress, metrics: Mapping[str, float]
) -> None:
    """One JSON line in metrics.jsonl and the same metrics in MLflow."""
    tracker.log(metrics, step=progress.iteration)
    line = {
        "session": progress.sessions,
        "iteration": progress.iteration,
        "env_steps": progress.env_steps,
        "wall_time_s": round(progress.wall_time_s, 3),
        **metrics,
    }
    with run.metrics.open("a") as fh:
        fh.write(json.dumps(line) + "\n")


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
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
