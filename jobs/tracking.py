"""MLflow tracking of a run: one MLflow run across every session of a run directory."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from jobs.checkpoints import Progress
from jobs.config import ExperimentConfig
from jobs.rundir import RunDir


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
