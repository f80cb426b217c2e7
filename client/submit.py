"""Run the training job on Azure ML (azure-ai-ml v2): one command job built from the config,
written as the YAML it is sent as."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from client.staging import STAGING, check_in_image, stage_code, stage_space
from client.vm_sizes import node_of
from client.workspace import ENVIRONMENT, SubmitError, Target, credential, ml_client, require
from images.build import git_revision
from jobs.config import DEFAULT_CONFIG, ConfigError, ExperimentConfig, load_config
from jobs.layout import NODES_VARIABLE, Layout, resolve_layout
from jobs.rundir import new_run_id, write_atomic
from jobs.snapshot import REVISION_VARIABLE

OUTPUT = "run"  # the job's output: the run directory on the datastore
ENTRYPOINT = f"python -m jobs.train --config experiment.yaml --run-dir ${{{{outputs.{OUTPUT}}}}}"
STUDY_ENTRYPOINT = (
    "python -m jobs.tune --config experiment.yaml --space space.yaml --samples SAMPLES "
    f"--study-dir ${{{{outputs.{OUTPUT}}}}}"
)
PACKAGE_INPUT = "sim_package"  # the job input holding a process simulator's package
WALL_MARGIN_S = 1800  # image pull, Ray start-up and the final assessment, on top of max_wall_s
DEFAULT_TIMEOUT_S = 24 * 3600  # when the config sets no max_wall_s


def training_image(target: Target, gpu: bool, image: str | None = None) -> str:
    """The image a job runs: ``image``, or the registry's aml-rl:cpu / aml-rl:cuda."""
    return image or f"{target['registry_login_server']}/aml-rl:{'cuda' if gpu else 'cpu'}"


def expected_layout(
    cfg: ExperimentConfig, target: Target, *, nodes: int, gpu: bool
) -> tuple[Layout | None, str]:
    """The layout ``cfg`` resolves to on ``nodes`` of the cluster's VM size (as the job will
    resolve it once they have joined), and one line saying so, or why it cannot be told."""
    key = "gpu_vm_size" if gpu else "cpu_vm_size"
    vm_size = target.values.get(key, "")
    node = node_of(vm_size) if vm_size else None
    if node is None:
        why = (
            f"VM size {vm_size!r} does not say its vCPUs and GPUs"
            if vm_size
            else f"the {key} is not known (infra outputs, ${ENVIRONMENT[key]})"
        )
        return None, f"layout: sized on the cluster once its {nodes} node(s) join; {why}"
    layout = resolve_layout(cfg, [node] * nodes)
    lines = [f"layout expected on {nodes} x {vm_size}: {layout.describe()}"]
    lines += [f"layout: warning: {warning}" for warning in layout.warnings]
    return layout, "\n".join(lines)


def package_input(source: str) -> Any:
    """The job input for ``sim_package``: an archive is a file Azure ML downloads to each node
    (extracted there once, checksum first), a folder is mounted read-only. A local path is
    uploaded by azure-ai-ml with the job; ``azureml:`` paths and data assets are used as
    they are."""
    from azure.ai.ml import Input

    from sims.package import ARCHIVES, is_remote

    is_file = source.rstrip("/").endswith(ARCHIVES)
    if not is_remote(source) and not Path(source).exists():
        raise SubmitError(
            f"sim_package {source}: no such file or folder; give the simulator's folder or "
            "archive, or an azureml:// datastore path"
        )
    return Input(
        type="uri_file" if is_file else "uri_folder",
        path=source if is_remote(source) else str(Path(source).resolve()),
        mode="download" if is_file else "ro_mount",
    )


def build_job(
    cfg: ExperimentConfig,
    target: Target,
    *,
    nodes: int = 1,
    gpu: bool = False,
    run_id: str | None = None,
    code: Path | str,
    image: str | None = None,
    samples: int | None = None,
    confirm_seeds: list[int] | None = None,
) -> Any:
    """The Azure ML command job for ``cfg``: same entrypoint, run directory on the datastore.
    With ``samples``, the job is a study (``jobs.tune``, the search space staged in ``code``)
    whose trials Ray spreads over the job's nodes, its lead confirmed on ``confirm_seeds``."""
    from azure.ai.ml import Output, RayDistribution
    from azure.ai.ml.entities import (
        CommandJob,
        CommandJobLimits,
        Environment,
        JobResourceConfiguration,
    )

    if nodes < 1:
        raise SubmitError(f"--nodes {nodes}: a job needs at least 1 node")
    cluster_key = "gpu_cluster" if gpu else "cpu_cluster"
    require(target, ["datastore", cluster_key, *([] if image else ["registry_login_server"])])
    run_id = run_id or new_run_id()
    image = training_image(target, gpu, image)
    # the code snapshot has no .git: the run records the commit it was staged from
    environment_variables = {"AML_RL_RUN_ID": run_id, REVISION_VARIABLE: git_revision()}
    if nodes > 1:
        environment_variables["RAY_ADDRESS"] = "auto"  # join the cluster Azure ML started
        environment_variables[NODES_VARIABLE] = str(nodes)  # the driver sizes for all of them
    # a study may run its trials one after another: its limit is theirs, summed
    confirm_seeds = list(confirm_seeds or []) if samples else []
    runs = (samples or 1) + 2 * len(confirm_seeds)  # each confirming seed trains two configs
    timeout = (
        int(runs * cfg.stop.max_wall_s + WALL_MARGIN_S)
        if cfg.stop.max_wall_s
        else DEFAULT_TIMEOUT_S
    )
    folder = f"study-{run_id}" if samples else run_id
    command = STUDY_ENTRYPOINT.replace("SAMPLES", str(samples)) if samples else ENTRYPOINT
    if confirm_seeds:
        command += f" --confirm-seeds {','.join(map(str, confirm_seeds))}"
    inputs = {}
    if cfg.sim_package:  # mounted (a folder) or downloaded (an archive) on every node
        inputs[PACKAGE_INPUT] = package_input(cfg.sim_package)
        command += f" --set sim_package=${{{{inputs.{PACKAGE_INPUT}}}}}"
    tags = {"git_revision": git_revision(), "config_digest": cfg.digest(), "sim": cfg.sim}
    tags["run_id"] = run_id
    if samples:
        tags["study_samples"] = str(samples)
    layout, _ = expected_layout(cfg, target, nodes=nodes, gpu=gpu)
    if layout is not None and not samples:  # a study's trials keep the zoo's layout each
        tags.update(
            expected_layout=layout.describe(),
            expected_env_runners=f"{layout.num_env_runners} x {layout.num_envs_per_env_runner}",
            expected_learners=f"{layout.num_learners} x {layout.num_gpus_per_learner:g} GPU",
        )
    return CommandJob(
        code=str(code),
        command=command,
        inputs=inputs or None,
        environment=Environment(image=image),
        compute=target[cluster_key],
        resources=JobResourceConfiguration(instance_count=nodes),
        distribution=RayDistribution() if nodes > 1 else None,
        outputs={
            OUTPUT: Output(
                type="uri_folder",
                path=f"azureml://datastores/{target['datastore']}/paths/{cfg.experiment}/{folder}/",
                mode="rw_mount",  # checkpoints and trajectories land there as they are written
            )
        },
        experiment_name=cfg.experiment,
        display_name=f"{cfg.experiment}-{folder}",
        description=f"aml-rl: {cfg.algorithm} on {cfg.sim}"
        + (f", a study of {samples} trials" if samples else ""),
        tags=tags,
        environment_variables=environment_variables,
        limits=CommandJobLimits(timeout=timeout),
    )


def write_yaml(job: Any, path: Path) -> Path:
    """The job as YAML for `az ml job create -f` (no network).

    azure-ai-ml 1.35 dumps every input path with an ``azureml:`` prefix, a local one too
    (``azureml:/home/.../adder.tar.gz``), which would then be read as an asset that does not
    exist; local input paths are written back as they were, which azure-ai-ml uploads."""
    import yaml

    from sims.package import is_remote

    path.parent.mkdir(parents=True, exist_ok=True)
    job.dump(path)
    local = {
        name: str(item.path)
        for name, item in (job.inputs or {}).items()
        if getattr(item, "path", None) and not is_remote(str(item.path))
    }
    if local:
        data = yaml.safe_load(path.read_text())
        for name, original in local.items():
            data["inputs"][name]["path"] = original
        write_atomic(path, yaml.safe_dump(data, sort_keys=False))
    return path


class JobFailed(SubmitError):
    """``--wait`` on a job that did not complete: the job as the service has it now."""

    def __init__(self, message: str, job: Any) -> None:
        super().__init__(message)
        self.job = job


def submit(job: Any, client: Any, wait: bool = False, yaml_path: Path | None = None) -> Any:
    """Submit through the same YAML that --dry-run writes: what can be read is what is sent.
    With ``wait``, a job that fails is :class:`JobFailed`, naming its error and its logs."""
    from azure.ai.ml import load_job
    from azure.ai.ml.exceptions import JobException

    path = write_yaml(job, yaml_path or STAGING / job.tags.get("run_id", "job") / "job.yaml")
    created = client.jobs.create_or_update(load_job(path))
    if wait:
        try:
            client.jobs.stream(created.name)
        except JobException as exc:
            ended = client.jobs.get(created.name)
            raise JobFailed(
                f"job {ended.name} ended {job_status(ended)}: {_job_error(str(exc))}. Its logs: "
                f"`az ml job download --name {ended.name} --all`; its page: {ended.studio_url}",
                ended,
            ) from None
        created = client.jobs.get(created.name)
    return created


def job_status(job: Any) -> str:
    """``Failed``, not ``JobStatus.FAILED``: azure-ai-ml hands some statuses as enums."""
    return str(getattr(job.status, "value", job.status))


def _job_error(text: str) -> str:
    """The message of azure-ai-ml's ``JobException`` text (``Exception : {json}``)."""
    try:
        error = json.loads(text.split(":", 1)[1])
    except (IndexError, ValueError):
        return text.strip()
    while isinstance(error, dict) and isinstance(error.get("error"), dict):
        error = error["error"]
    if isinstance(error, dict) and error.get("message"):
        return f"{error.get('code', 'error')}: {error['message']}"
    return text.strip()


def submit_experiment(
    target: Target,
    *,
    config: Path | None = None,
    sets: list[str] | None = None,
    nodes: int = 1,
    gpu: bool = False,
    wait: bool = False,
    dry_run: bool = False,
    out: Path | None = None,
    image: str | None = None,
    record: Path | None = None,
    staging: Path = STAGING,
    check: bool = False,
    tune: Path | None = None,
    samples: int = 4,
    confirm_seeds: list[int] | None = None,
    client: Any = None,
    http: Any = None,
    echo: Callable[[str], None] = print,
) -> Any:
    """What `invoke submit` does: load (and with ``check``, verify the workspace), stage, build
    the job, then write it or send it. With ``tune`` (a search space), the job is a study,
    its lead confirmed on ``confirm_seeds`` (``invoke tune --confirm-seeds``)."""
    if confirm_seeds and tune is None:
        raise SubmitError("--confirm-seeds confirms a study's lead: give --tune SPACE with it")
    try:
        cfg = load_config(config or DEFAULT_CONFIG, sets or [])
    except ConfigError as exc:
        raise SubmitError(str(exc)) from None
    if check:
        from client.preflight import preflight

        require(target, ["datastore", "gpu_cluster" if gpu else "cpu_cluster"])
        require(target, [] if image else ["registry_login_server"])
        from azure.core.pipeline.transport import RequestsTransport

        cred = credential()
        client = client or ml_client(target, cred=cred)
        checks = preflight(
            target, client, cred, nodes=nodes, gpu=gpu, image=training_image(target, gpu, image),
            session=http, blob_transport=RequestsTransport(session=http) if http else None,
        )  # fmt: skip
        for item in checks:
            echo(f"check: {item.name}: {item.mark}: {item.detail}")
        failed = [item.name for item in checks if item.ok is False]
        if failed:
            raise SubmitError(f"the workspace is not ready: {', '.join(failed)} (see above)")
    if tune is None:
        echo(expected_layout(cfg, target, nodes=nodes, gpu=gpu)[1])
    run_id = new_run_id()
    code = stage_code(cfg, run_id, root=staging)
    try:
        flavour = "cuda" if gpu else "cpu"
        registry = target.values.get("registry_login_server")
        job_image = image or (training_image(target, gpu) if registry else f"aml-rl:{flavour}")
        echo(check_in_image(code, cfg, job_image))
    except SubmitError:
        shutil.rmtree(code.parent, ignore_errors=True)
        with contextlib.suppress(OSError):
            staging.rmdir()
        raise
    try:
        if tune is not None:
            stage_space(tune, code, samples, confirm_seeds)
        job = build_job(
            cfg, target, nodes=nodes, gpu=gpu, run_id=run_id, code=code, image=image,
            samples=samples if tune is not None else None, confirm_seeds=confirm_seeds,
        )  # fmt: skip
        if dry_run:
            path = write_yaml(job, out or staging / run_id / "job.yaml")
            echo(f"wrote {path}; submit it with `az ml job create -f {path}`")
            return None
        created = submit(
            job, client or ml_client(target), wait=wait, yaml_path=staging / run_id / "job.yaml"
        )
    except JobFailed as failed:  # sent, and it failed: the workflow fetches its logs by name
        _record(record, failed.job, run_id, cfg.experiment)
        raise
    except SubmitError:
        shutil.rmtree(staging / run_id, ignore_errors=True)  # nothing of a refused submission
        with contextlib.suppress(OSError):  # nor the staging folder it may have created
            staging.rmdir()
        raise
    echo(f"job {created.name}: {job_status(created)}; {created.studio_url}")
    _record(record, created, run_id, cfg.experiment)
    return created


def _record(record: Path | None, job: Any, run_id: str, experiment: str) -> None:
    """``--record job.json``: the job's name and status, for the workflow's next steps."""
    if record is None:
        return
    entry = {
        "name": job.name,
        "status": job_status(job),
        "run_id": run_id,
        "experiment": experiment,
    }
    write_atomic(record, json.dumps(entry, indent=2) + "\n")
