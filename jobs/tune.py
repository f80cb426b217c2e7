"""Hyperparameter search: ``python -m jobs.tune --space FILE [--config FILE] ...``.

Ray Tune samples values for experiment-config keys (the search space, a small YAML file);
every trial is an ordinary training run in ``<study>/trial-NNN/`` (config, checkpoints,
metrics, trajectories, summary, MLflow run as a child of the study's), stopped early by the
scheduler on a training metric and ranked at the end by its assessment's KPI. The best
trial's config is written as ``best.yaml``, which ``invoke train --config`` takes unchanged.
The same code runs locally and as one multi-node Azure ML job.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import queue
import secrets
import shutil
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ray import tune

from jobs.assess import ScenarioError
from jobs.checkpoints import Progress
from jobs.cluster import node_rank, start_ray, wait_as_worker
from jobs.config import DEFAULT_CONFIG, ConfigError, ExperimentConfig, check_key, load_config
from jobs.console import console
from jobs.rundir import Metric, RunDir, RunError, new_run_id, read_summary, write_atomic, write_json
from jobs.tracking import tracking_uri, use_tracking_uri
from jobs.train import METRIC_NAMES, USER_ERRORS, StopTraining, check_before_start
from jobs.verdict import beaten_at
from sims.contract import SimError
from sims.lessons import read_yaml
from sims.registry import resolve

# name -> (how many arguments, what they are), for messages
DISTRIBUTIONS = {
    "uniform": "[low, high]",
    "loguniform": "[low, high], both > 0",
    "randint": "[low, high), whole numbers",
    "choice": "[value, value, ...]",
    "grid": "[value, value, ...], every one tried",
}
SCHEDULERS = ("asha", "fifo")
METRICS = tuple(METRIC_NAMES)
DEFAULT_METRIC = Metric.RETURN
GRACE_ITERATIONS = 3
"""ASHA lets every trial sample this many of the base config's train batches before it may
stop one."""
STUDY_FILE = "study.yaml"
RESULTS_FILE = "study.json"
BEST_FILE = "best.yaml"


class SpaceError(ConfigError):
    """A bad search-space file; the message names the file and the key."""


@dataclass(frozen=True)
class Param:
    key: str
    distribution: str
    args: tuple[Any, ...]

    def domain(self) -> Any:
        from ray import tune

        if self.distribution == "grid":
            return tune.grid_search(list(self.args))
        if self.distribution == "choice":
            return tune.choice(list(self.args))
        return getattr(tune, self.distribution)(*self.args)

    def corners(self) -> list[Any]:
        """The values to check against the config model: every choice, or both bounds."""
        if self.distribution in ("choice", "grid"):
            return list(self.args)
        low, high = self.args
        return [low, high - 1] if self.distribution == "randint" else [low, high]


def load_space(path: Path, config: Path) -> list[Param]:
    """Read and check a search space against the experiment config it will vary: each key
    must be a config key, each distribution one of :data:`DISTRIBUTIONS` with fitting
    arguments, and each value one the config accepts."""
    try:
        data = read_yaml(path)
    except SimError as exc:
        raise SpaceError(str(exc)) from None
    if data is None or data == {}:
        raise SpaceError(
            f"{path}: the search space is empty; give at least one key, e.g.\n"
            "  training.lr: {loguniform: [1.0e-5, 1.0e-3]}"
        )
    if not isinstance(data, dict):
        raise SpaceError(
            f"{path}: expected a mapping of config keys to distributions, got {type(data).__name__}"
        )
    from jobs.algorithms import algorithm_config

    params = [_param(path, str(key), value) for key, value in data.items()]
    for param in params:
        for value in param.corners():
            try:  # the config's own checks, and RLlib's (training.extra: names and kinds)
                algorithm_config(load_config(config, [f"{param.key}={json.dumps(value)}"]), None)
            except ConfigError as exc:
                detail = str(exc).split(": ", 2)[-1]
                raise SpaceError(
                    f"{path}: {param.key}: the value {value!r} is refused by the config: {detail}"
                ) from None
    # the first trial's config, as a run checks it before Ray starts (simulator, lessons,
    # scenarios, env runners): a study whose every trial would fail is refused here
    first = [f"{param.key}={json.dumps(param.corners()[0])}" for param in params]
    try:
        check_before_start(load_config(config, first), f"{path} (its first trial)")
    except (ConfigError, SimError, ScenarioError) as exc:
        raise SpaceError(str(exc)) from None
    return params


def _param(path: Path, key: str, value: Any) -> Param:
    try:
        check_key(key, f"{path}: {key}")
    except ConfigError as exc:
        close = difflib.get_close_matches(key, _config_keys(), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise SpaceError(f"{exc}{hint}") from None
    example = f"e.g. {key}: {{choice: [...]}} or {{uniform: [low, high]}}"
    if not isinstance(value, dict) or len(value) != 1:
        raise SpaceError(f"{path}: {key}: expected one distribution, {example} (got {value!r})")
    ((name, args),) = value.items()
    if name not in DISTRIBUTIONS:
        close = difflib.get_close_matches(str(name), DISTRIBUTIONS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise SpaceError(
            f"{path}: {key}: unknown distribution {name!r}{hint}; "
            f"use one of {', '.join(DISTRIBUTIONS)}"
        )
    usage = f"{name} takes {DISTRIBUTIONS[name]}"
    if not isinstance(args, list) or not args:
        raise SpaceError(f"{path}: {key}: {usage} (got {args!r})")
    if name in ("choice", "grid"):
        return Param(key, name, tuple(args))
    numbers = all(isinstance(a, int | float) and not isinstance(a, bool) for a in args)
    if len(args) != 2 or not numbers or not all(math.isfinite(a) for a in args):
        raise SpaceError(f"{path}: {key}: {usage} (got {args!r})")
    low, high = args
    if not low < high:
        raise SpaceError(f"{path}: {key}: {usage}, low below high (got {args!r})")
    if name == "loguniform" and low <= 0:
        raise SpaceError(f"{path}: {key}: {usage} (got {args!r})")
    if name == "randint" and not all(isinstance(a, int) for a in args):
        raise SpaceError(f"{path}: {key}: {usage} (got {args!r})")
    return Param(key, name, (low, high))


def _config_keys(model: Any = ExperimentConfig, prefix: str = "") -> list[str]:
    from pydantic import BaseModel

    keys = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _config_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


@dataclass
class Study:
    """What a study was asked to do, written to ``study.yaml`` so that ``--resume`` needs
    nothing else."""

    samples: int = 4
    scheduler: str = "asha"
    metric: str = DEFAULT_METRIC
    kpi: str = "return"
    max_concurrent: int = 0
    """0: as many as the CPUs hold."""
    time_budget_s: float | None = None
    """Stop the whole study after this long (the running trials stop as an early stop does)."""
    mlflow_run_id: str = ""
    seed: int = field(default_factory=lambda: secrets.randbelow(2**31))
    """The sampler's seed: a resume that finds no Tune state samples the same trials again."""
    space: dict[str, Any] = field(default_factory=dict)
    given: dict[str, Any] | None = None
    """The config's own values of the space's keys: the first trial trains them unchanged, so
    that the study says whether it found anything better than what it was given. None where
    the config leaves a key of the space unset (a ``training.extra`` name)."""

    @classmethod
    def read(cls, folder: Path) -> Study:
        path = folder / STUDY_FILE
        if not path.is_file():
            raise RunError(
                f"{folder}: not a study (no {STUDY_FILE}); pass a folder made by `invoke tune`"
            )
        return cls(**yaml.safe_load(path.read_text()))

    def write(self, folder: Path) -> None:
        write_atomic(folder / STUDY_FILE, yaml.safe_dump(asdict(self), sort_keys=False))


def trial_resources(cfg: ExperimentConfig) -> list[dict[str, float]]:
    """One CPU for the trial's driver (and its learner), one per env runner: what the run
    asks Ray for, reserved together so that trials never oversubscribe the CPUs."""
    return [{"CPU": 1.0}] + [{"CPU": 1.0}] * cfg.env_runners.num_env_runners


class Trial(tune.Trainable):
    """One trial: ``jobs.train.train`` in a thread, one Tune step per training iteration.
    An early stop reaches the run as :class:`StopTraining` at its next iteration, so the
    run saves a checkpoint and writes its summary like any other run."""

    def setup(self, config: dict[str, Any]) -> None:
        self.study = Path(config["__study__"])
        self.params = {k: v for k, v in config.items() if not k.startswith("__")}
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.go = threading.Semaphore(0)
        self.stop_requested = False
        self.started = False
        self.last: dict[str, Any] = {}
        self.mlflow_uri = config.get("__mlflow__") or None
        # on Azure ML this names the job's run, which is the study's: a trial is a child run
        os.environ.pop("MLFLOW_RUN_ID", None)
        self.run_dir = self.study / trial_name(self.trial_id)
        self.parent = config.get("__parent__") or None
        if set_aside_unstarted(self.run_dir, self.study) and self.parent and self.mlflow_uri:
            supersede(self.mlflow_uri, self.parent, self.run_dir.name)
        same_values_or_refuse(self.run_dir, self.params)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from jobs.train import train

        try:
            summary = train(
                self.study / "base.yaml",
                sets=[f"{k}={json.dumps(v)}" for k, v in self.params.items()],
                run_dir=self.run_dir,
                on_iteration=self._on_iteration,
                mlflow_parent=self.parent,
                mlflow_uri=self.mlflow_uri,
            )
            self.events.put(("done", summary))
        except BaseException as exc:  # handed to Tune, which records the trial as failed
            self.events.put(("error", exc))

    def _on_iteration(self, progress: Progress, metrics: dict[str, float]) -> None:
        self.events.put(("iteration", report(progress, metrics, self.last)))
        self.go.acquire()
        if self.stop_requested:
            raise StopTraining("stopped early by the study (its scheduler or time budget)")

    def step(self) -> dict[str, Any]:
        if self.started:
            self.go.release()
        else:
            self.thread.start()
            self.started = True
        kind, payload = self.events.get()
        if kind == "iteration":
            self.last = payload
            return payload
        if kind == "error":
            raise payload
        return {**self.last, **final_report(payload), "done": True}

    def cleanup(self) -> None:
        # an early stop: let the run checkpoint and write its summary before the actor goes
        if self.started and self.thread.is_alive():
            self.stop_requested = True
            self.go.release()
            self.thread.join()

    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
        return {}  # the run directory holds the checkpoints; a restart resumes from it

    def load_checkpoint(self, checkpoint: Any) -> None:
        pass


def trial_name(trial_id: str) -> str:
    """``trial-003`` for Tune's ``<hex>_00003``: the run folder of that trial."""
    return f"trial-{int(trial_id.rsplit('_', 1)[-1]):03d}"


def set_aside_unstarted(run_dir: Path, study: Path) -> bool:
    """A trial restarted after a kill that came before its first checkpoint starts again
    from nothing: what its first attempt left (no committed metric) is moved aside, kept."""
    if not run_dir.exists() or RunDir.has_checkpoint(run_dir):
        return False
    aside = study / "rolled-back"
    aside.mkdir(exist_ok=True)
    shutil.move(str(run_dir), str(aside / f"{run_dir.name}-{new_run_id()}"))
    return True


def supersede(uri: str, parent: str, trial: str) -> None:
    """End the MLflow run of a trial's first attempt that a kill left RUNNING, so that the
    study's children are its trials, each once."""
    import mlflow

    use_tracking_uri(uri)
    client = mlflow.tracking.MlflowClient()
    found = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.mlflow.parentRunId = '{parent}' and attributes.run_name = '{trial}' "
        "and attributes.status = 'RUNNING'",
        output_format="list",
    )
    for run in found:
        client.set_tag(run.info.run_id, "aml_rl.superseded", "true")
        client.set_terminated(run.info.run_id, "KILLED")


def same_values_or_refuse(run_dir: Path, params: Mapping[str, Any]) -> None:
    """A restarted trial resumes its run folder only with the values that folder was
    trained with; anything else would change a run's hyperparameters halfway."""
    if not (run_dir / "config.yaml").is_file():
        return
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    differ = {k: (_dig(config, k), v) for k, v in params.items() if _dig(config, k) != v}
    if differ:
        detail = ", ".join(f"{k} {old!r} there, {new!r} now" for k, (old, new) in differ.items())
        raise RunError(
            f"{run_dir}: this trial was trained with other values ({detail}); the study's "
            "sampler state is gone: start a new study"
        )


def report(
    progress: Progress, metrics: Mapping[str, float], last: Mapping[str, Any]
) -> dict[str, Any]:
    """What a trial tells Tune after an iteration. Every metric is always present (Tune
    requires the study's metric in every result): one not measured yet is carried over from
    the last iteration, or NaN."""
    out: dict[str, Any] = {name: last.get(name, math.nan) for name in METRICS}
    out.update(metrics)
    out.update(iteration=progress.iteration, env_steps=progress.env_steps)
    return out


def final_report(summary: Mapping[str, Any]) -> dict[str, Any]:
    return {"run_status": summary.get("status"), "stop_reason": summary.get("stop_reason")}


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
) -> dict[str, Any]:
    """Run (or with ``resume``, continue) a study; returns what ``study.json`` holds."""
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
        cfg = load_config(config)
        params = load_space(space, config)
        study = new_study(params, samples, scheduler, metric, kpi, max_concurrent, cfg)
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


def new_study(
    params: list[Param],
    samples: int,
    scheduler: str,
    metric: str,
    kpi: str,
    max_concurrent: int,
    cfg: ExperimentConfig,
) -> Study:
    if samples < 1:
        raise SpaceError(f"--samples {samples}: give 1 or more")
    if scheduler not in SCHEDULERS:
        raise SpaceError(f"--scheduler {scheduler!r}: use one of {', '.join(SCHEDULERS)}")
    if metric not in METRICS:
        raise SpaceError(f"--metric {metric!r}: use one of {', '.join(sorted(set(METRICS)))}")
    if max_concurrent < 0:
        raise SpaceError(f"--max-concurrent {max_concurrent}: give 0 (as the CPUs hold) or more")
    if not cfg.assessment.enabled:
        raise SpaceError(
            "the config turns assessment off (assessment.enabled: false), and the study ranks "
            "trials by it; turn it on"
        )
    handle = resolve(cfg.sim)
    known = ["return", *handle.kpi_units]
    kpi = kpi or handle.primary_kpi  # the verdict's KPI unless asked otherwise
    if kpi not in known:
        raise SpaceError(f"--kpi {kpi!r}: {cfg.sim} has KPIs {', '.join(dict.fromkeys(known))}")
    return Study(
        samples=samples,
        scheduler=scheduler,
        metric=metric,
        kpi=kpi,
        max_concurrent=max_concurrent,
        space={p.key: [p.distribution, list(p.args)] for p in params},
        given=given_values(params, cfg),
    )


def given_values(params: list[Param], cfg: ExperimentConfig) -> dict[str, Any] | None:
    """The config's values of the space's keys, or None where one is unset."""
    data = cfg.model_dump(mode="json")
    values = {p.key: _dig(data, p.key) for p in params}
    return None if any(v is None for v in values.values()) else values


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


@dataclass
class TrialRow:
    trial: str
    status: str
    params: dict[str, Any]
    iterations: int | None
    env_steps: int | None
    metric: float | None
    kpi: float | None
    baseline_kpi: float | None
    stop_reason: str | None
    beats: bool | None = None
    """The trial's verdict (``jobs.verdict``): None where it was not assessed."""
    beaten_at: int | None = None
    """Env steps at the first assessment that beat the baseline."""
    given: bool = False
    """The trial trained the config's own values (``Study.given``)."""


def trial_rows(folder: Path, study: Study) -> list[TrialRow]:
    """Every trial's run folder, read back from its files (config, summary, metrics)."""
    rows = []
    for run in sorted(folder.glob("trial-*")):
        if not (run / "config.yaml").is_file():
            continue
        config = yaml.safe_load((run / "config.yaml").read_text())
        params = {key: _dig(config, key) for key in study.space}
        try:
            summary = read_summary(run)
        except RunError:
            summary = {}
        lines = _metrics(run)
        last = lines[-1] if lines else {}
        assessment = summary.get("assessment") or {}
        rows.append(
            TrialRow(
                trial=run.name,
                status=summary.get("status", "running"),
                params=params,
                iterations=summary.get("iterations", last.get("iteration")),
                env_steps=summary.get("env_steps_sampled", last.get("env_steps")),
                metric=last.get(study.metric),
                kpi=(assessment.get("agent") or {}).get(study.kpi),
                baseline_kpi=(assessment.get("baseline") or {}).get(study.kpi),
                stop_reason=summary.get("stop_reason"),
                beats=(summary.get("verdict") or {}).get("beats"),
                beaten_at=beaten_at(summary),
                given=study.given is not None and params == study.given,
            )
        )
    return rows


def _metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def _dig(data: Mapping[str, Any], dotted: str) -> Any:
    node: Any = data
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, Mapping) else None
    return node


def rank(rows: list[TrialRow], study: Study, higher_kpi_better: bool) -> list[TrialRow]:
    """Trials that beat the baseline first, the fewest env steps to that verdict first; then
    the other assessed trials, by the KPI; then the rest (stopped early, failed) by the
    training metric."""
    metric_sign = 1 if "loss" in study.metric else -1
    kpi_sign = -1 if higher_kpi_better else 1

    def key(row: TrialRow) -> tuple[int, float]:
        if row.beaten_at is not None:
            return (0, float(row.beaten_at))
        if row.kpi is not None and math.isfinite(row.kpi):
            return (1, kpi_sign * row.kpi)
        if row.metric is not None and math.isfinite(row.metric):
            return (2, metric_sign * row.metric)
        return (3, 0.0)

    return sorted(rows, key=key)


def finish_study(
    folder: Path, study: Study, params: list[Param], mlflow_uri: str
) -> dict[str, Any]:
    cfg = load_config(folder / "base.yaml")
    handle = resolve(cfg.sim)
    rows = rank(trial_rows(folder, study), study, handle.higher_is_better(study.kpi))
    print_table(rows, params, study, title=f"study {folder.name}: final ranking")
    assessed = [r for r in rows if r.kpi is not None]
    if not assessed:
        raise RunError(
            f"{folder}: no trial finished with an assessment (see each trial's summary.json); "
            "give the trials a larger budget (stop.*) or fewer early stops (--scheduler fifo)"
        )
    best = assessed[0]
    text = (folder / best.trial / "config.yaml").read_text()
    verdict = _verdict_words(best)
    against = against_given(best, rows)
    header = (
        f"# The best trial of study {folder.name}: {best.trial}, {study.kpi} {best.kpi:.4g} "
        f"(baseline {best.baseline_kpi:.4g}); {verdict}\n"
        + (f"# {against}\n" if against else "")
        + "".join(f"# {k}: {v}\n" for k, v in best.params.items())
        + f"# Train it: invoke train --config {folder / BEST_FILE}\n"
    )
    write_atomic(folder / BEST_FILE, header + text)
    result = {
        "study": folder.name,
        "metric": study.metric,
        "kpi": study.kpi,
        "best": {**asdict(best), "config": BEST_FILE},
        "against_given": against,
        "trials": [asdict(r) for r in rows],
    }
    write_json(folder / RESULTS_FILE, result)
    _close_parent(mlflow_uri, study, best, folder)
    console.print(
        f"best: {best.trial} ({study.kpi} {best.kpi:.4g}; {verdict}); config {folder / BEST_FILE}"
    )
    if against:
        console.print(against)
    return result


def _verdict_words(row: TrialRow) -> str:
    if row.beaten_at is not None:
        return f"beats the baseline after {row.beaten_at:,} env steps"
    if row.kpi is None:
        return f"stopped early at {_fmt(row.env_steps)} env steps, not assessed"
    return "does NOT beat the baseline"


def against_given(best: TrialRow, rows: list[TrialRow]) -> str:
    """The best trial against the config as given, in the verdict's terms; empty where the
    study had no such trial."""
    given = next((r for r in rows if r.given), None)
    if given is None:
        return ""
    if given is best:
        return (
            f"no sampled trial did better than the config as given ({given.trial}, which "
            f"{_verdict_words(given)})"
        )
    said = f"the config as given ({given.trial}) {_verdict_words(given)}"
    if best.beaten_at is None:
        return f"{said}; neither it nor any sampled trial beat the baseline"
    if given.beaten_at is None:
        return f"{said}; {best.trial} beats it after {best.beaten_at:,} env steps"
    return (
        f"{said}; {best.trial} after {best.beaten_at:,}: "
        f"{given.beaten_at / best.beaten_at:.2f}x fewer env steps to the verdict"
    )


def _close_parent(uri: str, study: Study, best: TrialRow, folder: Path) -> None:
    import mlflow

    use_tracking_uri(uri)
    client = mlflow.tracking.MlflowClient()
    run_id = study.mlflow_run_id
    client.log_metric(run_id, f"best/{study.kpi}", math.nan if best.kpi is None else best.kpi)
    client.set_tag(run_id, "best_trial", best.trial)
    for key, value in best.params.items():
        client.set_tag(run_id, f"best.{key}", str(value))
    client.log_artifact(run_id, str(folder / BEST_FILE))
    if run_id != os.environ.get("MLFLOW_RUN_ID"):  # Azure ML ends its job's run itself
        client.set_terminated(run_id, "FINISHED")


def print_table(rows: list[TrialRow], params: list[Param], study: Study, title: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    table.add_column("trial", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for p in params:  # the key's last part, unless two keys share it
        short = p.key.rsplit(".", 1)[-1]
        clash = sum(q.key.rsplit(".", 1)[-1] == short for q in params) > 1
        table.add_column(p.key if clash else short, justify="right")
    for column in ("iters", "env steps", f"{study.metric.rsplit('/', 1)[-1]} (training)"):
        table.add_column(column, justify="right")
    table.add_column(f"{study.kpi} (assessed)", justify="right")
    table.add_column("baseline", justify="right")
    table.add_column("beats it at (env steps)", justify="right")
    for row in rows:
        table.add_row(
            row.trial + (" (as given)" if row.given else ""),
            row.status,
            *(escape(_fmt(row.params.get(p.key))) for p in params),
            _fmt(row.iterations),
            _fmt(row.env_steps),
            _fmt(row.metric),
            _fmt(row.kpi),
            _fmt(row.baseline_kpi),
            _fmt(row.beaten_at)
            if row.beaten_at is not None
            else ("no" if row.beats is False else "-"),
        )
    wide = console if console.is_terminal else Console(highlight=False, width=160)
    wide.print(table)  # a log file (Azure ML's, CI's) has no terminal width: not 80 columns


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


class ResultsTable(tune.Callback):
    """Prints the results table while the study runs: when a trial ends, and at most every
    30 s otherwise."""

    def __init__(self, folder: Path, params: list[Param], study: Study) -> None:
        self.folder, self.params, self.study = folder, params, study
        self.printed = 0.0

    def _print(self) -> None:
        self.printed = time.monotonic()
        rows = trial_rows(self.folder, self.study)
        print_table(rows, self.params, self.study, title=f"study {self.folder.name}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        if time.monotonic() - self.printed > 30:
            self._print()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self._print()


def parser() -> argparse.ArgumentParser:
    out = argparse.ArgumentParser(prog="python -m jobs.tune", description=__doc__.splitlines()[0])
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
        )
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    # Tune pickles the Trainable and the callback by reference to their module: run them
    # from ``jobs.tune``, not from this ``__main__`` copy of it.
    from jobs.tune import main as tune_main

    sys.exit(tune_main())
