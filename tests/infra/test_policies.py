"""Secure and cost-safe defaults hold for the default stack; each policy catches its breach."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest

from infra.components import ACR_PULL, STORAGE_BLOB_DATA_CONTRIBUTOR, STORAGE_BLOB_DATA_READER
from infra.config import InfraConfigError, load_values
from infra.policies import POLICIES, check
from tests.infra.conftest import BASE, SUBSCRIPTION, run_stack


def test_the_default_stack_breaks_no_policy(default_stack):
    violations = check(default_stack.resources)
    assert violations == [], "\n".join(map(str, violations))


def test_every_resource_kind_is_declared(default_stack):
    kinds = {
        r.typ.removeprefix("azure-native:")
        for r in default_stack.resources
        if r.typ.startswith("azure-native:")
    }
    assert kinds == {
        "resources:ResourceGroup", "storage:StorageAccount", "storage:BlobContainer", "keyvault:Vault",
        "operationalinsights:Workspace", "applicationinsights:Component", "containerregistry:Registry",
        "machinelearningservices:Workspace", "machinelearningservices:Compute",
        "machinelearningservices:Datastore", "authorization:RoleAssignment", "consumption:Budget",
        "managedidentity:UserAssignedIdentity",
    } - {"consumption:Budget"}  # fmt: skip
    components = {r.typ for r in default_stack.resources if r.typ.startswith("aml-rl:")}
    assert components == {
        f"aml-rl:infra:{c}"
        for c in (
            "Foundation",
            "Workspace",
            "ComputeCluster",
            "Datastore",
            "Access",
            "EndpointIdentity",
        )
    }


def breach(stack, typ, name, path, value):
    """A copy of the stack's resources with one input changed, as a careless edit would."""
    resources = copy.deepcopy(stack.resources)
    target = next(r for r in resources if r.typ == f"azure-native:{typ}" and r.name == name)
    node = target.inputs
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return resources, target.urn


# Settings a team might edit by hand in the program: each must be caught.
EDITS = [
    (
        "storage accepts HTTPS only",
        "storage:StorageAccount",
        "storage",
        "enableHttpsTrafficOnly",
        False,
    ),
    (
        "storage requires TLS 1.2",
        "storage:StorageAccount",
        "storage",
        "minimumTlsVersion",
        "TLS1_0",
    ),
    (
        "storage blocks public blob access",
        "storage:StorageAccount",
        "storage",
        "allowBlobPublicAccess",
        True,
    ),
    (
        "storage blocks public blob access",
        "storage:BlobContainer",
        "outputs",
        "publicAccess",
        "Blob",
    ),
    (
        "key vault uses RBAC, soft delete and purge protection",
        "keyvault:Vault",
        "vault",
        "properties.enableRbacAuthorization",
        False,
    ),
    (
        "key vault uses RBAC, soft delete and purge protection",
        "keyvault:Vault",
        "vault",
        "properties.enablePurgeProtection",
        False,
    ),
    (
        "key vault uses RBAC, soft delete and purge protection",
        "keyvault:Vault",
        "vault",
        "properties.enableSoftDelete",
        False,
    ),
    (
        "registry has no admin user",
        "containerregistry:Registry",
        "registry",
        "anonymousPullEnabled",
        True,
    ),
    (
        "registry has no admin user",
        "containerregistry:Registry",
        "registry",
        "adminUserEnabled",
        True,
    ),
    (
        "clusters scale to zero",
        "machinelearningservices:Compute",
        "compute",
        "properties.properties.scaleSettings.nodeIdleTimeBeforeScaleDown",
        "PT2H",
    ),
    (
        "clusters use identities, not local auth",
        "machinelearningservices:Compute",
        "compute",
        "properties.disableLocalAuth",
        False,
    ),
    (
        "clusters use identities, not local auth",
        "machinelearningservices:Workspace",
        "workspace",
        "identity.type",
        "None",
    ),
    (
        "datastore holds no keys or SAS",
        "machinelearningservices:Datastore",
        "datastore",
        "properties.credentials.credentialsType",
        "AccountKey",
    ),
    (
        "clusters get AcrPull from Azure ML, once",
        "machinelearningservices:Workspace",
        "workspace",
        "containerRegistry",
        None,
    ),
    (
        "every taggable resource has project, stack and owner tags",
        "keyvault:Vault",
        "vault",
        "tags",
        {"project": "aml-rl"},
    ),
]


@pytest.mark.parametrize(
    ("name", "typ", "resource", "path", "value"), EDITS, ids=[f"{e[0]}:{e[3]}" for e in EDITS]
)
def test_each_policy_catches_an_edit_that_breaks_it(
    default_stack, name, typ, resource, path, value
):
    resources, urn = breach(default_stack, typ, resource, path, value)
    found = POLICIES[name](resources)
    assert found, f"{name} did not notice {path} = {value!r}"
    assert all(v.urn == urn for v in found)
    assert urn in str(found[0]) and name in str(found[0])


# Stack settings that break a policy: the program follows them, the policy flags them.
CONFIGS = [
    ("cluster nodes have no SSH", {"allowSsh": "true", "sshPublicKey": "ssh-ed25519 AAAA test"}),
    ("cluster nodes have no public IP", {"nodePublicIp": "true"}),
    ("storage refuses shared keys", {"sharedKeyAccess": "true"}),
    ("clusters scale to zero", {"cpuMinNodes": "1"}),
]


@pytest.mark.parametrize(("name", "settings"), CONFIGS, ids=[c[0] for c in CONFIGS])
def test_each_policy_catches_a_stack_config_that_breaks_it(name, settings):
    stack = run_stack(settings)
    found = POLICIES[name](stack.resources)
    assert found, f"{name} did not notice {settings}"
    assert all(v.urn.startswith("urn:pulumi:dev::aml-rl::azure-native:") for v in found)
    assert {v.policy for v in check(stack.resources)} == {name}, "only the broken policy fires"


def test_every_policy_has_a_negative_test():
    tested_below = {
        "roles are least privilege",
        "endpoints can pull the serving image",
        "clusters get AcrPull from Azure ML, once",
        "clusters reach the workspace's storage",
    }
    assert {e[0] for e in EDITS} | {c[0] for c in CONFIGS} | tested_below == set(POLICIES)


def grants_of(stack, principal):
    return {
        (r.inputs["roleDefinitionId"].rsplit("/", 1)[-1], r.inputs["scope"])
        for r in stack.of_type("authorization:RoleAssignment")
        if r.inputs["principalId"] == principal
    }


def test_clusters_get_the_outputs_and_default_datastore_containers_and_nothing_else(
    default_stack,
):
    account = default_stack.one("storage:StorageAccount").outputs["id"]
    workspace_id = default_stack.one("machinelearningservices:Workspace").outputs["workspaceId"]
    containers = f"{account}/blobServices/default/containers"
    outputs, blobstore = f"{containers}/outputs", f"{containers}/azureml-blobstore-{workspace_id}"
    for r in default_stack.of_type("authorization:RoleAssignment"):
        assert r.inputs["roleDefinitionId"].startswith(
            f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/"
        )
        assert r.inputs["principalType"] == "ServicePrincipal"
    # the two clusters share the mock principal name "compute": the job's code, logs and
    # MLflow artifacts in the default datastore, the run directory in outputs
    assert grants_of(default_stack, "compute-principal") == {
        (STORAGE_BLOB_DATA_CONTRIBUTOR, outputs),
        (STORAGE_BLOB_DATA_CONTRIBUTOR, blobstore),
    }
    assert grants_of(default_stack, "workspace-principal") == {
        (STORAGE_BLOB_DATA_CONTRIBUTOR, outputs)
    }
    # 2 clusters x 2, the workspace's 1, and the endpoints' 2
    assert len(default_stack.of_type("authorization:RoleAssignment")) == 4 + 1 + 2


@pytest.mark.parametrize(("grant", "what"), [("code", "default datastore"), ("outputs", "outputs")])
def test_a_cluster_that_cannot_reach_the_workspaces_storage_is_caught(default_stack, grant, what):
    """Shared keys off, identity datastores: without these the first job cannot read its own
    code snapshot or write its run directory. (The mock gives both clusters one principal:
    both lose the grant.)"""
    resources = default_stack.resources
    for kind in ("cpu", "gpu"):
        stack = SimpleNamespace(resources=resources)
        resources, _ = breach(
            stack, "authorization:RoleAssignment", f"{kind}-cluster-{grant}-rw", "principalId",
            "someone-else",
        )  # fmt: skip
    found = POLICIES["clusters reach the workspace's storage"](resources)
    assert [v.detail for v in found] == [
        f"no Storage Blob Data Contributor on the {what} container"
    ] * 2
    assert POLICIES["clusters reach the workspace's storage"](default_stack.resources) == []


def test_a_cluster_given_acr_pull_by_the_program_is_caught(default_stack):
    """The assignment the program used to make: Azure ML has made it already, and Azure
    refuses the duplicate with RoleAssignmentExists."""
    resources = copy.deepcopy(default_stack.resources)
    grant = next(r for r in resources if r.name == "cpu-cluster-outputs-rw")
    registry = default_stack.one("containerregistry:Registry").outputs["id"]
    grant.inputs["roleDefinitionId"] = grant.inputs["roleDefinitionId"].rsplit("/", 1)[0] + (
        f"/{ACR_PULL}"
    )
    grant.inputs["scope"] = registry
    assert POLICIES["roles are least privilege"](resources) == []  # AcrPull there is allowed
    found = POLICIES["clusters get AcrPull from Azure ML, once"](resources)
    assert [v.urn for v in found] == [grant.urn]
    assert "RoleAssignmentExists" in str(found[0])


def test_the_endpoint_identity_pulls_images_and_reads_the_default_datastore_only(default_stack):
    registry = default_stack.one("containerregistry:Registry").outputs["id"]
    account = default_stack.one("storage:StorageAccount").outputs["id"]
    workspace_id = default_stack.one("machinelearningservices:Workspace").outputs["workspaceId"]
    identity = default_stack.one("managedidentity:UserAssignedIdentity")
    assert identity.inputs["resourceName"] == "id-mlw-amlrl-dev-endpoints"
    assert grants_of(default_stack, identity.outputs["principalId"]) == {
        (ACR_PULL, registry),
        (
            STORAGE_BLOB_DATA_READER,
            f"{account}/blobServices/default/containers/azureml-blobstore-{workspace_id}",
        ),
    }  # no write anywhere, no outputs container


@pytest.mark.parametrize(
    ("assignment", "detail"),
    [
        ("endpoint-acr-pull", "no AcrPull on the workspace registry for this identity"),
        ("endpoint-blobstore-read", "no Storage Blob Data Reader on the workspace's default"),
    ],
)
def test_an_endpoint_identity_without_its_grants_is_caught(default_stack, assignment, detail):
    resources, _ = breach(
        default_stack, "authorization:RoleAssignment", assignment, "principalId", "someone-else"
    )
    (found,) = POLICIES["endpoints can pull the serving image"](resources)
    assert found.urn == default_stack.one("managedidentity:UserAssignedIdentity").urn
    assert detail in found.detail


def test_a_role_granted_on_the_whole_storage_account_is_too_broad(default_stack):
    resources, urn = breach(
        default_stack,
        "authorization:RoleAssignment",
        "cpu-cluster-outputs-rw",
        "scope",
        default_stack.one("storage:StorageAccount").outputs["id"],
    )
    (found,) = POLICIES["roles are least privilege"](resources)
    assert found.urn == urn and "broader than" in found.detail
    resources, urn = breach(
        default_stack,
        "authorization:RoleAssignment",
        "endpoint-blobstore-read",
        "scope",
        default_stack.one("storage:StorageAccount").outputs["id"],
    )
    (found,) = POLICIES["roles are least privilege"](resources)
    assert found.urn == urn and f"role {STORAGE_BLOB_DATA_READER} is granted on" in found.detail
    resources, urn = breach(
        default_stack,
        "authorization:RoleAssignment",
        "endpoint-acr-pull",
        "roleDefinitionId",
        f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/b24988ac-6180-42a0-ab88-20f7382dd24c",
    )
    (found,) = POLICIES["roles are least privilege"](resources)
    assert (
        "b24988ac-6180-42a0-ab88-20f7382dd24c is not AcrPull, Storage Blob Data Contributor, "
        "Storage Blob Data Reader" in found.detail
    )


TEAM = "11111111-2222-3333-4444-555555555555"
PIPELINE = "66666666-7777-8888-9999-000000000000"


def test_data_principals_can_upload_code_and_download_runs_and_nothing_more():
    """With shared keys off, azure-ai-ml uploads code and downloads outputs as the caller."""
    stack = run_stack({"dataPrincipals": f"{TEAM}, {PIPELINE}:ServicePrincipal"})
    account = stack.one("storage:StorageAccount").outputs["id"]
    workspace_id = stack.one("machinelearningservices:Workspace").outputs["workspaceId"]
    containers = f"{account}/blobServices/default/containers/"
    expected = {
        (STORAGE_BLOB_DATA_CONTRIBUTOR, f"{containers}azureml-blobstore-{workspace_id}"),
        (STORAGE_BLOB_DATA_CONTRIBUTOR, f"{containers}outputs"),
    }
    assert grants_of(stack, TEAM) == expected and grants_of(stack, PIPELINE) == expected
    kinds = {
        r.inputs["principalId"]: r.inputs["principalType"]
        for r in stack.of_type("authorization:RoleAssignment")
    }
    assert kinds[TEAM] == "User" and kinds[PIPELINE] == "ServicePrincipal"
    assert check(stack.resources) == [], "least privilege holds with them"


def test_no_data_principals_means_no_grants_to_people():
    principals = {
        r.inputs["principalId"] for r in run_stack().of_type("authorization:RoleAssignment")
    }
    assert TEAM not in principals and all(p.endswith("-principal") for p in principals)


@pytest.mark.parametrize(
    ("value", "bad"),
    [("alice@example.com", "alice@example.com"), (f"{TEAM}:Robot", f"{TEAM}:Robot")],
)
def test_a_data_principal_that_is_not_an_object_id_is_named(value, bad):
    with pytest.raises(
        InfraConfigError,
        match=rf"aml-rl:dataPrincipals: '{bad}' is not OBJECT-ID\[:User\|Group\|ServicePrincipal\]; find an object id with `az ad signed-in-user show",
    ):
        load_values({**BASE, "dataPrincipals": value}, "dev")
