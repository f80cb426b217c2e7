"""Azure at the HTTP boundary: azure-core's real RequestsTransport over a fake ARM adapter."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
import requests
import urllib3
from azure.core.exceptions import ResourceExistsError
from azure.core.pipeline.transport import RequestsTransport
from requests.adapters import BaseAdapter

from client import workspace

ARM = "https://management.azure.com"
OUTPUTS = {
    "subscription_id": "sub-1", "resource_group": "rg-amlrl-dev", "location": "westeurope",
    "workspace_name": "mlw-amlrl-dev", "cpu_cluster": "cpu-cluster", "gpu_cluster": "gpu-cluster",
    "cpu_vm_size": "Standard_D4s_v3", "gpu_vm_size": "Standard_NC4as_T4_v3",
    "datastore": "outputs", "registry_login_server": "amlrldevacr.azurecr.io", "storage_account": "amlrldevst",
    "mlflow_tracking_uri": "azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/sub-1",
    "endpoint_identity": "/subscriptions/sub-1/resourceGroups/rg-amlrl-dev/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-mlw-amlrl-dev-endpoints",
}  # fmt: skip
WORKSPACE = (
    "/subscriptions/sub-1/resourceGroups/rg-amlrl-dev/providers/"
    "Microsoft.MachineLearningServices/workspaces/mlw-amlrl-dev"
)


class FakeArm(BaseAdapter):
    """Resources by path: PUT stores (provisioned at once), GET reads one or lists a collection,
    DELETE removes; what is not there is ARM's 404. Requests to other hosts (an endpoint's
    scoring URI) go to ``score``. Every request is recorded in ``sent``."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []
        self.resources: dict[str, dict] = {
            WORKSPACE: {
                "id": WORKSPACE,
                "name": "mlw-amlrl-dev",
                "location": "westeurope",
                "properties": {"mlFlowTrackingUri": OUTPUTS["mlflow_tracking_uri"]},
            }
        }
        self.score: Callable[[requests.PreparedRequest], tuple[int, object]] = lambda r: (
            404,
            {"detail": "no scoring here"},
        )

    def send(self, request, **kwargs):
        self.sent.append(request)
        url = request.url.split("?")[0]
        if not url.startswith(ARM):
            answer = self.score(request)
            return (
                answer if isinstance(answer, requests.Response) else self._answer(request, *answer)
            )
        path = url.removeprefix(ARM)
        if request.method == "PUT":
            body = json.loads(request.body or b"{}")
            name = path.rsplit("/", 1)[-1]
            properties = {**body.get("properties", {}), "provisioningState": "Succeeded"}
            if "/onlineEndpoints/" in path and "/deployments/" not in path:
                properties["scoringUri"] = f"https://{name}.westeurope.inference.ml.azure.com/score"
            if "/deployments/" in path:  # the service fills in what was not asked for
                properties.setdefault("scaleSettings", {"scaleType": "Default"})
            if "/models/" in path:
                properties.setdefault("flavors", {})
            if "/jobs/" in path:  # queued, with its studio page, as the service answers
                properties.setdefault("status", "Queued")
                studio = {
                    "jobServiceType": "Studio",
                    "endpoint": f"https://ml.azure.com/runs/{name}",
                }
                properties.setdefault("services", {"Studio": studio})
            self.resources[path] = {**body, "id": path, "name": name, "properties": properties}
            return self._answer(request, 200, self.resources[path])
        if request.method == "GET":
            if path in self.resources:
                return self._answer(request, 200, self.resources[path])
            if len(path.split("/providers/", 1)[-1].split("/")) % 2 == 0:  # a collection
                children = [r for p, r in self.resources.items() if p.rsplit("/", 1)[0] == path]
                return self._answer(request, 200, {"value": children})
        if request.method == "DELETE" and path in self.resources:
            del self.resources[path]
            return self._answer(request, 200, {})
        error = {"code": "ResourceNotFound", "message": f"The resource {path} was not found."}
        return self._answer(request, 404, {"error": error})

    def of(self, kind: str) -> dict[str, dict]:
        """The stored resources whose path has ``/<kind>/``, by name."""
        return {r["name"]: r for p, r in self.resources.items() if p.split("/")[-2] == kind}

    def puts(self, fragment: str) -> list[dict]:
        return [json.loads(r.body) for r in self.sent if r.method == "PUT" and fragment in r.url]

    @staticmethod
    def _answer(request, status: int, payload: object) -> requests.Response:
        raw = json.dumps(payload).encode()
        response = requests.Response()
        response.status_code, response.request, response.url = status, request, request.url
        response.headers["Content-Type"] = "application/json"
        response.raw = urllib3.HTTPResponse(
            body=io.BytesIO(raw), headers=dict(response.headers), status=status,
            preload_content=False,
        )  # fmt: skip
        return response

    def close(self) -> None:
        pass


class WorkspaceStorage:
    """The workspace's storage account (``amlrldevst``), served by a real Azurite: requests to
    ``https://amlrldevst.blob.core.windows.net/...`` go to Azurite's development account, as
    they are, but for the caller's bearer token, which becomes a SAS granting ``permissions``
    (what the caller's role allows: ``rl`` for a reader, none of ``racwdl`` for no role).
    Azurite takes bearer tokens over HTTPS with its own certificate only."""

    HOST = "amlrldevst.blob.core.windows.net"

    def __init__(self, azurite, container: str = "outputs", permissions: str = "racwdl") -> None:
        self.azurite, self.sas, self.container = azurite, azurite.sas(permissions), container
        self.session = requests.Session()
        service = azurite.service()
        if service.get_container_client(container).exists():  # a fresh account per test
            service.delete_container(container)
        for _ in range(50):  # a deleted container's name is free once Azurite has removed it
            try:
                service.create_container(container)
                break
            except ResourceExistsError:
                time.sleep(0.1)

    def handles(self, request) -> bool:
        return urlsplit(request.url).hostname == self.HOST

    def forward(self, request) -> requests.Response:
        url = urlsplit(request.url)
        forwarded = request.copy()
        query = "&".join(part for part in (url.query, self.sas) if part)
        forwarded.prepare_url(f"{self.azurite.url}{url.path}?{query}", None)
        forwarded.headers.pop("Authorization", None)
        return self.session.send(forwarded, stream=True)

    def put(self, path: str, data: bytes) -> None:
        """Write a blob as a job would (``/outputs/cstr_ppo/r7/summary.json``)."""
        container, _, blob = path.lstrip("/").partition("/")
        self.azurite.service().get_blob_client(container, blob).upload_blob(data, overwrite=True)

    def blobs(self) -> dict[str, bytes]:
        """Every blob of the container, by path, read back from Azurite."""
        client = self.azurite.service().get_container_client(self.container)
        return {
            f"/{self.container}/{b.name}": client.download_blob(b.name).readall()
            for b in client.list_blobs()
        }


class Token:
    """A credential that names the audience it was asked for in the token."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes, **kwargs):
        self.scopes.extend(scopes)
        return SimpleNamespace(token=f"token-for:{scopes[0]}", expires_on=2**31)

    get_token_info = get_token


@pytest.fixture
def outputs_file(tmp_path: Path) -> Path:
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(OUTPUTS))
    return path


@pytest.fixture
def target(outputs_file: Path) -> workspace.Target:
    return workspace.resolve_target(outputs_file, environ={})


@pytest.fixture
def arm() -> FakeArm:
    return FakeArm()


@pytest.fixture
def ml(target, arm):
    """An MLClient on the workspace whose HTTP goes to ``arm``."""
    session = requests.Session()
    session.mount("https://", arm)
    return workspace.ml_client(target, cred=Token(), transport=RequestsTransport(session=session))
