"""Run a study: ``python -m jobs.tune --space FILE [--config FILE] ...``, locally or as one
multi-node Azure ML job."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from ray import tune

from jobs.cluster import announce_over, node_rank, start_ray, wait_as_worker
from jobs.config import DEFAULT_CONFIG, ExperimentConfig, load_config
from jobs.console import console
from jobs.layout import pinned_for_trials
from jobs.rundir import RunError, new_run_id, write_atomic
from jobs.tracking import tracking_uri, use_tracking_uri
from jobs.train import USER_ERRORS
from jobs.tune.results import ResultsTable, finish_study
from jobs.tune.space import Param, SpaceError, load_space
from jobs.tune.study import (
    DEFAULT_METRIC,
    GRACE_ITERATIONS,
    RESULTS_FILE,
    STUDY_FILE,
    Study,
    new_study,
    parse_seeds,
)
from jobs.tune.trial import Trial, trial_resources


def run_study(
    *,
    space: Path | None = None,
    config: Path | None = None,
    samples: int = 4,
    scheduler: str = "asha",
    metric: str = DEFAULT_METRIC,
    kpi: str = "",
    max_concurrent: int = 0,
    time_budget_s: float | None = None,
    runs_root: Path = Path("runs"),
    study_dir: Path | None = None,
    resume: Path | None = None,
    confirm_seeds: list[int] | None = None,
) -> dict[str, Any]:
    """Run (or with ``resume``, continue) a study; returns what ``study.json`` holds.
    ``confirm_seeds``: train the best trial's config and the config as given on these seeds
    too, and compare (jobs.tune.confirm)."""
    if resume is not None:
        if space is not None or config is not None:
            given = " ".join(f"--{n} {v}" for n, v in (("space", space), ("config", config)) if v)
            raise RunError(f"--resume {resume} takes its settings from the study; drop {given}")
        folder = resume
        study = Study.read(folder)
        params = [Param(k, v[0], tuple(v[1])) for k, v in study.space.items()]
        cfg = load_config(folder / "base.yaml")
    else:
        if space is None:
            raise SpaceError("give the search space: --space FILE (see the README's Tune section)")
        config = config or DEFAULT_CONFIG
        cfg = pinned_for_trials(load_config(config))  # trials share the nodes
        params = load_space(space, config)
        study = new_study(
            params, samples, scheduler, metric, kpi, max_concurrent, cfg, confirm_seeds
        )
        if time_budget_s is not None and not (math.isfinite(time_budget_s) and time_budget_s > 0):
            raise SpaceError(f"--time-budget {time_budget_s}: give a number of seconds above 0")
        study.time_budget_s = time_budget_s
        folder = study_dir or runs_root / cfg.experiment / f"study-{new_run_id()}"
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / STUDY_FILE).exists():
            raise RunError(f"{folder} already holds a study; continue it with --resume {folder}")
        write_atomic(folder / "base.yaml", cfg.to_yaml())
    folder = folder.resolve()
    results = folder / RESULTS_FILE
    if results.is_file() and resume is not None:
        done = json.loads(results.read_text())
        console.print(f"{folder} is complete; nothing to do. Best: {done['best']['trial']}")
        return done

    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # trials resolve paths as runs do
    start_ray()
    import ray
    from ray.tune.search import BasicVariantGenerator

    mlflow_uri = tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    if not study.mlflow_run_id:
        study.mlflow_run_id = _parent_run(mlflow_uri, cfg, folder, params)
    study.write(folder)

    cpus = int(ray.cluster_resources().get("CPU", 1))
    per_trial = trial_resources(cfg)
    # Each trial reserves its CPUs (a placement group), so Ray never oversubscribes them; on a
    # cluster, trials start on nodes as they join.
    concurrent = study.max_concurrent or max(1, cpus // len(per_trial))
    console.print(
        f"study {folder}: {study.samples} sample(s) of {len(params)} key(s), scheduler "
        f"{study.scheduler}, metric {study.metric}, final ranking by assessment KPI "
        f"{study.kpi!r}; each trial takes {len(per_trial)} CPU(s) (1 driver + "
        f"{len(per_trial) - 1} env runner(s)); {concurrent} at a time on {cpus} CPU(s)"
        + ("" if study.max_concurrent else " (more as nodes join)" if _on_cluster() else "")
        + (
            "; the first trial trains the config as given, the others sampled values"
            if study.given
            else "; every trial samples values (the config leaves a key of the space unset)"
        )
    )
    trainable = tune.with_resources(Trial, tune.PlacementGroupFactory(per_trial))
    storage = str(folder)
    if resume is not None and tune.Tuner.can_restore(str(folder / "tune")):
        tuner = tune.Tuner.restore(
            str(folder / "tune"), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
        console.print(f"resuming {folder}: finished trials are kept, the others continue")
    else:
        param_space = {p.key: p.domain() for p in params}
        param_space.update(
            __study__=str(folder), __mlflow__=mlflow_uri, __parent__=study.mlflow_run_id
        )
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=study.metric,
                mode="min" if "loss" in study.metric else "max",
                num_samples=study.samples,
                search_alg=BasicVariantGenerator(
                    points_to_evaluate=[dict(study.given)] if study.given else None,
                    random_state=study.seed,
                ),
                max_concurrent_trials=study.max_concurrent or None,
                time_budget_s=study.time_budget_s,
                scheduler=_scheduler(study.scheduler, cfg),
            ),
            run_config=tune.RunConfig(
                name="tune",
                storage_path=storage,
                verbose=0,
                callbacks=[ResultsTable(folder, params, study)],
            ),
        )
    tuner.fit()
    return finish_study(folder, study, params, mlflow_uri)


def _on_cluster() -> bool:
    return bool(os.environ.get("RAY_ADDRESS"))


def _parent_run(uri: str, cfg: ExperimentConfig, folder: Path, params: list[Param]) -> str:
    """The study's MLflow run: on Azure ML, the job's own run (``MLFLOW_RUN_ID``), which
    Azure ML ends; elsewhere a new run in the study's store."""
    import mlflow

    if os.environ.get("MLFLOW_RUN_ID"):
        return os.environ["MLFLOW_RUN_ID"]
    use_tracking_uri(uri)
    if uri.startswith("sqlite:") and mlflow.get_experiment_by_name(cfg.experiment) is None:
        # artifacts (best.yaml) beside the study's store, not in ./mlruns wherever we run
        artifacts = (folder / "mlflow-artifacts").as_uri()
        mlflow.create_experiment(cfg.experiment, artifact_location=artifacts)
    mlflow.set_experiment(cfg.experiment)
    with mlflow.start_run(run_name=folder.name) as run:
        mlflow.set_tags({"aml_rl.study": folder.name, "sim": cfg.sim})
        mlflow.log_params({f"space.{p.key}": f"{p.distribution}{list(p.args)}" for p in params})
        return run.info.run_id


def parser() -> argparse.ArgumentParser:
    out = argparse.ArgumentParser(
        prog="python -m jobs.tune", description="Hyperparameter search with Ray Tune."
    )
    out.add_argument("--space", type=Path, help="search space YAML")
    out.add_argument("--config", type=Path, help="experiment YAML (default cstr_ppo.yaml)")
    out.add_argument("--samples", type=int, default=4, help="trials to sample (default 4)")
    out.add_argument("--scheduler", default="asha", help="asha (early stopping) or fifo")
    out.add_argument("--metric", default=DEFAULT_METRIC, help="training metric for stopping")
    out.add_argument(
        "--kpi", default="", help="assessment KPI for the final ranking (default: the verdict's)"
    )
    out.add_argument("--max-concurrent", type=int, default=0, help="0: as the CPUs hold")
    out.add_argument("--time-budget", type=float, help="seconds for the whole study")
    out.add_argument("--runs-dir", type=Path, default=Path("runs"))
    out.add_argument("--study-dir", type=Path, help="exactly this folder (Azure ML's output)")
    out.add_argument("--resume", type=Path, metavar="DIR", help="continue this study")
    out.add_argument(
        "--confirm-seeds",
        default="",
        metavar="1,2,3",
        help="train the best config and the config as given on these seeds too, and compare",
    )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        rank_, variable = node_rank()
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if rank_:
        return wait_as_worker(rank_, variable, os.environ.get("RAY_ADDRESS"))
    resume = args.resume
    if resume is None and args.study_dir is not None and (args.study_dir / STUDY_FILE).exists():
        console.print(f"{args.study_dir} already holds a study: resuming after a restart")
        resume = args.study_dir
    try:
        run_study(
            space=args.space,
            config=args.config,
            samples=args.samples,
            scheduler=args.scheduler,
            metric=args.metric,
            kpi=args.kpi,
            max_concurrent=args.max_concurrent,
            time_budget_s=args.time_budget,
            runs_root=args.runs_dir,
            study_dir=args.study_dir,
            resume=resume,
            confirm_seeds=parse_seeds(args.confirm_seeds),
        )
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        announce_over()  # on a cluster: every node's command may leave now
    return 0


def _scheduler(name: str, cfg: ExperimentConfig) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if name == "fifo":
        return FIFOScheduler()
    # Rungs by env steps, the run's own count (a resumed trial continues it): trials with
    # larger train batches are compared at the same sample count, not the same iteration.
    return ASHAScheduler(
        time_attr="env_steps",
        grace_period=GRACE_ITERATIONS * cfg.training.train_batch_size,
        reduction_factor=2,
        max_t=10**12,
    )
