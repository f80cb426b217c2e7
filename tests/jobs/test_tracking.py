"""MLflow as an Azure ML job has it: the job's own run, named and ended by Azure ML."""

from __future__ import annotations

import os
import subprocess
import sys

from mlflow.tracking import MlflowClient

from jobs.tracking import STEP_KEY
from tests.conftest import ROOT


def test_a_job_logs_into_its_own_run_and_leaves_its_name_and_its_end_to_azure_ml(tmp_path):
    """Azure ML starts the job's MLflow run (its display name, RUNNING) and sets
    MLFLOW_RUN_ID; it ends that run itself when the job's command exits. Training renamed
    it to the run id and ended it (FINISHED, or KILLED at a budget) from inside the job."""
    uri = f"sqlite:///{tmp_path / 'workspace.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("cstr_ppo")
    job = client.create_run(experiment, run_name="polite_carrot_v1").info.run_id
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_RUN_ID": job, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.train", "--smoke", "--run-dir", str(tmp_path / "run")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    run = client.get_run(job)
    assert run.info.run_name == "polite_carrot_v1", "the job's display name stays"
    assert run.info.status == "RUNNING", "Azure ML ends its job's run, not the script"
    assert run.data.tags["status"] == "completed" and run.data.tags["final_checkpoint"]
    assert client.get_metric_history(job, STEP_KEY), "the iterations are logged into it"
    assert len(client.search_runs([experiment])) == 1, "no second run beside the job's"
