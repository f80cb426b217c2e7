"""One trial: an ordinary training run, stepped by Ray Tune one iteration at a time.

Ray Tune's function trainable would run ``train`` in a thread too, but on an early stop it
ends that thread with ``SystemExit`` at its next report and does not wait for it
(``session.finish(timeout=0)``): the run would lose its last checkpoint and summary. The class
trainable below waits for the run to write both.
"""

from __future__ import annotations

import json
import math
import os
import queue
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from ray import tune

from jobs.checkpoints import Progress
from jobs.config import ExperimentConfig
from jobs.rundir import RunDir, RunError, new_run_id
from jobs.tracking import use_tracking_uri
from jobs.train import StopTraining
from jobs.tune.space import dig
from jobs.tune.study import METRICS


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
    differ = {k: (dig(config, k), v) for k, v in params.items() if dig(config, k) != v}
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
