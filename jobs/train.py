"""The training entrypoint: ``python -m jobs.train --config FILE [--set key=value ...]``.

The same code runs on a laptop, in a container and on an Azure ML cluster; only the Ray
address (``RAY_ADDRESS``) and the output location (``--runs-dir``) differ.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import functools
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from jobs.assess import ScenarioError, default_scenarios, load_scenarios
from jobs.callbacks import DISK_FULL, EPISODE_RETURN
from jobs.checkpoints import (
    Candidate,
    Progress,
    no_checkpoint_restores,
    reconcile,
    refuse_another_model,
    restorable,
    restores_with,
    roll_back_untrained,
    save_checkpoint,
    set_aside,
)
from jobs.cluster import announce_over, node_rank, start_ray, wait_as_worker
from jobs.config import DEFAULT_CONFIG, ConfigError, ExperimentConfig, load_config
from jobs.console import console, print_kpis, progress_line
from jobs.faults import (
    FAULT_LOGS,
    FaultWatch,
    SimulatorStopped,
    fault_kinds,
    fault_log,
    ray_log,
    read_record,
    send_fault_tracebacks_to,
    send_ray_notes_to,
    set_aside_record,
)
from jobs.layout import cluster_layout, env_runner_nodes
from jobs.rundir import (
    Metric,
    RunDir,
    RunError,
    column_units,
    disk_full,
    read_summary,
    session_tag,
    write_atomic,
    write_json,
)
from jobs.snapshot import SNAPSHOT_FILE, SimSnapshot, environment
from jobs.tracking import Tracker, metric_values
from jobs.trajectories import read_trajectories, trajectory_files
from jobs.verdict import Verdict, decide, diagnose
from sims.contract import SimError, SimulatorFault
from sims.package import use_package
from sims.registry import resolve

USER_ERRORS = (ConfigError, RunError, ScenarioError, SimError)
"""What a user can fix: shown as one message, never a traceback."""
# A run stops when this many iterations in a row, over at least this long, sampled no env
# step (its simulator fails every episode, or hangs). Both: an asynchronous algorithm (APPO)
# has quick iterations without steps while its env runners warm up.
IDLE_ITERATIONS = 3
IDLE_SECONDS = 60.0
LESSON_TRIES = 3  # a lesson value is refused when reset and one step fail this many times
_ENTRY = time.time()  # when this module finished importing its dependencies


def iteration_metrics(result: Mapping[str, Any], steps_per_s: float) -> dict[str, float]:
    """Stable, namespaced metric names (:data:`METRIC_NAMES`) from an RLlib result dict."""
    metrics = _metrics(result, steps_per_s)
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


def _metrics(result: Mapping[str, Any], steps_per_s: float) -> dict[str, Any]:
    runners = result.get("env_runners", {})
    learner = result.get("learners", {}).get("default_policy", {})
    return {
        # in the simulator's units: RLlib's own is of the (normalised) rewards the learner sees
        Metric.RETURN: runners.get(EPISODE_RETURN, runners.get("episode_return_mean")),
        Metric.LENGTH: runners.get("episode_len_mean"),
        Metric.EPISODES: runners.get("num_episodes_lifetime"),
        Metric.ENV_STEPS: result.get("num_env_steps_sampled_lifetime"),
        Metric.STEP_FAILURES: runners.get("num_env_step_failures", 0),
        Metric.FAILED_EPISODES: runners.get("aml_rl_failed_episodes", 0),
        Metric.STEPS_PER_S: steps_per_s,
        Metric.TOTAL_LOSS: learner.get("total_loss"),
        Metric.POLICY_LOSS: learner.get("policy_loss"),
        Metric.VF_LOSS: learner.get("vf_loss"),
        Metric.ENTROPY: learner.get("entropy"),
    }


METRIC_NAMES = tuple(_metrics({}, 0.0))
"""Every metric an iteration may report (one not measured in an iteration is left out)."""


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


class StopTraining(Exception):
    """Raised by an ``on_iteration`` hook to end the run now, as a scheduler's early stop:
    the run saves a checkpoint, writes its summary with this reason and returns."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RunComplete(Exception):
    """A resumed run that has already reached its budget: nothing to do."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


def prepare(
    config: Path | None,
    sets: list[str],
    smoke: bool,
    resume: Path | None,
    runs_root: Path,
    run_dir: Path | None = None,
) -> tuple[ExperimentConfig, RunDir, Progress, list[Candidate]]:
    """Everything that can fail on user input, before Ray starts. A resume changes nothing
    here: the run directory is only touched once it is locked and a checkpoint restored."""
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
        return cfg, run, Progress(sessions=1), []
    if config is not None:
        raise ConfigError(
            f"--resume {resume} takes its config from the run; drop --config {config}"
        )
    run = RunDir.open(resume)
    cfg = load_config(run.config, sets, smoke=smoke)
    source = _source(run.config, sets)
    candidates = restorable(run)
    # a session number no earlier session used, whichever checkpoint is restored
    readable = [c.meta for c in candidates if c.meta is not None]
    progress = Progress()
    if candidates:
        whole = [c for c in candidates if c.damage is None]
        if not whole:  # nothing is set aside: the run stays as it was
            raise no_checkpoint_restores(run, [f"{c.path.name}: {c.damage}" for c in candidates])
        chosen = whole[0]
        assert chosen.meta is not None
        if chosen.meta["sim"] != cfg.sim:
            raise RunError(
                f"{chosen.path}: trained on simulator {chosen.meta['sim']!r}, but {run.config} "
                f"says {cfg.sim!r}; restore the run's config or start a new run"
            )
        refuse_another_model(chosen.path, chosen.meta, restores_with(cfg, resolve(cfg.sim)), source)
        progress = Progress.from_meta(chosen.meta)
        _refuse_if_complete(run, cfg, progress, sets)
    # after the checkpoint's simulator is compared: that mismatch is the root cause to name
    check_before_start(cfg, source)
    if candidates:  # the damaged ones newer than it, set aside once it has restored
        candidates = candidates[: candidates.index(chosen) + 1]
    progress.sessions = 1 + max((meta["sessions"] for meta in readable), default=0)
    return cfg, run, progress, candidates


def _refuse_if_complete(
    run: RunDir, cfg: ExperimentConfig, progress: Progress, sets: list[str]
) -> None:
    """A run that completed and whose budget the resume does not raise: say so, change nothing."""
    try:
        summary = read_summary(run.path)
    except RunError:  # none yet, or unreadable: not a completed run
        return
    if summary.get("status") != "completed":
        return
    reason = stop_reason(cfg, progress, summary.get("episode_return_mean"))
    if reason is not None:
        raise RunComplete(
            f"{run.path} is complete ({reason}); nothing to do. To train it further, raise its "
            "budget, e.g. --set stop.max_env_steps=N with N above "
            f"{progress.env_steps:,}" + (f" (given: {' '.join(sets)})" if sets else ""),
            summary,
        )


def check_before_start(cfg: ExperimentConfig, source: str) -> None:
    """Every file and value the run will need, checked before Ray starts and before a run
    directory exists: the simulator with its lessons and lesson, the assessment scenarios,
    ``training.extra`` against RLlib, and the env runners against this machine's CPUs."""
    from jobs.algorithms import algorithm_config

    if cfg.sim_package:
        try:  # checksum and extraction before anything starts; env runners reuse it
            use_package(cfg.sim_package, cfg.sim_package_sha256)
        except SimError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    handle = resolve(cfg.sim)
    try:
        env = handle.make_env(lessons=cfg.lessons, lesson=cfg.lesson)
    except SimError as exc:
        lessons = cfg.lessons or "(the simulator's own)"
        raise ConfigError(
            f"{source}: sim {cfg.sim!r}, lessons {lessons}, lesson {cfg.lesson!r}: {exc}"
        ) from None
    try:
        try_lessons(env, cfg.lessons or getattr(handle.spec, "lessons", None), source)
    finally:
        env.close()
    if cfg.assessment.enabled:
        if cfg.assessment.scenarios is not None:
            load_scenarios(cfg.assessment.scenarios, handle)
        else:
            default_scenarios(handle)
    algorithm_config(cfg, None)  # training.extra: names and kinds of value
    runners, cpus = cfg.env_runners.num_env_runners, os.cpu_count() or 1
    if runners != "auto" and runners > cpus and not os.environ.get("RAY_ADDRESS"):
        # Each env runner asks Ray for one CPU; more than the machine has never start.
        raise ConfigError(
            f"{source}: env_runners.num_env_runners {runners} needs {runners} CPUs, but this "
            f"machine has {cpus}; set it to {cpus} or fewer (raise "
            "env_runners.num_envs_per_env_runner for more parallel envs), or train on a cluster"
        )


def try_lessons(env: Any, lessons: Path | None, source: str) -> None:
    """Reset the simulator with every value each lesson can draw (a choice's values, a
    range's ends) and step it once: a value the simulator refuses is named before Ray
    starts, not after thousands of faults on the env runners. A value is refused only when
    it fails :data:`LESSON_TRIES` times: a fault from outside the model (a licence server)
    is training's to survive, not a reason to refuse the run."""
    plan = getattr(env, "plan", None)
    if plan is None:  # a plain Gymnasium environment: no lessons
        return
    for index, lesson in enumerate(plan.lessons):
        for name, parameter in lesson.parameters.items():
            for value in parameter.extremes():
                for attempt in range(LESSON_TRIES):
                    stage = "reset"
                    try:
                        env.reset(
                            seed=attempt, options={"lesson": index, "scenario": {name: value}}
                        )
                        stage = "step"
                        env.step(np.zeros(env.action_space.shape, dtype=np.float32))
                        break
                    except (SimError, SimulatorFault) as exc:
                        error = exc
                else:
                    where = f"{source}: lessons {lessons}: lessons[{index}] ({lesson.name})"
                    raise ConfigError(
                        f"{where}: {name}: the simulator refuses {value:g}: {error}"
                        if stage == "reset"
                        else f"{where}: {name} {value:g}: the simulator fails at its first "
                        f"step ({LESSON_TRIES} tries): {error}"
                    ) from None


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
    on_iteration: Callable[[Progress, dict[str, float]], None] | None = None,
    mlflow_parent: str | None = None,
    mlflow_uri: str | None = None,
) -> dict[str, Any]:
    """Train, checkpoint, assess; returns the summary that is also written to summary.json.

    ``on_checkpoint(path, progress)`` is called after every checkpoint is saved (the
    benchmarks assess the policy there); ``on_iteration(progress, metrics)`` after every
    iteration (a study reports to its scheduler there, and may raise :class:`StopTraining`).
    ``mlflow_parent`` makes the MLflow run a child of that run (a study's), in the store at
    ``mlflow_uri`` (default: ``MLFLOW_TRACKING_URI`` as the environment sets it, else the
    run directory's own)."""
    try:
        cfg, run, progress, candidates = prepare(
            config, list(sets or []), smoke, resume, runs_root, run_dir
        )
    except RunComplete as done:
        console.print(str(done))
        return done.summary
    with run.lock():
        try:
            run.reserve()
        except OSError as exc:
            raise RunError(
                f"the disk under {run.path} is full: free some space and start again"
            ) from exc
        try:
            hooks = _Hooks(on_checkpoint, on_iteration, mlflow_parent, mlflow_uri)
            return _train(cfg, run, progress, candidates, list(sets or []), hooks)
        finally:
            run.release_reserve()


@dataclass(frozen=True)
class _Hooks:
    on_checkpoint: Callable[[Path, Progress], None] | None = None
    on_iteration: Callable[[Progress, dict[str, float]], None] | None = None
    mlflow_parent: str | None = None
    mlflow_uri: str | None = None


def _train(
    cfg: ExperimentConfig,
    run: RunDir,
    progress: Progress,
    candidates: list[Candidate],
    sets: list[str],
    hooks: _Hooks,
) -> dict[str, Any]:
    from jobs.algorithms import algorithm_config
    from jobs.callbacks import TrajectoryLogger

    handle = resolve(cfg.sim)
    record = restores_with(cfg, handle)  # in every checkpoint, compared on a resume
    session = progress.sessions
    callbacks = functools.partial(
        TrajectoryLogger,
        folder=str(run.trajectories.resolve()),
        sim=cfg.sim,
        run_id=run.run_id,
        session=session_tag(progress.sessions),
        every_k_episodes=cfg.trajectories.every_k_episodes,
        enabled=cfg.trajectories.enabled,
        max_fault_s=cfg.stop.max_fault_s,
        # faults that go on past max_wall_s end the run there, even inside an iteration
        deadline=(
            time.time() + cfg.stop.max_wall_s - progress.wall_time_s
            if cfg.stop.max_wall_s is not None
            else None
        ),
    )
    send_ray_notes_to(ray_log(run.path))  # Ray's and RLlib's warnings: to the run's log
    send_fault_tracebacks_to(fault_log(run.path))  # the driver's, and a local env runner's
    algorithm_config(cfg, callbacks)  # raises ConfigError before Ray starts
    set_aside_record(run.path, session)
    console.print(f"run {run.path} ({'resuming' if candidates else 'new'})")

    started = time.perf_counter()
    timeline = {"entry": _ENTRY, "prepared": time.time()}  # wall-clock, for start-up benchmarks
    start_ray()
    if threading.current_thread() is threading.main_thread():  # a study's trials: threads
        # after Ray's own (sys.exit): a container runtime's or a scheduler's stop is Ctrl-C's
        signal.signal(signal.SIGTERM, _terminated)
    timeline["ray_started"] = time.time()
    # The learner updates in this process: on one torch thread, as Ray starts each env
    # runner. For the recipe's networks more threads only add hand-offs (BENCHMARKS.md,
    # profile), and the zoo's figures were taken in a one-thread process, so `invoke train`
    # repeats them step for step.
    import torch

    torch.set_num_threads(1)
    layout = cluster_layout(cfg, echo=console.print)
    console.print(f"layout: {layout.describe()}", markup=False, highlight=False)
    if threading.current_thread() is threading.main_thread():  # a study's trials share nodes
        for warning in layout.warnings:
            console.print(f"layout: warning: {warning}", markup=False, highlight=False)
    algo = algorithm_config(cfg, callbacks, layout).build_algo()
    placement = env_runner_nodes(algo)
    timeline["algorithm_built"] = time.time()
    kept = ""  # the newest whole checkpoint, relative to the run ("" before the first)
    if candidates:
        algo, progress = _restore(algo, run, candidates)
        progress.sessions = session
        console.print(
            f"resumed at iteration {progress.iteration}, {progress.env_steps:,} env steps, "
            f"{progress.wall_time_s:.0f} s of earlier training"
        )
        checkpoint = run.checkpoint_path(progress.iteration)
        kept = str(checkpoint.relative_to(run.path))
        for note in reconcile(run, checkpoint).notes():
            console.print(f"resume: {note}")
        if sets:  # only now that the run's own checkpoint restored under the new settings
            write_atomic(run.config, cfg.to_yaml())
    warm = _warm_start(algo, handle, cfg, run, resumed=bool(candidates))
    if not (run.path / SNAPSHOT_FILE).is_file():  # a new run, or one from before the file
        SimSnapshot.from_handle(handle).write(run)

    pending: list[dict[str, Any]] = []  # metrics lines of the iterations since the checkpoint
    verdicts: list[dict[str, Any]] = []  # the stop criterion's assessments, in order
    saved_at: tuple[int, Path] | None = None  # the iteration last saved, and where

    def checkpoint_now() -> Path:
        nonlocal kept, saved_at
        if saved_at is not None and saved_at[0] == progress.iteration:
            return saved_at[1]  # saved already (an assessment), nothing trained since
        saved = save_checkpoint(algo, run, cfg, progress, record, metrics=pending)
        kept = str(saved.relative_to(run.path))
        saved_at = (progress.iteration, saved)
        commit_metrics(run, tracker, pending)
        pending.clear()
        if hooks.on_checkpoint is not None:
            hooks.on_checkpoint(saved, progress)
        return saved

    tracker = Tracker(run, cfg, progress, parent=hooks.mlflow_parent, uri=hooks.mlflow_uri)
    tracker.catch_up(run.metrics)  # lines a kill kept from MLflow
    status, reason, metrics = "completed", None, {}
    session_wall = progress.wall_time_s
    loop_start = time.perf_counter()
    idle, idle_since = 0, time.perf_counter()  # iterations in a row without an env step
    last_return: float | None = None

    trained_in = environment()

    def summary_of(status: str, reason: str | None, checkpoint: str | None) -> dict[str, Any]:
        return {
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
            "episode_return_mean": metrics.get(Metric.RETURN),
            "env_step_failures": metrics.get(Metric.STEP_FAILURES, 0.0),
            "failed_episodes": metrics.get(Metric.FAILED_EPISODES, 0.0),
            "checkpoint": checkpoint,
            "trajectories": _trajectory_summary(run),
            "assessment": None,
            "verdict": None,
            "verdicts": verdicts,
            "units": {"trajectories": column_units(handle), "kpis": handle.kpi_units},
            "config_digest": cfg.digest(),
            "mlflow_run_id": progress.mlflow_run_id,
            "timeline": timeline,
            "environment": trained_in,
            "warm_start": warm,
            "layout": {**layout.to_json(), "env_runner_nodes": placement},
        }

    def fail(cause: str, record: dict[str, Any] | None) -> SimError:
        """The simulator kept failing: the run ends as failed, with its summary, at its last
        good checkpoint (nothing is saved from the iteration the faults cut short)."""
        algo.stop()
        tracker.close("failed", kept)
        write_json(run.summary, {**summary_of("failed", cause, kept or None), "fault": record})
        return SimError(_failure_message(cfg, run, cause, record, kept))

    watch = FaultWatch(run.path, algo)
    stop_signal = StopSignal()
    try:
        with watch, stop_signal:
            while reason is None:
                stop_signal.raise_if_received()  # came during the last assessment
                steps_before = progress.env_steps
                tick = time.perf_counter()
                result = algo.train()
                took = time.perf_counter() - tick
                stop_signal.raise_if_received()
                if read_record(run.path) is not None:  # an env runner gave up meanwhile
                    raise SimulatorStopped(str(run.path))
                if result.get("env_runners", {}).get(DISK_FULL):
                    raise OSError(errno.ENOSPC, "no space left for the trajectory files")
                timeline.setdefault("first_iteration", time.time())
                progress.advance(
                    result, wall_time_s=session_wall + time.perf_counter() - loop_start
                )
                if progress.env_steps > steps_before:
                    idle, idle_since = 0, time.perf_counter()
                else:
                    idle += 1
                if idle >= IDLE_ITERATIONS and time.perf_counter() - idle_since >= IDLE_SECONDS:
                    raise _no_progress(cfg, idle, time.perf_counter() - idle_since)
                metrics = iteration_metrics(
                    result, (progress.env_steps - steps_before) / took if took else 0.0
                )
                # the mean over the last 100 episodes, as RLlib's own: an iteration in which
                # no episode ended (long episodes, 960 steps) leaves it as it was
                if Metric.RETURN in metrics:
                    last_return = metrics[Metric.RETURN]
                elif last_return is not None:
                    metrics[Metric.RETURN] = last_return
                pending.append(metrics_line(progress, metrics))
                console.print(progress_line(cfg, progress, metrics))
                reason = stop_reason(cfg, progress, metrics.get(Metric.RETURN))
                if hooks.on_iteration is not None:
                    try:
                        hooks.on_iteration(progress, metrics)
                    except StopTraining:
                        if reason is None:
                            raise
                        # the scheduler's stop came on the iteration that met the run's own
                        # stop: the run completed (its budget, its target) and is assessed
                if (
                    reason is None
                    and cfg.stop.beats_baseline
                    and (progress.iteration % cfg.stop.assess_every_iterations == 0)
                ):
                    saved = checkpoint_now()
                    assessing = time.perf_counter()
                    verdict = _assess_in_loop(cfg, run, handle, saved)
                    verdicts.append(
                        {
                            "env_steps": progress.env_steps,
                            # of the run so far, this session's earlier assessments included
                            "wall_time_s": round(progress.wall_time_s, 3),
                            "assess_s": round(time.perf_counter() - assessing, 3),
                            **verdict.to_json(),
                        }
                    )
                    console.print(
                        f"assessment at {progress.env_steps:,} env steps: {verdict.distance()}"
                    )
                    if verdict.beats:
                        reason = f"beats the baseline at {progress.env_steps:,} env steps"
                elif reason is None and progress.iteration % cfg.checkpoints.every_iterations == 0:
                    checkpoint_now()
            last_checkpoint = checkpoint_now()
    except StopTraining as stop:
        status, reason = "stopped", stop.reason
        console.print(f"stopping: {reason}")
        last_checkpoint = checkpoint_now()
    except SimulatorStopped:
        record = read_record(run.path)
        raise fail(record["cause"] if record else "an env runner gave up", record) from None
    except KeyboardInterrupt as interrupt:
        status = "interrupted"
        reason = (
            "terminated (SIGTERM)" if isinstance(interrupt, Terminated) else "interrupted (Ctrl-C)"
        )
        console.print("interrupted: saving a checkpoint before exiting")
        last_checkpoint = checkpoint_now()
    except SimError as exc:
        record = read_record(run.path)
        raise fail(record["cause"] if record else str(exc), record) from None
    except Exception as exc:
        record = read_record(run.path)  # an env runner in this process gave up
        if record is not None:
            raise fail(record["cause"], record) from None
        if not disk_full(exc):
            raise
        algo.stop()
        raise _stopped_on_full_disk(run, tracker, kept, exc) from None
    algo.stop()
    if untrained := roll_back_untrained(run, last_checkpoint):  # sampled ahead of the end
        console.print(
            f"{untrained} trajectory file(s) sampled after the last update, never trained on, "
            "moved to trajectories/rolled-back/"
        )
    tracker.close(status, str(last_checkpoint.relative_to(run.path)))

    assessment = verdict = None
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
        kept_as = run.path / "assessments" / last_checkpoint.name
        if not kept_as.exists():  # assessment/ is the latest session's; this one stays
            shutil.copytree(run.assessment, kept_as)
        title = f"assessment of {last_checkpoint.name} vs baseline"
        print_kpis(result.table, title=title, units=handle.kpi_units)
        final = decide(result.to_json(), handle, cfg.assessment.margin)
        notes = diagnose(cfg, final, [*_earlier_metrics(run), *pending])
        verdict = {**final.to_json(), "diagnoses": [*final.diagnoses, *notes]}

    summary = {
        **summary_of(status, reason, str(last_checkpoint.relative_to(run.path))),
        "assessment": assessment,
        "verdict": verdict,
    }
    write_json(run.summary, summary)
    if verdict is not None:
        console.print(Verdict.from_json(verdict).line(), markup=False, highlight=False)
        for note in verdict["diagnoses"][len(final.diagnoses) :]:
            console.print(note, markup=False, highlight=False)
    faults = _logged_faults(run)
    if len(faults):
        console.print(
            f"simulator faults: {fault_kinds(faults)}; tracebacks in {run.path / FAULT_LOGS}",
            markup=False,
            highlight=False,
        )
    console.print(f"summary: {run.summary}")
    console.print(f"see it: invoke view {run.path}")
    if status == "interrupted":
        raise Terminated if reason == "terminated (SIGTERM)" else KeyboardInterrupt
    return summary


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: a checkpoint and the summary, then exit code 143."""


def _terminated(signum: int, frame: Any) -> None:
    raise Terminated


class StopSignal:
    """Ctrl-C or SIGTERM during training ends the iteration under way first: raised at any
    point, the interrupt could land inside the learner's update (a half-applied optimizer
    step to checkpoint) or inside a C extension that calls back into Python and turns it
    into an error of its own (dm-tree's flatten: an AttributeError, exit code 1). A second
    one raises at once, for an iteration that will not end."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():  # a study's trials: threads
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _note(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            self._raise(signum)
        self.received = signum
        # a handler may run while the console writes: the raw stream, not rich's
        os.write(2, b"stopping at the end of this iteration (again to stop at once)\n")

    def raise_if_received(self) -> None:
        if self.received is not None:
            self._raise(self.received)

    @staticmethod
    def _raise(signum: int) -> None:
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def _assess_in_loop(cfg: ExperimentConfig, run: RunDir, handle: Any, checkpoint: Path) -> Verdict:
    """The stop criterion's assessment of ``checkpoint``: the run's scenarios, no trajectories."""
    from jobs.assess import assess

    result = assess(
        checkpoint,
        scenarios=cfg.assessment.scenarios,
        out=run.path / "assessments" / checkpoint.name,
    )
    return decide(result.to_json(), handle, cfg.assessment.margin)


def _earlier_metrics(run: RunDir) -> list[dict[str, Any]]:
    if not run.metrics.is_file():
        return []
    return [json.loads(line) for line in run.metrics.read_text().splitlines() if line.strip()]


def metrics_line(progress: Progress, metrics: Mapping[str, float]) -> dict[str, Any]:
    """One line of metrics.jsonl: the iteration's counters and metrics."""
    return {
        "session": progress.sessions,
        "iteration": progress.iteration,
        "env_steps": progress.env_steps,
        "wall_time_s": round(progress.wall_time_s, 3),
        **metrics,
    }


def commit_metrics(run: RunDir, tracker: Tracker, lines: list[dict[str, Any]]) -> None:
    """The lines of a saved checkpoint's iterations, to metrics.jsonl and MLflow."""
    with run.metrics.open("a") as fh:
        fh.write("".join(json.dumps(line) + "\n" for line in lines))
    for line in lines:
        tracker.log(metric_values(line), step=line["iteration"])


def _warm_start(
    algo: Any, handle: Any, cfg: ExperimentConfig, run: RunDir, *, resumed: bool
) -> dict[str, Any] | None:
    """``training.warm_start_steps``: fit a new run's policy to the baseline first; a resumed
    run keeps what its first session recorded."""
    if resumed:
        try:
            return read_summary(run.path).get("warm_start")
        except RunError:  # stopped before its first summary, or a damaged one (rewritten)
            return None
    if not cfg.training.warm_start_steps:
        return None
    from jobs.warm_start import warm_start

    done = warm_start(algo, handle, cfg)
    console.print(
        f"warm start: the policy fitted to the baseline's actions over {done.pairs:,} steps of "
        f"{done.episodes} episodes ({done.steps} updates; loss {done.loss_before:.3g} -> "
        f"{done.loss_after:.3g})"
    )
    return dataclasses.asdict(done)


def _restore(algo: Any, run: RunDir, candidates: list[Candidate]) -> tuple[Any, Progress]:
    """Restore the last of ``candidates`` (the newest whole checkpoint), then set aside the
    damaged ones before it. A restore that fails changes nothing in the run: its files are
    whole, so the cause is not the checkpoint's (a Ray or RLlib version, a changed module)."""
    *damaged, chosen = candidates
    assert chosen.meta is not None
    try:
        algo.restore_from_path(str(chosen.path.resolve()))
    except Exception as exc:
        algo.stop()
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        checked = (
            "its files are whole (checked against the digests saved with it)"
            if "files" in chosen.meta
            else "it was saved by an earlier aml-rl, without file digests"
        )
        raise RunError(
            f"{chosen.path} did not restore ({type(exc).__name__}: {first}); {checked}, so "
            f"nothing in {run.path} was changed. Resume with the aml-rl, Ray and simulator "
            "versions it was trained with, or start a new run"
        ) from exc
    for candidate in damaged:
        console.print(
            f"{candidate.path} is damaged ({candidate.damage}); set aside as "
            f"{set_aside(candidate.path).name}, resuming from {chosen.path.name}, the one before it"
        )
    return algo, Progress.from_meta(chosen.meta)


def _no_progress(cfg: ExperimentConfig, iterations: int, seconds: float) -> SimError:
    """The run's simulator produced no step for a while (it hangs, or answers slower than
    RLlib waits): what ``fail`` ends the run with when no env runner gave up first."""
    return SimError(
        f"simulator {cfg.sim!r} produced no env step in {iterations} iterations in a row "
        f"({seconds:.0f} s)"
    )


def _logged_faults(run: RunDir) -> pd.Series:
    """The errors of the simulator faults logged as trajectory rows (empty if none)."""
    try:
        return read_trajectories(run.path).dropna(subset=["error"])["error"]
    except (KeyError, ValueError, OSError):  # no trajectory file, or none with an error
        return pd.Series([], dtype=str)


def _failure_message(
    cfg: ExperimentConfig, run: RunDir, cause: str, record: dict[str, Any] | None, kept: str
) -> str:
    faults = _logged_faults(run)
    last = record["last_fault"]["error"] if record else (faults.iloc[-1] if len(faults) else None)
    if len(faults):
        seen = f"{len(faults)} simulator faults are logged ({fault_kinds(faults)})"
    else:
        seen = "no fault is logged: does a step take longer than RLlib's sample timeout, 60 s?"
    where = f"its last good checkpoint is {kept}" if kept else "it has no checkpoint yet"
    return (
        f"simulator {cfg.sim!r} kept failing, so the run stopped: {cause}"
        + (f"; the last fault: {last}" if last else "")
        + f". {seen}; {where}; summary {run.summary} (status failed), tracebacks in "
        f"{run.path / FAULT_LOGS}. Reproduce it with `invoke check-sim --sim {cfg.sim}`"
    )


def _stopped_on_full_disk(run: RunDir, tracker: Tracker, kept: str, exc: BaseException) -> RunError:
    run.release_reserve()  # room for MLflow's journal
    try:
        tracker.close("failed", kept)
        closed = "its MLflow run is marked FAILED"
    except Exception:  # the MLflow store may be on the same full disk
        closed = "its MLflow run could not be closed (the store is on the full disk)"
    where = f"its last good checkpoint is {kept}" if kept else "it has no checkpoint yet"
    return RunError(
        f"the disk under {run.path} is full ({type(exc).__name__}); the run stopped, {where} "
        f"and {closed}. Free some space, then continue with `invoke train --resume {run.path}`"
    )


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
    try:
        rank, variable = node_rank()
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if rank:
        return wait_as_worker(rank, variable, os.environ.get("RAY_ADDRESS"))
    if variable:
        console.print(f"node 0 (from {variable}): the head; it runs the driver")
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
    except Terminated:
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        return 130
    finally:
        announce_over()  # on a cluster: every node's command may leave now
    return 0


if __name__ == "__main__":
    sys.exit(main())
