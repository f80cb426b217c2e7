"""`invoke submit --check` at the HTTP boundary: ARM (the fake service), blob storage and the
registry answer as Azure would; each check reports what it found, in the user's words."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest
import requests
from azure.core.pipeline.transport import RequestsTransport

from client import submit as sub
from client import workspace
from client.preflight import PROBE, preflight
from tests.client.conftest import WORKSPACE, Token, WorkspaceStorage

COMPUTE = {
    "id": f"{WORKSPACE}/computes/cpu-cluster",
    "name": "cpu-cluster",
    "location": "westeurope",
    "properties": {
        "computeType": "AmlCompute",
        "properties": {
            "vmSize": "Standard_D4s_v3",
            "scaleSettings": {"maxNodeCount": 4, "minNodeCount": 0},
        },
    },
}
DATASTORE = {
    "id": f"{WORKSPACE}/datastores/outputs",
    "name": "outputs",
    "properties": {
        "datastoreType": "AzureBlob",
        "accountName": "amlrldevst",
        "containerName": "outputs",
        "endpoint": "core.windows.net",
        "protocol": "https",
        "credentials": {"credentialsType": "None"},
    },
}


class Azure:
    """The registry behind the fake ARM's other-hosts hook, and the workspace's blob storage
    in a real Azurite, where the caller may write (``writable``) or only read and list."""

    def __init__(self, arm, azurite, *, writable=True, images=("aml-rl:cpu",)):
        self.arm, self.images = arm, set(images)
        self.storage = WorkspaceStorage(azurite, permissions="racwdl" if writable else "rl")
        arm.resources[COMPUTE["id"]] = COMPUTE
        arm.resources[DATASTORE["id"]] = DATASTORE
        arm.score = self.answer

    def answer(self, request):
        if self.storage.handles(request):
            return self.storage.forward(request)
        url = urlparse(request.url)
        if url.hostname == "amlrldevacr.azurecr.io":
            if url.path == "/oauth2/exchange":
                return 200, {"refresh_token": "acr-refresh"}
            if url.path == "/oauth2/token":
                return 200, {"access_token": "acr-access"}
            if url.path.startswith("/v2/") and "/manifests/" in url.path:
                repository, _, tag = url.path[4:].partition("/manifests/")
                assert request.headers["Authorization"] == "Bearer acr-access"
                return (200 if f"{repository}:{tag}" in self.images else 404), {}
        return 404, {}


@pytest.fixture
def transport(arm):
    session = requests.Session()
    session.mount("https://", arm)
    return session


def run_checks(target, ml, transport, **kwargs):
    return preflight(
        target, ml, Token(), session=transport,
        blob_transport=RequestsTransport(session=transport),
        image=sub.training_image(target, kwargs.pop("gpu", False)), **kwargs,
    )  # fmt: skip


@pytest.mark.azurite
def test_a_ready_workspace_passes_every_check_and_leaves_nothing_behind(
    target, arm, ml, transport, azurite
):
    azure = Azure(arm, azurite)
    checks = run_checks(target, ml, transport, nodes=4)
    assert [(c.name, c.ok) for c in checks] == [
        ("workspace", True),
        ("cluster cpu-cluster", True),
        ("datastore outputs writable", True),
        ("image amlrldevacr.azurecr.io/aml-rl:cpu", True),
    ]
    assert checks[1].detail == "Standard_D4s_v3 x up to 4 node(s)"
    assert azure.storage.blobs() == {}, f"the probe {PROBE} is deleted again"
    assert any(f"/outputs/{PROBE}" in r.url and r.method == "PUT" for r in arm.sent)


@pytest.mark.azurite
def test_what_is_not_ready_is_named_with_how_to_fix_it(target, arm, ml, transport, azurite):
    azure = Azure(arm, azurite, writable=False, images=())
    checks = {c.name: c for c in run_checks(target, ml, transport, nodes=6)}
    assert checks["workspace"].ok is True
    cluster = checks["cluster cpu-cluster"]
    assert cluster.ok is False and "scales to 4 node(s), fewer than --nodes 6" in cluster.detail
    store = checks["datastore outputs writable"]
    assert store.ok is False and "add its object id to the stack's dataPrincipals" in store.detail
    assert azure.storage.blobs() == {}  # Azurite refused the probe: nothing was written
    image = checks["image amlrldevacr.azurecr.io/aml-rl:cpu"]
    assert image.ok is False and "invoke build --push amlrldevacr.azurecr.io" in image.detail


@pytest.mark.azurite
def test_a_missing_workspace_fails_its_check(target, arm, ml, transport, azurite):
    Azure(arm, azurite)
    del arm.resources[WORKSPACE]
    (workspace, *_) = run_checks(target, ml, transport)
    assert workspace.ok is False and workspace.detail.startswith("404")


def test_without_a_login_the_checks_say_they_could_not_run(target, arm, transport):
    from azure.core.exceptions import ClientAuthenticationError

    class NoLogin:
        def get_token(self, *scopes, **kwargs):
            raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token")

        get_token_info = get_token

    client = workspace.ml_client(
        target, cred=NoLogin(), transport=RequestsTransport(session=transport)
    )
    checks = preflight(
        target, client, NoLogin(), session=transport,
        blob_transport=RequestsTransport(session=transport), image="amlrldevacr.azurecr.io/aml-rl:cpu",
    )  # fmt: skip
    assert {c.ok for c in checks} == {None}
    assert all("not logged in" in c.detail or "az login" in c.detail for c in checks), checks


@pytest.mark.azurite
def test_submit_check_stops_before_staging_when_the_workspace_is_not_ready(
    target, arm, ml, transport, tmp_path, monkeypatch, azurite
):
    Azure(arm, azurite, images=())
    monkeypatch.setattr(sub, "credential", Token)  # as submit_experiment calls it
    messages: list[str] = []
    with pytest.raises(
        workspace.SubmitError,
        match=r"the workspace is not ready: image amlrldevacr\.azurecr\.io/aml-rl:cpu \(see above\)",
    ):
        sub.submit_experiment(
            target, check=True, client=ml, http=transport, staging=tmp_path / ".aml",
            echo=messages.append,
        )  # fmt: skip
    assert messages[0] == "check: workspace: ok: mlw-amlrl-dev in westeurope"
    assert messages[3].startswith("check: image amlrldevacr.azurecr.io/aml-rl:cpu: FAIL: not in")
    assert not (tmp_path / ".aml").exists(), "nothing staged"
