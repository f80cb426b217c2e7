"""Names, settings, outputs contract, budget: the program under mocks, and its config."""

from __future__ import annotations

import json
import re

import pulumi
import pytest

from infra.config import KEYS, InfraConfigError, load, load_values, name_suffix
from infra.outputs import InfraOutputs, OutputsError, read_outputs
from tests.conftest import ROOT
from tests.infra.conftest import BASE, SUBSCRIPTION, RecordingMocks, run_stack


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        (
            "storageAccountName",
            "My_Storage",
            "valid storage account name: Azure requires 3-24 lowercase letters and digits",
        ),
        ("storageAccountName", "ab", "3-24 lowercase letters and digits"),
        (
            "keyVaultName",
            "1vault",
            "valid key vault name: Azure requires 3-24 letters, digits and hyphens, starting with a letter",
        ),
        ("keyVaultName", "kv--double", "not ending with or doubling a hyphen"),
        (
            "registryName",
            "acr-1",
            "valid container registry name: Azure requires 5-50 letters and digits",
        ),
        ("workspaceName", "w" * 34, "valid workspace name: Azure requires 3-33 letters"),
        (
            "cpuClusterName",
            "cpu-cluster-much-too-long",
            "valid compute name: Azure requires 2-16 letters, digits and hyphens",
        ),
        ("gpuClusterName", "-gpu", "valid compute name"),
        ("resourceGroupName", "rg.", "not ending with a period"),
    ],
)
def test_names_that_break_azures_rules_fail_before_any_resource(key, value, rule):
    with pytest.raises(
        InfraConfigError,
        match=rf"aml-rl:{key} = '{value}' is not a .*{rule}.*pulumi config set aml-rl:{key}",
    ):
        load_values({**BASE, key: value}, "dev")


def test_a_config_error_reaches_pulumi_up_as_a_message_not_a_traceback():
    """Pulumi's Python host prints a pulumi.RunError as its message; any other exception
    (a ValueError) with the program's traceback."""
    with pytest.raises(pulumi.RunError, match=r"aml-rl:prefix = 'My-Team'"):
        load_values({**BASE, "prefix": "My-Team"}, "dev")


def test_a_prefix_that_would_make_invalid_names_is_refused():
    with pytest.raises(
        InfraConfigError,
        match=r"aml-rl:prefix = 'My-Team' must be 2-12 lowercase letters and digits",
    ):
        load_values({**BASE, "prefix": "My-Team"}, "dev")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"owner": ""},
            r"aml-rl:owner is required; set it with `pulumi config set aml-rl:owner <value>`",
        ),
        ({"idleMinutes": "45"}, r"aml-rl:idleMinutes = 45 is outside 1-30"),
        ({"cpuMaxNodes": "many"}, r"aml-rl:cpuMaxNodes = 'many' is not a whole number"),
        ({"cpuMinNodes": "5", "cpuMaxNodes": "4"}, r"aml-rl:cpuMinNodes = 5 is outside 0-4"),
        ({"gpuPriority": "Spot"}, r"aml-rl:gpuPriority = 'Spot' must be Dedicated or LowPriority"),
        ({"allowSsh": "true"}, r"aml-rl:sshPublicKey is required"),
        ({"allowSsh": "yes"}, r"aml-rl:allowSsh = 'yes' must be true or false"),
        ({"budgetAmount": "100"}, r"aml-rl:budgetEmails is required with budgetAmount"),
        (
            {"budgetAmount": "100", "budgetEmails": "a@b.c, nope"},
            r"aml-rl:budgetEmails: nope not e-mail address",
        ),
        ({"keyVaultRetentionDays": "3"}, r"aml-rl:keyVaultRetentionDays = 3 is outside 7-90"),
        ({"cpuMaxNodes": "2.5"}, r"aml-rl:cpuMaxNodes = '2\.5' is not a whole number"),
        ({"idleMinutes": "nan"}, r"aml-rl:idleMinutes = 'nan' is not a whole number"),
        (
            {"budgetAmount": "nan", "budgetEmails": "a@b.c"},
            r"aml-rl:budgetAmount = 'nan' must be a positive amount",
        ),
        (
            {"budgetAmount": "inf", "budgetEmails": "a@b.c"},
            r"aml-rl:budgetAmount = 'inf' must be a positive amount",
        ),
        (
            {"location": "West Europe"},
            r"aml-rl:location = 'West Europe' is not an Azure region name .*did you mean westeurope\?",
        ),
        ({"location": "westeurop"}, r"aml-rl:location = 'westeurop' .*did you mean westeurope"),
        ({"location": "mars"}, r"aml-rl:location = 'mars' is not an Azure region name \(lowercase"),
    ],
)
def test_bad_settings_name_the_key(settings, message):
    with pytest.raises(InfraConfigError, match=message):
        load_values({**BASE, **settings}, "dev")


def test_default_names_follow_the_rules_for_a_long_stack_name():
    cfg = load_values(BASE, "production-westeurope")
    assert cfg.storage_account_name == "amlrlproducti" + "st"
    assert len(cfg.key_vault_name) <= 24 and len(cfg.workspace_name) <= 33


def test_outputs_contract(default_stack):
    outputs = InfraOutputs.model_validate(default_stack.outputs)
    assert outputs.subscription_id == SUBSCRIPTION
    assert outputs.resource_group == "rg-amlrl-dev"
    assert outputs.workspace_name == "mlw-amlrl-dev"
    assert (outputs.cpu_cluster, outputs.gpu_cluster) == ("cpu-cluster", "gpu-cluster")
    assert (outputs.cpu_vm_size, outputs.gpu_vm_size) == ("Standard_D4s_v3", "Standard_NC4as_T4_v3")
    assert outputs.datastore == "outputs"
    suffix = name_suffix(SUBSCRIPTION, "dev")
    assert outputs.registry_login_server == f"amlrldev{suffix}acr.azurecr.io"
    assert outputs.storage_account == f"amlrldev{suffix}st"
    assert outputs.mlflow_tracking_uri.startswith(
        "azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/"
    )
    assert (
        outputs.endpoint_identity
        == (default_stack.one("managedidentity:UserAssignedIdentity").outputs["id"])
    )
    assert outputs.endpoint_identity.endswith("/id-mlw-amlrl-dev-endpoints")


def test_every_taggable_resource_carries_the_stack_tags(default_stack):
    tagged = [r for r in default_stack.resources if "tags" in r.inputs]
    # rg, storage, vault, logs, insights, registry, workspace, 2 clusters, endpoint identity
    assert len(tagged) == 10
    for r in tagged:
        assert r.inputs["tags"] == {
            "project": "aml-rl",
            "stack": "dev",
            "owner": "rl-team@example.com",
        }, r.urn


def test_clusters_scale_to_zero_without_ssh_or_public_ips(default_stack):
    for name, vm, top, priority in (
        ("cpu-cluster", "Standard_D4s_v3", 4, "Dedicated"),
        ("gpu-cluster", "Standard_NC4as_T4_v3", 2, "LowPriority"),
    ):
        (cluster,) = [
            r
            for r in default_stack.of_type("machinelearningservices:Compute")
            if r.inputs["computeName"] == name
        ]
        props = cluster.inputs["properties"]["properties"]
        assert props["vmSize"] == vm and props["vmPriority"] == priority
        assert props["scaleSettings"] == {
            "minNodeCount": 0,
            "maxNodeCount": top,
            "nodeIdleTimeBeforeScaleDown": "PT15M",
        }
        assert (
            props["enableNodePublicIp"] is False
            and props["remoteLoginPortPublicAccess"] == "Disabled"
        )
        assert "userAccountCredentials" not in props


def test_gpu_cluster_can_be_left_out():
    stack = run_stack({"gpuCluster": "false"})
    assert [r.inputs["computeName"] for r in stack.of_type("machinelearningservices:Compute")] == [
        "cpu-cluster"
    ]
    assert stack.outputs["gpu_cluster"] == ""
    # the cpu cluster's two, the workspace's one, and the endpoints' two
    assert len(stack.of_type("authorization:RoleAssignment")) == 2 + 1 + 2


def test_budget_alerts_the_configured_addresses():
    stack = run_stack({"budgetAmount": "250", "budgetEmails": "a@example.com,b@example.com"})
    budget = stack.one("consumption:Budget")
    assert budget.inputs["amount"] == 250 and budget.inputs["timeGrain"] == "Monthly"
    assert budget.inputs["scope"] == f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-amlrl-dev"
    for notification in budget.inputs["notifications"].values():
        assert notification["contactEmails"] == ["a@example.com", "b@example.com"]
    assert {n["threshold"] for n in budget.inputs["notifications"].values()} == {80, 100}


def test_outputs_read_back_from_a_saved_file(tmp_path, default_stack):
    saved = tmp_path / "outputs.json"
    saved.write_text(json.dumps(default_stack.outputs))
    assert read_outputs(saved) == InfraOutputs.model_validate(default_stack.outputs)


def test_broken_saved_outputs_say_what_is_missing(tmp_path):
    saved = tmp_path / "outputs.json"
    saved.write_text('{"subscription_id": "x"}')
    with pytest.raises(
        OutputsError,
        match=r"outputs\.json: missing or invalid stack output\(s\): resource_group, location, workspace_name",
    ):
        read_outputs(saved)
    saved.write_text("not json")
    with pytest.raises(
        OutputsError, match=r"outputs\.json: not JSON .*pulumi stack output --json > FILE"
    ):
        read_outputs(saved)


def test_the_readmes_stack_settings_are_the_keys_the_program_reads():
    readme = (ROOT / "README.md").read_text()
    settings = re.findall(r"pulumi config set ([\w-]+):(\w+)", readme)
    assert settings, "the README shows no stack settings"
    for namespace, key in settings:
        assert namespace == "aml-rl" and key in KEYS, f"README sets {namespace}:{key}"


@pytest.mark.parametrize(
    ("settings", "location"),
    [
        ({"azure-native:location": "swedencentral"}, "swedencentral"),
        ({"azure-native:location": "swedencentral", "aml-rl:location": "uksouth"}, "uksouth"),
        ({}, "westeurope"),
    ],
)
def test_the_location_is_the_projects_else_the_providers_else_westeurope(settings, location):
    pulumi.runtime.set_mocks(RecordingMocks("dev"), project="aml-rl", stack="dev", preview=False)
    pulumi.runtime.set_all_config({"aml-rl:owner": "rl-team@example.com", **settings})
    try:
        assert load("dev").location == location
    finally:
        pulumi.runtime.set_all_config({})


def test_the_managed_network_is_provisioned_by_pulumi_up_not_by_the_first_job(default_stack):
    workspace = default_stack.one("machinelearningservices:Workspace")
    assert workspace.inputs["provisionNetworkNow"] is True
    assert workspace.inputs["managedNetwork"]["isolationMode"] == "AllowInternetOutbound"


def test_global_names_differ_between_subscriptions_and_stacks_and_stay_put():
    """Storage, registry and key vault names are global DNS names: a template's defaults
    must not collide between its users, and must not change between two `pulumi up`."""

    def names(subscription: str, stack: str) -> tuple[str, str, str]:
        cfg = load_values(BASE, stack, subscription)
        return cfg.storage_account_name, cfg.registry_name, cfg.key_vault_name

    mine, theirs = names(SUBSCRIPTION, "dev"), names("ffffffff-1111-2222-3333-444444444444", "dev")
    assert all(a != b for a, b in zip(mine, theirs, strict=True))
    assert names(SUBSCRIPTION, "dev") == mine
    assert all(a != b for a, b in zip(mine, names(SUBSCRIPTION, "prod"), strict=True))
    long = load_values(BASE, "production-westeurope", SUBSCRIPTION)
    assert len(long.storage_account_name) <= 24 and len(long.key_vault_name) <= 24
    assert (
        load_values({**BASE, "registryName": "myacr01"}, "dev", SUBSCRIPTION).registry_name
        == "myacr01"
    )


def test_the_datastore_states_its_protocol_and_endpoint(default_stack):
    """Left out, the service answers null for both, and clients built a None:// URL."""
    properties = default_stack.one("machinelearningservices:Datastore").inputs["properties"]
    assert (properties["protocol"], properties["endpoint"]) == ("https", "core.windows.net")


# The provider namespace of each pulumi-azure-native module the program uses.
NAMESPACES = {
    "applicationinsights": "Microsoft.Insights", "authorization": "Microsoft.Authorization",
    "consumption": "Microsoft.Consumption", "containerregistry": "Microsoft.ContainerRegistry",
    "keyvault": "Microsoft.KeyVault", "machinelearningservices": "Microsoft.MachineLearningServices",
    "managedidentity": "Microsoft.ManagedIdentity", "operationalinsights": "Microsoft.OperationalInsights",
    "resources": "Microsoft.Resources", "storage": "Microsoft.Storage",
}  # fmt: skip


def test_the_readme_lists_every_resource_provider_the_program_needs():
    """A fresh subscription without one fails the first `pulumi up` part-way through."""
    stack = run_stack({"budgetAmount": "100", "budgetEmails": "team@example.com"})
    modules = {r.typ.split(":")[1] for r in stack.resources if r.typ.startswith("azure-native:")}
    assert modules <= set(NAMESPACES), f"map {sorted(modules - set(NAMESPACES))} to a provider"
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("**Resource providers.**") : readme.index("Every setting, its")]
    needed = {NAMESPACES[m] for m in modules} | {"Microsoft.Network"}  # the managed network
    missing = [ns for ns in sorted(needed) if f"`{ns}`" not in section]
    assert not missing, f"README's resource providers lack {missing}"
