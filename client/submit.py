"""Run the training job on Azure ML (azure-ai-ml v2): one command job built from the config."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from images.build import git_revision
from jobs.config import DEFAULT_CONFIG, ConfigError, ExperimentConfig, load_config
from jobs.rundir import Metric, new_run_id, write_atomic
from jobs.snapshot import REVISION_VARIABLE
from sims import external
from sims.contract import SimError

ROOT = Path(__file__).resolve().parents[1]
STAGING = ROOT / ".aml"  # staged code per submission (git-ignored)
OUTPUT = "run"  # the job's output: the run directory on the datastore
ENTRYPOINT = f"python -m jobs.train --config experiment.yaml --run-dir ${{{{outputs.{OUTPUT}}}}}"
STUDY_ENTRYPOINT = (
    "python -m jobs.tune --config experiment.yaml --space space.yaml --samples SAMPLES "
    f"--study-dir ${{{{outputs.{OUTPUT}}}}}"
)
SPACE_FILE = "space.yaml"  # a study's search space, staged beside experiment.yaml
PACKAGE_INPUT = "sim_package"  # the job input holding a process simulator's package
WALL_MARGIN_S = 1800  # image pull, Ray start-up and the final assessment, on top of max_wall_s
DEFAULT_TIMEOUT_S = 24 * 3600  # when the config sets no max_wall_s

# Where each setting can come from, in increasing precedence: infra outputs, env, flags.
ENVIRONMENT = {
    "subscription_id": "AZURE_SUBSCRIPTION_ID",
    "resource_group": "AZURE_RESOURCE_GROUP",
    "workspace_name": "AZUREML_WORKSPACE_NAME",
    "cpu_cluster": "AZUREML_CPU_CLUSTER",
    "gpu_cluster": "AZUREML_GPU_CLUSTER",
    "datastore": "AZUREML_DATASTORE",
    "registry_login_server": "AZURE_CONTAINER_REGISTRY",
    "endpoint_identity": "AZUREML_ENDPOINT_IDENTITY",  # resource id; `invoke deploy` only
}


FLAGS = ("subscription_id", "resource_group", "workspace_name")  # the tasks' flags for them


class SubmitError(ValueError):
    """Something submission needs is missing or wrong; the message says where to set it."""


@dataclass
class Target:
    values: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> str:
        return self.values[key]

    def describe(self) -> str:
        width = max(map(len, ENVIRONMENT))
        return "\n".join(
            f"{key.ljust(width)}  {self.values.get(key, '(unset)')}  [{self.sources.get(key, '-')}]"
            for key in ENVIRONMENT
        )


def resolve_target(
    outputs_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, str | None] | None = None,
    stack: str | None = None,
) -> Target:
    """Layer the infra outputs contract, then environment variables, then flags."""
    from infra.outputs import OutputsError, read_outputs

    environ = os.environ if environ is None else environ
    target = Target()
    try:
        outputs = read_outputs(outputs_file, stack=stack)
    except OutputsError as exc:
        if outputs_file is not None:
            raise SubmitError(str(exc)) from None
        target.sources["(infra outputs)"] = f"not used: {exc}"
    else:
        source = str(outputs_file) if outputs_file else "pulumi stack output"
        for key in ENVIRONMENT:
            value = getattr(outputs, key, "")
            if value:
                target.values[key], target.sources[key] = value, source
    for key, variable in ENVIRONMENT.items():
        if environ.get(variable):
            target.values[key], target.sources[key] = environ[variable], f"${variable}"
    for key, value in (flags or {}).items():
        if value:
            target.values[key], target.sources[key] = value, f"--{key.replace('_', '-')}"
    return target


def require(target: Target, keys: list[str]) -> None:
    missing = [key for key in keys if not target.values.get(key)]
    if missing:
        how = "; ".join(
            f"{key}: ${ENVIRONMENT[key]}"
            + (f" or --{key.replace('_', '-')}" if key in FLAGS else "")
            for key in missing
        )
        raise SubmitError(
            f"the workspace is not fully known: missing {', '.join(missing)}. Run `pulumi up` in "
            f"infra/ (or pass --outputs FILE from `pulumi stack output --json`), or set {how}"
        )


CODE = ("sims", "jobs")  # what runs on the cluster; sims/external.yaml adds the model's own


def stage_code(
    cfg: ExperimentConfig, run_id: str, root: Path = STAGING, project: Path = ROOT
) -> Path:
    """The job's code: sims/, jobs/, what sims/external.yaml declares, and the resolved config;
    nothing else of the repository. Checked by importing the simulator in a fresh process."""
    code = root / run_id / "code"
    if code.exists():
        shutil.rmtree(code)
    try:
        extra = external.files(project)
    except SimError as exc:
        raise SubmitError(str(exc)) from None
    for package in CODE:
        shutil.copytree(
            project / package,
            code / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    for relative in extra:
        (code / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project / relative, code / relative)
    if cfg.sim_package:  # checked from the staged folder; the job passes its own input path
        from sims.package import package_source

        cfg = cfg.model_copy(update={"sim_package": package_source(cfg.sim_package)})
    (code / "experiment.yaml").write_text(cfg.to_yaml())
    try:
        check_staged_simulator(code, cfg)
    except SubmitError:
        shutil.rmtree(code.parent)
        raise
    return code


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


def stage_space(space: Path, code: Path, samples: int) -> None:
    """Check a study's search space against the staged config, as the job will read both,
    and stage it."""
    from jobs.tune.space import load_space
    from jobs.tune.study import DEFAULT_METRIC, new_study

    staged = code / "experiment.yaml"
    try:
        params = load_space(space, staged)
        new_study(params, samples, "asha", DEFAULT_METRIC, "return", 0, load_config(staged))
    except ConfigError as exc:
        raise SubmitError(str(exc).replace(str(staged), "the config")) from None
    shutil.copy2(space, code / SPACE_FILE)


# Runs in the staged folder, as the job will: load its config, resolve the simulator, make
# one environment and reset it, as an env runner does (so a missing data file shows too).
_STAGED_CHECK = """
from jobs.config import load_config
from sims.package import is_remote, use_package
from sims.registry import resolve
cfg = load_config("experiment.yaml")
if cfg.sim_package and is_remote(cfg.sim_package):
    resolve(cfg.sim)  # its package is on Azure: the job mounts it; the spec must load here
else:
    if cfg.sim_package:
        use_package(cfg.sim_package, cfg.sim_package_sha256)
    env = resolve(cfg.sim).make_env(lessons=cfg.lessons, lesson=cfg.lesson)
    env.reset(seed=cfg.seed)
    env.action_space.seed(cfg.seed)
    env.step(env.action_space.sample())
    env.close()
"""


def check_in_image(code: Path, cfg: ExperimentConfig, image: str, client: Any = None) -> str:
    """The staged check again, inside the training image the job will run (its Python, its
    packages, its runtimes), with the staged folder mounted read-only and a local
    ``sim_package`` where the config names it. Returns what was checked, or why it could
    not be (never a silent pass); :class:`SubmitError` when the simulator fails there."""
    from images.build import ImageError, docker_client
    from sims.package import is_remote

    if client is None:
        try:
            client = docker_client(timeout=300)
        except ImageError as exc:
            return f"not checked in the training image: {exc}"
    flavour = image.rsplit(":", 1)[-1]
    local = next((tag for tag in (image, f"aml-rl:{flavour}") if _has_image(client, tag)), None)
    if local is None:
        return (
            f"not checked in the training image: {image} is not on this machine (build it with "
            "`invoke build`, and the simulator is checked in it before every submission)"
        )
    volumes = {str(code.resolve()): {"bind": "/job", "mode": "ro"}}
    if cfg.sim_package and not is_remote(cfg.sim_package):
        package = Path(cfg.sim_package).resolve()
        volumes[str(package)] = {"bind": str(package), "mode": "ro"}
    container = client.containers.run(
        local,
        ["python", "-c", _STAGED_CHECK],
        volumes=volumes,
        working_dir="/job",
        environment={"PYTHONPATH": ""},  # the staged code, not the image's own copy
        user=f"{os.getuid()}:{os.getgid()}",  # staged files are the submitter's own
        network_disabled=True,
        detach=True,
    )
    try:
        status = container.wait(timeout=300)["StatusCode"]
        output = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    if status != 0:
        lines = [line for line in output.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {status}"
        raise SubmitError(
            f"in the training image {local}, the job's code cannot run simulator {cfg.sim!r}: "
            f"{reason}. The image lacks what the simulator needs (an interpreter, a Python "
            "package, a binary built for it): add it to the image (README: 'A runtime for "
            "your simulator') and `invoke build` again"
        )
    return f"checked in the training image {local}: the simulator loads, resets and steps"


def _has_image(client: Any, tag: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(tag)
    except ImageNotFound:
        return False
    return True


def check_staged_simulator(code: Path, cfg: ExperimentConfig) -> None:
    """Import the configured simulator from ``code`` alone, in a fresh Python process."""
    from sims.process import PACKAGE_VARIABLE

    # only what is staged, and the config's own package
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", PACKAGE_VARIABLE)}
    done = subprocess.run(
        [sys.executable, "-c", _STAGED_CHECK],
        cwd=code,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {done.returncode}"
        raise SubmitError(
            f"the job's code ({code}) cannot load simulator {cfg.sim!r}: {reason}. The job "
            "carries only sims/, jobs/ and what sims/external.yaml declares: list the code and "
            "data the simulator needs there (README: 'A model package outside sims/')"
        )


def training_image(target: Target, gpu: bool, image: str | None = None) -> str:
    """The image a job runs: ``image``, or the registry's aml-rl:cpu / aml-rl:cuda."""
    return image or f"{target['registry_login_server']}/aml-rl:{'cuda' if gpu else 'cpu'}"


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
) -> Any:
    """The Azure ML command job for ``cfg``: same entrypoint, run directory on the datastore.
    With ``samples``, the job is a study (``jobs.tune``, the search space staged in ``code``)
    whose trials Ray spreads over the job's nodes."""
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
    # a study may run its trials one after another: its limit is theirs, summed
    runs = samples or 1
    timeout = (
        int(runs * cfg.stop.max_wall_s + WALL_MARGIN_S)
        if cfg.stop.max_wall_s
        else DEFAULT_TIMEOUT_S
    )
    folder = f"study-{run_id}" if samples else run_id
    command = STUDY_ENTRYPOINT.replace("SAMPLES", str(samples)) if samples else ENTRYPOINT
    inputs = {}
    if cfg.sim_package:  # mounted (a folder) or downloaded (an archive) on every node
        inputs[PACKAGE_INPUT] = package_input(cfg.sim_package)
        command += f" --set sim_package=${{{{inputs.{PACKAGE_INPUT}}}}}"
    tags = {"git_revision": git_revision(), "config_digest": cfg.digest(), "sim": cfg.sim}
    tags["run_id"] = run_id
    if samples:
        tags["study_samples"] = str(samples)
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


def credential() -> Any:
    """The Azure credential (:func:`client.credentials.azure_credential`), checked once, with
    one message when nobody is logged in."""
    from azure.core.exceptions import ClientAuthenticationError

    from client.credentials import azure_credential

    cred = azure_credential()
    identity = logging.getLogger("azure.identity")
    level = identity.level
    identity.setLevel(logging.ERROR)  # its warning per credential tried: 13 lines, said below
    try:
        cred.get_token("https://management.azure.com/.default")
    except ClientAuthenticationError as exc:
        raise SubmitError(
            "not logged in to Azure: run `az login` (or, in CI, azure/login with OpenID Connect) "
            f"and try again ({str(exc).splitlines()[0][:160]})"
        ) from None
    finally:
        identity.setLevel(level)
    return cred


def ml_client(target: Target, cred: Any = None, **kwargs: Any) -> Any:
    from azure.ai.ml import MLClient

    require(target, ["subscription_id", "resource_group", "workspace_name"])
    return MLClient(
        cred or credential(),
        target["subscription_id"],
        target["resource_group"],
        target["workspace_name"],
        **kwargs,
    )


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
                f"job {ended.name} ended {_status(ended)}: {_job_error(str(exc))}. Its logs: "
                f"`az ml job download --name {ended.name} --all`; its page: {ended.studio_url}",
                ended,
            ) from None
        created = client.jobs.get(created.name)
    return created


def _status(job: Any) -> str:
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
            f"job {job.name} recorded no final checkpoint (status {_status(job)}); register a job "
            "that finished training"
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
    client: Any = None,
    http: Any = None,
    echo: Callable[[str], None] = print,
) -> Any:
    """What `invoke submit` does: load (and with ``check``, verify the workspace), stage, build
    the job, then write it or send it. With ``tune`` (a search space), the job is a study."""
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
            stage_space(tune, code, samples)
        job = build_job(
            cfg, target, nodes=nodes, gpu=gpu, run_id=run_id, code=code, image=image,
            samples=samples if tune is not None else None,
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
    echo(f"job {created.name}: {_status(created)}; {created.studio_url}")
    _record(record, created, run_id, cfg.experiment)
    return created


def _record(record: Path | None, job: Any, run_id: str, experiment: str) -> None:
    """``--record job.json``: the job's name and status, for the workflow's next steps."""
    if record is None:
        return
    entry = {"name": job.name, "status": _status(job), "run_id": run_id, "experiment": experiment}
    write_atomic(record, json.dumps(entry, indent=2) + "\n")


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
            f"job {job.name} (status {_status(job)}) wrote no summary.json under {path}; register "
            "a job that finished training"
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


def credential_of(client: Any) -> Any:
    """The credential an MLClient was made with (for storage calls beside it)."""
    return getattr(client, "_credential", None) or credential()
