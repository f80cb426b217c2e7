"""`invoke submit --check`: what a job needs from the workspace, verified with the caller's own
credentials before anything is submitted: the workspace, the cluster and its size, write
access to the output datastore, and the training image in the registry. A check that cannot
run (nobody logged in, no network) says so instead of passing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from client.storage import datastore_blob
from client.workspace import Target
from images.build import ImageError
from images.push import acr_refresh_token


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: could not be checked
    detail: str

    @property
    def mark(self) -> str:
        return {True: "ok", False: "FAIL", None: "not checked"}[self.ok]


def preflight(
    target: Target,
    client: Any,
    credential: Any,
    *,
    nodes: int = 1,
    gpu: bool = False,
    image: str,
    session: Any = None,
    blob_transport: Any = None,
) -> list[Check]:
    """Each check in turn; later ones still run when an earlier one fails, where they can."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    checks: list[Check] = []

    def run(name: str, check: Any) -> None:
        try:
            ok, detail = check()
        except ClientAuthenticationError as exc:
            ok, detail = None, f"not logged in ({str(exc).splitlines()[0][:120]}); `az login`"
        except HttpResponseError as exc:
            reason = getattr(getattr(exc, "error", None), "message", None) or exc.message
            ok, detail = False, f"{exc.status_code}: {str(reason).splitlines()[0][:200]}"
        except ImageError as exc:  # the registry's token exchange
            ok = None if "not logged in" in str(exc) else False
            detail = str(exc)
        except OSError as exc:  # no network, DNS
            ok, detail = None, f"could not reach Azure ({exc})"
        checks.append(Check(name, ok, detail))

    run("workspace", lambda: _workspace(client, target))
    cluster = target["gpu_cluster" if gpu else "cpu_cluster"]
    run(f"cluster {cluster}", lambda: _cluster(client, cluster, nodes))
    run(
        f"datastore {target['datastore']} writable",
        lambda: _datastore(client, target["datastore"], credential, blob_transport),
    )
    run(f"image {image}", lambda: _image(image, credential, session))
    return checks


def _workspace(client: Any, target: Any) -> tuple[bool, str]:
    found = client.workspaces.get(target["workspace_name"])
    return True, f"{found.name} in {found.location}"


def _cluster(client: Any, name: str, nodes: int) -> tuple[bool, str]:
    found = client.compute.get(name)
    top = int(getattr(found, "max_instances", 0) or 0)
    if top < nodes:
        return False, (
            f"scales to {top} node(s), fewer than --nodes {nodes}: raise its maximum "
            "(aml-rl:cpuMaxNodes / gpuMaxNodes) or ask for fewer nodes"
        )
    return True, f"{found.size or 'VM'} x up to {top} node(s)"


PROBE = ".aml-rl-check"  # written and deleted again, as the job's output would be


def _datastore(client: Any, name: str, credential: Any, transport: Any) -> tuple[bool, str]:
    from azure.core.exceptions import HttpResponseError

    blob, where = datastore_blob(client, name, PROBE, credential, transport)
    try:
        blob.upload_blob(b"", overwrite=True)
        blob.delete_blob()
    except HttpResponseError as exc:
        if exc.status_code == 403:
            return False, (
                f"403 writing to {where}: your identity has no blob data role there; add its "
                "object id to the stack's dataPrincipals (README: Provision) and `pulumi up`"
            )
        raise
    return True, where


def _image(image: str, credential: Any, session: Any) -> tuple[bool, str]:
    import requests

    registry, _, rest = image.partition("/")
    repository, _, tag = rest.partition(":")
    session = session or requests.Session()
    refresh = acr_refresh_token(registry, credential, session)
    token = session.post(
        f"https://{registry}/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "service": registry,
            "scope": f"repository:{repository}:pull",
            "refresh_token": refresh,
        },
        timeout=30,
    ).json()["access_token"]
    found = session.head(
        f"https://{registry}/v2/{repository}/manifests/{tag or 'latest'}",
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.docker.distribution.manifest.v2+json, "
            "application/vnd.oci.image.manifest.v1+json",
        },
        timeout=30,
    )
    if found.status_code == 404:
        return False, f"not in {registry}: build and push it with `invoke build --push {registry}`"
    if found.status_code != 200:
        return False, f"{registry} answered {found.status_code} for {repository}:{tag}"
    return True, f"digest {found.headers.get('Docker-Content-Digest', '?')[:19]}"
