"""`invoke deploy` and `invoke predict`: a policy bundle on an Azure ML managed online endpoint.

The endpoint authenticates callers with Azure AD tokens (no keys to leak) and runs under the
user-assigned identity that `pulumi up` made for endpoints (AcrPull on the registry, read on
the workspace storage: Azure ML grants a user-assigned identity nothing by itself). Each bundle
becomes one deployment, named by the bundle's digest, running the bundle's serving image from
the workspace registry; once it is up it takes all traffic, and the endpoint's other
deployments are deleted (they would bill by the hour) unless asked to keep them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from client.export import ExportError, export_bundle
from client.results import download_run
from client.staging import STAGING
from client.workspace import SubmitError, Target, require
from images.build import ImageError, build_serving_image, tag_part
from images.push import push_image
from jobs.rundir import CHECKPOINT_META, RunError
from jobs.verdict import LosingPolicy, refuse_losing
from policy_runtime.bundle import METADATA, BundleError, load
from policy_runtime.schema import PredictRequest

PORT = 8000  # where the serving image listens (images/Dockerfile.serve)
INFERENCE_CONFIG = {
    "liveness_route": {"port": PORT, "path": "/healthz"},
    "readiness_route": {"port": PORT, "path": "/healthz"},
    "scoring_route": {"port": PORT, "path": "/v1/predict"},  # the endpoint's /score lands here
}
# the smallest size Azure ML recommends for a general-purpose deployment (it keeps part of each
# node for its own containers); a policy answers in microseconds, so one is plenty
DEFAULT_INSTANCE_TYPE = "Standard_DS3_v2"
# Azure ML's default is 1 request at a time per instance (more are refused with 429); the
# runtime's event loop answers each in well under a millisecond.
MAX_CONCURRENT_REQUESTS = 16
# Azure's rule for endpoint and deployment names (unique per region, for endpoints)
NAME_RULE = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]$")


class DeployError(ValueError):
    """A deployment that cannot be made as asked; the message says how to fix it."""


@dataclass(frozen=True)
class Release:
    """What one `invoke deploy` puts on an endpoint."""

    endpoint: Any  # ManagedOnlineEndpoint
    deployment: Any  # ManagedOnlineDeployment
    bundle: Path
    image: str  # in the workspace registry
    local_tag: str  # the serving image as built here


def check_name(name: str, what: str) -> str:
    if not NAME_RULE.match(name):
        raise DeployError(
            f"{what} {name!r} is not a valid Azure ML name: 3 to 32 letters, digits or hyphens, "
            "starting with a letter and not ending with a hyphen"
        )
    return name


def default_endpoint_name(sim: str, target: Target) -> str:
    """``<sim>-<8 hex of the workspace>``: endpoint names are unique in the whole Azure region,
    so a bare ``cstr`` would collide with anyone else's."""
    workspace = "/".join(
        target.values.get(key, "")
        for key in ("subscription_id", "resource_group", "workspace_name")
    )
    suffix = hashlib.sha256(workspace.encode()).hexdigest()[:8]
    stem = tag_part(sim).replace(".", "-").replace("_", "-")[:23].strip("-")
    if not stem[:1].isalpha():
        stem = f"p-{stem}"[:23]
    return f"{stem}-{suffix}"


def release_for(
    bundle: Path,
    target: Target,
    *,
    endpoint: str = "",
    instance_type: str = DEFAULT_INSTANCE_TYPE,
    instances: int = 1,
) -> Release:
    """The endpoint and deployment objects for ``bundle`` (no network)."""
    from azure.ai.ml.entities import (
        Environment,
        IdentityConfiguration,
        ManagedIdentityConfiguration,
        ManagedOnlineDeployment,
        ManagedOnlineEndpoint,
        OnlineRequestSettings,
        ProbeSettings,
    )

    require(target, ["registry_login_server", "endpoint_identity"])
    if instances < 1:
        raise DeployError(f"--instances {instances}: a deployment needs at least 1 instance")
    meta = load(bundle).metadata  # refuses a bundle whose graph does not match its metadata
    digest, sim = meta["graph_sha256"], meta["sim"]
    name = check_name(endpoint or default_endpoint_name(sim, target), "endpoint name")
    local_tag = f"aml-rl-policy:{tag_part(sim)}-{digest[:12]}"
    image = f"{target['registry_login_server']}/{local_tag}"
    provenance = {
        "sim": sim,
        "bundle_sha256": digest,
        "config_digest": str(meta.get("config_digest") or ""),
        "git_revision": str(meta.get("git_revision") or ""),
        "states": ",".join(o["name"] for o in meta["observations"]),
        "actions": ",".join(a["name"] for a in meta["actions"]),
    }
    endpoint_obj = ManagedOnlineEndpoint(
        name=name,
        auth_mode="aad_token",  # callers need a role on the endpoint, not a shared key
        identity=IdentityConfiguration(
            type="user_assigned",
            user_assigned_identities=[
                ManagedIdentityConfiguration(resource_id=target["endpoint_identity"])
            ],
        ),
        description=f"aml-rl policy for {sim}",
        tags={"sim": sim},
    )
    probe = ProbeSettings(initial_delay=5, period=10, timeout=2, failure_threshold=3)
    deployment = ManagedOnlineDeployment(
        name=f"policy-{digest[:12]}",
        endpoint_name=name,
        environment=Environment(image=image, inference_config=INFERENCE_CONFIG),
        instance_type=instance_type,
        instance_count=instances,
        request_settings=OnlineRequestSettings(
            max_concurrent_requests_per_instance=MAX_CONCURRENT_REQUESTS,
            request_timeout_ms=5000,
        ),
        liveness_probe=probe,
        readiness_probe=probe,
        tags=provenance,
        description=f"bundle {digest[:12]} of {sim} (git {provenance['git_revision'][:12]})",
    )
    return Release(endpoint_obj, deployment, Path(bundle), image, local_tag)


def bundle_from(
    source: str,
    client: Any = None,
    work: Path = STAGING,
    *,
    allow_losing: bool = False,
    echo: Callable[[str], None] = print,
) -> Path:
    """A policy bundle from a local bundle, run or checkpoint folder, an Azure ML job name or a
    registered model (``name:version``); exported here when it is not one already. A policy
    whose verdict says it does not beat its baseline is refused unless ``allow_losing``."""
    export = functools.partial(_export, allow_losing=allow_losing, echo=echo)
    path = Path(source)
    if path.exists():
        if (path / METADATA).is_file():
            if not allow_losing:
                verdict = load(path).metadata.get("verdict")
                try:
                    note = refuse_losing({"verdict": verdict}, "deploy", source, "--allow-losing")
                except LosingPolicy as exc:
                    raise DeployError(str(exc)) from None
                if note:
                    echo(note)
            return path
        return export(path)
    if client is None:
        raise DeployError(
            f"{source!r} is not a local bundle, run or checkpoint folder, and --dry-run does not "
            "reach Azure ML to fetch a job or model; give a local folder"
        )
    name, _, version = source.partition(":")
    if version:  # a registered model: the checkpoint folder `invoke register-model` recorded
        folder = work / "models" / f"{name}-{version}"
        shutil.rmtree(folder, ignore_errors=True)
        client.models.download(name=name, version=version, download_path=str(folder))
        metas = sorted(folder.rglob(CHECKPOINT_META))
        if not metas:
            raise DeployError(f"model {source} holds no aml-rl checkpoint ({CHECKPOINT_META})")
        return export(metas[0].parent, out=work / "bundles" / f"{name}-{version}")
    try:
        run = download_run(client, source, work / "jobs" / source)
    except SubmitError as exc:
        raise DeployError(str(exc)) from None
    return export(run)


def _export(
    path: Path,
    out: Path | None = None,
    *,
    allow_losing: bool = False,
    echo: Callable[[str], None] = print,
) -> Path:
    try:
        return export_bundle(
            path, out, allow_losing=allow_losing, action="deploy", echo=echo, reuse=True
        )
    except (ExportError, RunError, LosingPolicy) as exc:
        raise DeployError(str(exc)) from None


def write_yaml(release: Release, folder: Path) -> tuple[Path, Path]:
    """The endpoint and deployment as YAML for `az ml online-endpoint/-deployment create -f`."""
    folder.mkdir(parents=True, exist_ok=True)
    endpoint, deployment = folder / "endpoint.yaml", folder / "deployment.yaml"
    # azure-ai-ml 1.35: ManagedOnlineEndpoint.dump(dest) writes nothing (it returns the
    # content), and that content has null principal_id/client_id for a user-assigned
    # identity, which its own loader (and `az ml`) refuses; both are mended here
    content = _without_nulls(json.loads(json.dumps(release.endpoint.dump())))
    endpoint.write_text(yaml.safe_dump(content, sort_keys=False))
    release.deployment.dump(deployment)
    return endpoint, deployment


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def roll_out(
    client: Any, release: Release, *, keep_old: bool = False, echo: Callable[[str], None] = print
) -> Any:
    """Create the endpoint if it is new, create (or update) the deployment, move all traffic to
    it once it is up, then delete the endpoint's other deployments unless ``keep_old``."""
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    name, deployment = release.endpoint.name, release.deployment
    try:
        existing = client.online_endpoints.get(name)
    except ResourceNotFoundError:
        existing = None
    if existing is None:
        echo(f"deploy: creating endpoint {name} (Azure AD token auth)")
        client.online_endpoints.begin_create_or_update(release.endpoint).result()
    elif existing.auth_mode != "aad_token":
        raise DeployError(
            f"endpoint {name} exists with auth mode {existing.auth_mode!r}; this project deploys "
            "only to endpoints that take Azure AD tokens. Pick another --endpoint, or delete it "
            f"(`az ml online-endpoint delete -n {name}`)"
        )
    echo(f"deploy: deployment {deployment.name} of {release.image} on {name}")
    try:
        client.online_deployments.begin_create_or_update(deployment).result()
    except HttpResponseError as exc:
        raise DeployError(
            f"deployment {deployment.name} on {name} failed: {_reason(exc)}. Its container logs: "
            f"`az ml online-deployment get-logs -e {name} -n {deployment.name}`"
        ) from None
    current = client.online_endpoints.get(name)
    current.traffic = {deployment.name: 100}
    current = client.online_endpoints.begin_create_or_update(current).result()
    if not keep_old:
        for old in client.online_deployments.list(endpoint_name=name):
            if old.name != deployment.name:
                echo(f"deploy: deleting the previous deployment {old.name}")
                client.online_deployments.begin_delete(name=old.name, endpoint_name=name).result()
    return current


def deploy_policy(
    target: Target,
    source: str,
    *,
    endpoint: str = "",
    instance_type: str = DEFAULT_INSTANCE_TYPE,
    instances: int = 1,
    keep_old: bool = False,
    dry_run: bool = False,
    out: Path | None = None,
    allow_losing: bool = False,
    client: Any = None,
    docker: Any = None,
    credential: Any = None,
    work: Path = STAGING,
    echo: Callable[[str], None] = print,
) -> Any:
    """What `invoke deploy` does: bundle, release objects, then YAML (dry run) or the rollout:
    build the serving image, push it to the workspace registry, roll it out."""
    if not dry_run:  # a dry run touches no network: only local sources, no login
        from client.workspace import credential as logged_in
        from client.workspace import ml_client

        credential = credential or logged_in()
        client = client or ml_client(target, cred=credential)
    bundle = bundle_from(
        source, None if dry_run else client, work, allow_losing=allow_losing, echo=echo
    )
    release = release_for(
        bundle, target, endpoint=endpoint, instance_type=instance_type, instances=instances
    )
    if dry_run:
        paths = write_yaml(release, out or work / "deploy" / release.endpoint.name)
        echo(
            f"wrote {paths[0]} and {paths[1]}; after pushing {release.image}, create them with "
            f"`az ml online-endpoint create -f {paths[0]}` and "
            f"`az ml online-deployment create -f {paths[1]} --all-traffic`"
        )
        return None
    try:
        built = build_serving_image(release.bundle, tag=release.local_tag, client=docker, echo=echo)
        push_image(
            built.tag, target["registry_login_server"], client=docker, credential=credential,
            echo=echo,
        )  # fmt: skip
    except (ImageError, BundleError) as exc:
        raise DeployError(str(exc)) from None
    current = roll_out(client, release, keep_old=keep_old, echo=echo)
    echo(f"endpoint {current.name}: {release.deployment.name} takes all traffic")
    echo(f"scoring URI: {current.scoring_uri}")
    echo(f"try it: invoke predict --endpoint {current.name} --states FILE")
    return current


def read_request(path: Path) -> dict[str, Any]:
    """A states file as the prediction API's body: ``{"states": {...}}`` or ``{"batch": [...]}``,
    or simply the states (a mapping) or a list of them. One message naming the file and field."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise DeployError(f"{path}: cannot be read ({exc.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise DeployError(
            f'{path}: not JSON{where}; write the states as {{"states": {{"Ca": 8.5, "T": 311.2}}}} '
            'or {"batch": [{...}, ...]}'
        ) from None
    if isinstance(data, list):
        data = {"batch": data}
    elif isinstance(data, dict) and not {"states", "batch"} & data.keys():
        data = {"states": data}
    try:
        return PredictRequest.model_validate(data).model_dump(exclude_none=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(the body)"
        raise DeployError(
            f"{path}: {field}: {first['msg']}; each state is a name and a number in its unit"
        ) from None


def predict(
    client: Any, endpoint: str, states: Path | dict[str, Any], deployment: str = ""
) -> dict[str, Any]:
    """Send a states file (or its body, read already) to the endpoint, with an Azure AD
    token; returns its answer."""
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    body = states if isinstance(states, dict) else read_request(states)
    with tempfile.TemporaryDirectory(prefix="aml-rl-predict-") as folder:
        request = Path(folder) / "request.json"
        request.write_text(json.dumps(body))
        try:
            answer = client.online_endpoints.invoke(
                endpoint_name=endpoint, request_file=str(request),
                deployment_name=deployment or None,
            )  # fmt: skip
        except ResourceNotFoundError:
            raise DeployError(
                f"no endpoint {endpoint!r} in workspace {client.workspace_name}; deploy one with "
                "`invoke deploy RUN|JOB|MODEL`"
            ) from None
        except HttpResponseError as exc:
            raise DeployError(
                f"endpoint {endpoint} answered {exc.status_code}: {_detail(exc)}"
            ) from None
    return json.loads(answer)


def _reason(exc: Any) -> str:
    """ARM's one-line reason, without azure-core's repeated Code:/Message: lines."""
    error = getattr(exc, "error", None)
    return str(getattr(error, "message", None) or str(exc.message).splitlines()[0])


def _detail(exc: Any) -> str:
    """The service's own reason (the runtime's 422 names the state)."""
    try:
        return str(json.loads(exc.response.text())["detail"])
    except (AttributeError, KeyError, TypeError, ValueError):
        return _reason(exc)
