"""MLflow tracking of a run: one MLflow run across every session of a run directory."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from jobs.checkpoints import Progress
from jobs.config import ExperimentConfig
from jobs.rundir import Metric, RunDir

STEP_KEY = Metric.STEPS_PER_S  # logged every iteration: its history says what MLflow has


_SET_HERE: set[str] = set()
"""Tracking URIs this process gave MLflow, which must never pass for the environment's own
``MLFLOW_TRACKING_URI`` (``mlflow.set_tracking_uri`` writes the variable too)."""


def tracking_uri(default: str) -> str:
    """``MLFLOW_TRACKING_URI`` as the environment gave it (Azure ML sets it in a job), else
    ``default``: never a URI an earlier run of this process set, or a second run in one
    process (the benchmarks, a notebook) would log into the first one's store."""
    given = os.environ.get("MLFLOW_TRACKING_URI")
    return given if given and given not in _SET_HERE else default


def use_tracking_uri(uri: str) -> None:
    """MLflow's tracking URI in this process only. ``mlflow.set_tracking_uri`` also writes it
    into ``MLFLOW_TRACKING_URI`` for child processes to inherit; the variable is put back as
    the environment gave it, so a training started from this process (a notebook's, a test
    suite's, the benchmarks') logs into its own run's store, not this one's."""
    import mlflow

    given = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    _SET_HERE.add(uri)
    if given is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = given


class Tracker:
    """MLflow: a SQLite store in the run directory, or the URI in MLFLOW_TRACKING_URI
    (Azure ML sets it to the workspace's, and ``MLFLOW_RUN_ID`` to the job's own run).

    Through ``MlflowClient`` only, never MLflow's active-run state: the job's run keeps the
    name Azure ML gave it (``start_run(run_name=...)`` on an existing run renames it), and
    only a run this tracker created is ended by it; Azure ML ends its job's run itself
    (MLflow's fluent API would end it at exit, FINISHED, whatever the job did)."""

    def __init__(
        self,
        run: RunDir,
        cfg: ExperimentConfig,
        progress: Progress,
        parent: str | None = None,
        uri: str | None = None,
    ) -> None:
        import mlflow
        from mlflow.entities import Param, RunTag

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        use_tracking_uri(uri or tracking_uri(run.mlflow_uri))
        self.client = mlflow.tracking.MlflowClient()
        given = os.environ.get("MLFLOW_RUN_ID")  # the job's run on Azure ML
        if progress.mlflow_run_id or given:
            self.run_id = progress.mlflow_run_id or given
        else:
            experiment = mlflow.set_experiment(cfg.experiment)
            self.run_id = self.client.create_run(
                experiment.experiment_id, run_name=run.run_id
            ).info.run_id
        self.owned = self.run_id != given
        if self.owned:  # a resumed session: the run is running again
            self.client.update_run(self.run_id, status="RUNNING")
        progress.mlflow_run_id = self.run_id
        if progress.sessions == 1:
            params = _flatten(cfg.model_dump(mode="json"))
            tags = {"sim": cfg.sim, "algorithm": cfg.algorithm, "config_digest": cfg.digest()}
            if parent:  # a study's trial: MLflow shows it under the study's run
                tags["mlflow.parentRunId"] = parent
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            values = [Param(k, str(v)) for k, v in params.items()]
            for i in range(0, len(values), 100):  # MLflow takes 100 parameters per batch
                self.client.log_batch(self.run_id, params=values[i : i + 100])

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric as MlflowMetric

        now = int(time.time() * 1000)
        values = [MlflowMetric(k, float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=values)

    def catch_up(self, metrics_file: os.PathLike) -> None:
        """Log the lines of ``metrics_file`` past MLflow's last step (a kill between a
        checkpoint and its metrics reaching MLflow), so each iteration is there once."""
        import json
        from pathlib import Path

        path = Path(metrics_file)
        if not path.is_file():
            return
        history = self.client.get_metric_history(self.run_id, STEP_KEY)
        last = max((m.step for m in history), default=0)
        for text in path.read_text().splitlines():
            line = json.loads(text)
            if line["iteration"] > last:
                self.log(metric_values(line), step=line["iteration"])

    def close(self, status: str, final_checkpoint: str) -> None:
        """End the MLflow run with ``status`` (one this tracker created: Azure ML ends its
        job's run), then tag it. The end comes first: it updates a row in place, which a
        store on a full disk can still do, where new tags may not fit."""
        if self.owned:
            ended = {"completed": "FINISHED", "failed": "FAILED"}.get(status, "KILLED")
            self.client.set_terminated(self.run_id, ended)
        # On Azure ML the job is this MLflow run: `invoke register-model` reads these tags.
        self.client.set_tag(self.run_id, "final_checkpoint", final_checkpoint)
        self.client.set_tag(self.run_id, "status", status)


def metric_values(line: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of a metrics.jsonl line (namespaced keys), without its counters."""
    return {k: v for k, v in line.items() if "/" in k}


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
