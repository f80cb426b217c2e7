"""What a finished job left: its run directory, its summary, and its policy as a registered
model."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from client.submit import OUTPUT, job_status
from client.workspace import SubmitError, credential_of
from jobs.rundir import Metric


def download_run(client: Any, name: str, to: Path) -> Path:
    """The job's run directory, so that `invoke assess` works on it as on a local run."""
    client.jobs.download(name, download_path=str(to), output_name=OUTPUT)
    run = to / "named-outputs" / OUTPUT
    if not (run / "config.yaml").is_file():
        raise SubmitError(
            f"job {name}: its output holds no run directory (no config.yaml) under {run}"
        )
    return run


def model_for_job(job: Any, run_tags: Mapping[str, str], metrics: Mapping[str, float]) -> Any:
    """The final checkpoint of ``job`` as an Azure ML model, with provenance as properties."""
    from azure.ai.ml.entities import Model

    checkpoint = run_tags.get("final_checkpoint")
    if not checkpoint:
        raise SubmitError(
            f"job {job.name} recorded no final checkpoint (status {job_status(job)}); register a "
            "job that finished training"
        )
    tags = dict(job.tags or {})
    return Model(
        name=f"{job.experiment_name}".replace("_", "-"),
        path=f"azureml://jobs/{job.name}/outputs/{OUTPUT}/paths/{checkpoint}",
        type="custom_model",
        description=f"aml-rl policy from job {job.name} ({checkpoint})",
        properties={
            "sim": tags.get("sim", ""),
            "config_digest": tags.get("config_digest", ""),
            "git_revision": tags.get("git_revision", ""),
            "job": job.name,
            "checkpoint": checkpoint,
            **(
                {"beats_baseline": run_tags["beats_baseline"]}
                if "beats_baseline" in run_tags
                else {}
            ),
            **{f"final/{k}": f"{v:.6g}" for k, v in metrics.items()},
        },
    )


def read_job_summary(
    client: Any, job: Any, credential: Any, blob_transport: Any = None
) -> dict[str, Any]:
    """The job's summary.json, read from its output folder on the datastore: no MLflow plugin
    needed here (`azureml-mlflow` pins an older MLflow than the one we train with), and no
    download of the whole run."""
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    from client.storage import datastore_blob

    path = str(job.outputs[OUTPUT].path)
    found = re.fullmatch(r"azureml://datastores/([^/]+)/paths/(.+?)/?", path)
    if found is None:
        raise SubmitError(f"job {job.name}: its output {path!r} is not on a datastore")
    blob, where = datastore_blob(
        client, found[1], f"{found[2]}/summary.json", credential, blob_transport
    )
    try:
        data = blob.download_blob().readall()
    except ResourceNotFoundError:
        raise SubmitError(
            f"job {job.name} (status {job_status(job)}) wrote no summary.json under {path}; "
            "register a job that finished training"
        ) from None
    except HttpResponseError as exc:
        if exc.status_code != 403:
            raise
        raise SubmitError(
            f"403 reading {where}: add your object id to the stack's dataPrincipals (README: "
            "Provision) and `pulumi up`"
        ) from None
    try:
        summary = json.loads(data)
        checkpoint = summary["checkpoint"]
    except (ValueError, KeyError, TypeError):
        raise SubmitError(f"job {job.name}: {path}summary.json is not a run summary") from None
    return {**summary, "checkpoint": checkpoint}


def register_model(
    client: Any,
    job_name: str,
    credential: Any = None,
    blob_transport: Any = None,
    *,
    allow_losing: bool = False,
    echo: Callable[[str], None] = print,
) -> Any:
    """Register a finished job's final checkpoint (from its summary.json) as a model; one
    whose verdict says it does not beat its baseline only with ``allow_losing``."""
    from jobs.verdict import LosingPolicy, refuse_losing

    found = client.jobs.get(job_name)
    summary = read_job_summary(client, found, credential or credential_of(client), blob_transport)
    if not allow_losing:
        try:
            note = refuse_losing(summary, "register", f"job {job_name}", "--allow-losing")
        except LosingPolicy as exc:
            raise SubmitError(str(exc)) from None
        if note:
            echo(note)
    metrics = {Metric.RETURN: summary.get("episode_return_mean")}
    agent = (summary.get("assessment") or {}).get("agent") or {}
    metrics.update({f"assessment/{k}": v for k, v in agent.items()})
    tags = {"final_checkpoint": summary["checkpoint"]}
    verdict = summary.get("verdict") or {}
    if verdict:
        tags["beats_baseline"] = str(verdict.get("beats")).lower()
        metrics[f"verdict/{verdict['kpi']}_improvement"] = verdict.get("improvement")
    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    return client.models.create_or_update(model_for_job(found, tags, numbers))
