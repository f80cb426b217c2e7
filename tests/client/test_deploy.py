"""Deployment to an Azure ML managed online endpoint, at the SDK and HTTP boundary: the fake
ARM service stores what the SDK sends; the endpoint's scoring URI is answered by the real
runtime (`invoke serve`'s app) serving a bundle exported from a real run."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests
import uvicorn
from azure.ai.ml import load_online_deployment, load_online_endpoint
from azure.ai.ml.entities import ManagedOnlineEndpoint

from client import deploy as dep
from client import workspace
from policy_runtime import load
from policy_runtime.serve import create_app
from tests.client.conftest import OUTPUTS

STATES = {
    "Ca": 8.57, "T": 311.2, "Tc": 292.0, "Cref": 8.57, "Tref": 311.2,
    "T_error": 0.0, "Tc_error": 0.0, "T_error_integral": 0.0,
}  # fmt: skip


@pytest.fixture(scope="module")
def runtime(cstr_bundle):
    """The policy runtime's app on loopback: what runs in the deployment's container."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(cstr_bundle), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def endpoint(arm, runtime):
    """The endpoint's data plane: /score goes to the container's scoring route."""

    def score(request):
        answer = requests.post(
            f"{runtime}{dep.INFERENCE_CONFIG['scoring_route']['path']}",
            data=request.body,
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        return answer.status_code, answer.json()

    arm.score = score
    return arm


def test_a_release_is_an_aad_endpoint_and_a_deployment_of_the_bundles_image(cstr_bundle, target):
    release = dep.release_for(cstr_bundle, target)
    meta = load(cstr_bundle).metadata
    digest = meta["graph_sha256"]
    endpoint, deployment = release.endpoint, release.deployment
    assert endpoint.auth_mode == "aad_token"
    assert endpoint.identity.type == "user_assigned"
    assert [i.resource_id for i in endpoint.identity.user_assigned_identities] == [
        OUTPUTS["endpoint_identity"]
    ]
    assert release.image == f"amlrldevacr.azurecr.io/aml-rl-policy:cstr-{digest[:12]}"
    assert deployment.environment.image == release.image
    assert deployment.name == f"policy-{digest[:12]}" and deployment.endpoint_name == endpoint.name
    assert deployment.instance_type == "Standard_DS3_v2" and deployment.instance_count == 1
    assert deployment.request_settings.max_concurrent_requests_per_instance == 16
    assert deployment.tags["bundle_sha256"] == digest
    assert deployment.tags["states"].split(",") == [o["name"] for o in meta["observations"]]
    assert deployment.tags["config_digest"] == meta["config_digest"]


def test_the_default_endpoint_name_is_valid_and_differs_between_workspaces(cstr_bundle, target):
    name = dep.release_for(cstr_bundle, target).endpoint.name
    assert dep.NAME_RULE.match(name) and name.startswith("cstr-")
    other = workspace.resolve_target(
        None, environ={}, flags={**target.values, "workspace_name": "w2"}
    )
    assert dep.release_for(cstr_bundle, other).endpoint.name != name
    assert dep.default_endpoint_name("2d_arm:Reach-v0", target).startswith("p-2d-arm-reach-v0-")


@pytest.mark.parametrize("name", ["ab", "1cstr", "cstr_prod", "cstr-", "x" * 33])
def test_an_invalid_endpoint_name_is_refused_with_the_rule(cstr_bundle, target, name):
    with pytest.raises(
        dep.DeployError,
        match=rf"endpoint name '{name}' is not a valid Azure ML name: 3 to 32 letters, digits or hyphens",
    ):
        dep.release_for(cstr_bundle, target, endpoint=name)


def test_a_stack_without_the_endpoint_identity_says_to_run_pulumi_up(cstr_bundle, outputs_file):
    saved = json.loads(outputs_file.read_text())
    del saved["endpoint_identity"]  # a stack from before `invoke deploy`
    outputs_file.write_text(json.dumps(saved))
    target = workspace.resolve_target(outputs_file, environ={})
    with pytest.raises(
        workspace.SubmitError,
        match=r"missing endpoint_identity\. Run `pulumi up` in infra/.*\$AZUREML_ENDPOINT_IDENTITY",
    ):
        dep.release_for(cstr_bundle, target)


def test_the_dry_run_writes_yaml_that_loads_back_as_the_same_release(cstr_bundle, target, tmp_path):
    messages: list[str] = []
    dep.deploy_policy(
        target, str(cstr_bundle), dry_run=True, out=tmp_path / "yaml", echo=messages.append,
        allow_losing=True,
    )  # fmt: skip
    release = dep.release_for(cstr_bundle, target)
    endpoint = load_online_endpoint(tmp_path / "yaml" / "endpoint.yaml")
    deployment = load_online_deployment(tmp_path / "yaml" / "deployment.yaml")
    assert endpoint.name == release.endpoint.name and endpoint.auth_mode == "aad_token"
    assert endpoint.identity.user_assigned_identities[0].resource_id == OUTPUTS["endpoint_identity"]
    assert deployment.environment.image == release.image
    routes = deployment.environment.inference_config  # loaded back in REST's camelCase
    assert {k.lower(): v for k, v in routes.items()} == {
        k.replace("_", ""): v for k, v in dep.INFERENCE_CONFIG.items()
    }
    assert deployment.tags == release.deployment.tags
    assert deployment.readiness_probe.period == 10
    assert "az ml online-deployment create -f" in messages[0] and release.image in messages[0]


def test_a_run_folder_is_exported_to_a_bundle_on_the_way(cstr_run, cstr_bundle, target, tmp_path):
    # a bundle is used as it is
    assert dep.bundle_from(str(cstr_bundle), allow_losing=True) == cstr_bundle
    with pytest.raises(dep.DeployError, match=r"'brave_box_42' is not a local bundle, run or"):
        dep.bundle_from("brave_box_42")  # a job name, but no client: the dry run
    with pytest.raises(dep.DeployError, match=r"not an aml-rl checkpoint"):
        dep.bundle_from(str(tmp_path))


def test_the_rollout_creates_the_endpoint_and_sends_it_all_traffic(cstr_bundle, target, arm, ml):
    messages: list[str] = []
    release = dep.release_for(cstr_bundle, target)
    endpoint = dep.roll_out(ml, release, echo=messages.append)

    (created, *_, traffic) = arm.puts(f"/onlineEndpoints/{release.endpoint.name}?")
    assert created["properties"]["authMode"] == "AADToken"
    assert created["identity"] == {
        "type": "UserAssigned",
        "userAssignedIdentities": {OUTPUTS["endpoint_identity"]: {}},
    }
    assert traffic["properties"]["traffic"] == {release.deployment.name: 100}
    assert traffic["identity"]["type"] == "UserAssigned", "the traffic update keeps the identity"
    (deployment,) = arm.puts("/deployments/")
    assert deployment["properties"]["instanceType"] == "Standard_DS3_v2"
    assert deployment["properties"]["requestSettings"]["maxConcurrentRequestsPerInstance"] == 16
    environment = arm.resources[deployment["properties"]["environmentId"]]["properties"]
    assert environment["image"] == release.image
    assert environment["inferenceConfig"]["scoringRoute"] == {"port": 8000, "path": "/v1/predict"}
    assert endpoint.scoring_uri.startswith(f"https://{release.endpoint.name}.westeurope.inference")
    assert messages[0] == f"deploy: creating endpoint {release.endpoint.name} (Azure AD token auth)"
    assert {r.headers["Authorization"] for r in arm.sent} == {
        "Bearer token-for:https://management.azure.com/.default"
    }


def test_a_new_bundle_replaces_the_old_deployment_unless_asked_to_keep_it(
    cstr_bundle, target, arm, ml
):
    old = dep.release_for(cstr_bundle, target)
    old.deployment.name = "policy-000000000000"  # as an earlier bundle's would be
    dep.roll_out(ml, old)
    release = dep.release_for(cstr_bundle, target)
    dep.roll_out(ml, release, keep_old=True)
    assert set(arm.of("deployments")) == {"policy-000000000000", release.deployment.name}
    assert arm.of("onlineEndpoints")[release.endpoint.name]["properties"]["traffic"] == {
        release.deployment.name: 100
    }
    dep.roll_out(ml, release)
    assert set(arm.of("deployments")) == {release.deployment.name}, "the old one is deleted"


def test_an_endpoint_that_takes_keys_is_not_taken_over(cstr_bundle, target, arm, ml):
    release = dep.release_for(cstr_bundle, target, endpoint="cstr-prod")
    ml.online_endpoints.begin_create_or_update(
        ManagedOnlineEndpoint(name="cstr-prod", auth_mode="key")
    ).result()
    with pytest.raises(
        dep.DeployError,
        match=r"endpoint cstr-prod exists with auth mode 'key'; .*Pick another --endpoint, or delete it",
    ):
        dep.roll_out(ml, release)
    assert not arm.of("deployments")


def test_a_deployment_the_service_refuses_names_it_and_its_logs(cstr_bundle, target, arm, ml):
    send = arm.send

    def quota(request, **kwargs):
        if request.method == "PUT" and "/deployments/" in request.url:
            error = {"code": "BadArgument", "message": "Not enough quota for Standard_DS3_v2."}
            return arm._answer(request, 400, {"error": error})
        return send(request, **kwargs)

    arm.send = quota
    release = dep.release_for(cstr_bundle, target)
    with pytest.raises(
        dep.DeployError,
        match=rf"deployment {release.deployment.name} on {release.endpoint.name} failed: .*Not enough quota for Standard_DS3_v2.*az ml online-deployment get-logs -e {release.endpoint.name}",
    ):
        dep.roll_out(ml, release)


def test_predict_sends_the_states_with_an_ml_token_and_gets_the_bundles_action(
    cstr_bundle, target, endpoint, ml, tmp_path
):
    release = dep.release_for(cstr_bundle, target)
    dep.roll_out(ml, release)
    policy = load(cstr_bundle)
    states = tmp_path / "states.json"
    states.write_text(json.dumps(STATES))  # the plain states, as a user would write them
    assert dep.predict(ml, release.endpoint.name, states) == {"action": policy.act(STATES)}
    batch = [STATES, {**STATES, "Ca": 9.1}]
    states.write_text(json.dumps(batch))
    assert dep.predict(ml, release.endpoint.name, states) == {"actions": policy.act_batch(batch)}
    (scored, *_) = [r for r in endpoint.sent if "inference.ml.azure.com" in r.url]
    assert scored.url == f"https://{release.endpoint.name}.westeurope.inference.ml.azure.com/score"
    assert scored.headers["Authorization"] == "Bearer token-for:https://ml.azure.com/.default"


def test_a_state_the_service_refuses_comes_back_named(cstr_bundle, target, endpoint, ml, tmp_path):
    release = dep.release_for(cstr_bundle, target)
    dep.roll_out(ml, release)
    states = tmp_path / "states.json"
    states.write_text(json.dumps({k: v for k, v in STATES.items() if k != "Tref"}))
    with pytest.raises(
        dep.DeployError, match=rf"endpoint {release.endpoint.name} answered 422: .*Tref"
    ):
        dep.predict(ml, release.endpoint.name, states)


def test_predict_on_an_endpoint_that_does_not_exist_says_how_to_make_one(ml, tmp_path):
    states = tmp_path / "states.json"
    states.write_text(json.dumps(STATES))
    with pytest.raises(
        dep.DeployError,
        match=r"no endpoint 'cstr-prod' in workspace mlw-amlrl-dev; deploy one with `invoke deploy",
    ):
        dep.predict(ml, "cstr-prod", states)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("Ca: 8.5\n", r"states\.json: not JSON at line 1; write the states as"),
        ('{"Ca": "high"}', r"states\.json: states\.Ca: Input should be a valid number"),
        ('{"states": {"Ca": 1}, "batch": [{"Ca": 1}]}', r"states\.json: .*give either 'states' or 'batch'"),
        ("[]", r"states\.json: batch: List should have at least 1 item"),
        ('[{"Ca": 1}, {"Ca": null}]', r"states\.json: batch\.1\.Ca: Input should be a valid number"),
        ('{"states": {"Ca": 1}, "deployment": "x"}', r"states\.json: deployment: Extra inputs are not permitted"),
        (b"\xff\xfe", r"states\.json: not JSON; write the states as"),
    ],
)  # fmt: skip
def test_a_states_file_a_user_gets_wrong_is_named_before_anything_is_sent(
    tmp_path, content, message
):
    states = tmp_path / "states.json"
    if isinstance(content, bytes):
        states.write_bytes(content)
    else:
        states.write_text(content)
    with pytest.raises(dep.DeployError, match=message):
        dep.read_request(states)


def test_a_missing_states_file_is_named(tmp_path):
    with pytest.raises(dep.DeployError, match=r"nope\.json: cannot be read \(No such file"):
        dep.read_request(tmp_path / "nope.json")


def test_a_losing_policy_is_not_deployed_unless_the_flag_says_so(cstr_run, cstr_bundle, target):
    """The smoke-sized run does not beat PI: its verdict travels in the bundle, and deploy
    refuses both the bundle and the run with the verdict in the message."""
    with pytest.raises(
        dep.DeployError,
        match=r"the policy does not beat its baseline \(verdict: does NOT beat the baseline "
        r"\(ca_rms .* kmol/m3 vs baseline 0\.1034 kmol/m3.*refusing to deploy it\. Train it "
        r"further \(invoke train --resume\), or pass --allow-losing to deploy it anyway",
    ):
        dep.deploy_policy(target, str(cstr_bundle), dry_run=True)
    with pytest.raises(
        dep.DeployError, match=r"refusing to deploy it\. .*pass --allow-losing to deploy it anyway"
    ):
        dep.bundle_from(str(cstr_run))
    assert dep.bundle_from(str(cstr_bundle), allow_losing=True) == cstr_bundle


def test_deploy_uses_the_runs_bundle_of_the_same_checkpoint_and_export_says_it_replaces(
    cstr_run, tmp_path
):
    """`deploy --dry-run RUN` exported again and overwrote the run's bundle without a word."""
    import shutil

    from client.export import export_bundle

    run = tmp_path / cstr_run.name
    shutil.copytree(cstr_run, run)
    shutil.rmtree(run / "bundle", ignore_errors=True)
    said: list[str] = []
    bundle = export_bundle(run, allow_losing=True, echo=said.append)
    assert not any("replaced" in line for line in said), said
    before = (bundle / "policy.json").read_bytes(), (bundle / "policy.json").stat().st_mtime_ns
    said.clear()
    assert dep.bundle_from(str(run), allow_losing=True, echo=said.append) == bundle
    newest = sorted((run / "checkpoints").glob("iter-*"))[-1].name
    assert f"deploy: {bundle} was exported from {newest}; using it as it is" in said
    after = (bundle / "policy.json").read_bytes(), (bundle / "policy.json").stat().st_mtime_ns
    assert after == before, "the run's bundle is left as it was"
    said.clear()
    export_bundle(run, allow_losing=True, echo=said.append)
    assert any(
        line.startswith(f"export: replaced the bundle {bundle} (exported from ") for line in said
    )
