"""Secure and cost-safe defaults as policies over a stack's resource inputs.

Each policy takes the captured resources (type, name, URN, inputs as the Azure provider
receives them: camelCase) and returns violations that name the URN. The test suite runs
the whole program under Pulumi's mocks and asserts there are none; each policy also has a
negative test, so none can pass vacuously.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from infra.components import ACR_PULL, STORAGE_BLOB_DATA_CONTRIBUTOR, STORAGE_BLOB_DATA_READER

MAX_IDLE_MINUTES = 30
TAG_KEYS = ("project", "stack", "owner")
UNTAGGABLE = {
    "azure-native:storage:BlobContainer",
    "azure-native:machinelearningservices:Datastore",
    "azure-native:authorization:RoleAssignment",
    "azure-native:consumption:Budget",
}


@dataclass
class Resource:
    typ: str
    name: str
    urn: str
    inputs: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Violation:
    policy: str
    urn: str
    detail: str

    def __str__(self) -> str:
        return f"{self.policy}: {self.urn}: {self.detail}"


Policy = Callable[[list[Resource]], list[Violation]]
POLICIES: dict[str, Policy] = {}


def policy(name: str) -> Callable[[Policy], Policy]:
    def register(fn: Policy) -> Policy:
        POLICIES[name] = fn
        return fn

    return register


def of_type(resources: Iterable[Resource], typ: str) -> list[Resource]:
    return [r for r in resources if r.typ == f"azure-native:{typ}"]


def _get(data: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _expect(
    name: str, resources: list[Resource], typ: str, path: str, wanted: Any, why: str
) -> list[Violation]:
    return [
        Violation(name, r.urn, f"{path} is {_get(r.inputs, path)!r}, must be {wanted!r}: {why}")
        for r in of_type(resources, typ)
        if _get(r.inputs, path) != wanted
    ]


@policy("storage accepts HTTPS only")
def storage_https(resources: list[Resource]) -> list[Violation]:
    return _expect(
        "storage accepts HTTPS only",
        resources,
        "storage:StorageAccount",
        "enableHttpsTrafficOnly",
        True,
        "no plain HTTP",
    )


@policy("storage requires TLS 1.2")
def storage_tls(resources: list[Resource]) -> list[Violation]:
    return _expect(
        "storage requires TLS 1.2",
        resources,
        "storage:StorageAccount",
        "minimumTlsVersion",
        "TLS1_2",
        "older TLS is broken",
    )


@policy("storage blocks public blob access")
def storage_public_blobs(resources: list[Resource]) -> list[Violation]:
    name = "storage blocks public blob access"
    found = _expect(
        name,
        resources,
        "storage:StorageAccount",
        "allowBlobPublicAccess",
        False,
        "no anonymous reads",
    )
    return found + _expect(
        name, resources, "storage:BlobContainer", "publicAccess", "None", "no anonymous reads"
    )


@policy("storage refuses shared keys")
def storage_shared_keys(resources: list[Resource]) -> list[Violation]:
    return _expect(
        "storage refuses shared keys",
        resources,
        "storage:StorageAccount",
        "allowSharedKeyAccess",
        False,
        "identities only, nothing to leak",
    )


@policy("key vault uses RBAC, soft delete and purge protection")
def key_vault(resources: list[Resource]) -> list[Violation]:
    name = "key vault uses RBAC, soft delete and purge protection"
    return [
        v
        for path in (
            "properties.enableRbacAuthorization",
            "properties.enableSoftDelete",
            "properties.enablePurgeProtection",
        )
        for v in _expect(
            name,
            resources,
            "keyvault:Vault",
            path,
            True,
            "secrets are neither shared by access policy nor lost",
        )
    ]


@policy("registry has no admin user")
def registry_admin(resources: list[Resource]) -> list[Violation]:
    name = "registry has no admin user"
    found = _expect(
        name,
        resources,
        "containerregistry:Registry",
        "adminUserEnabled",
        False,
        "no shared password",
    )
    return found + _expect(
        name,
        resources,
        "containerregistry:Registry",
        "anonymousPullEnabled",
        False,
        "images are private",
    )


def _compute(resources: list[Resource]) -> list[Resource]:
    return of_type(resources, "machinelearningservices:Compute")


@policy("clusters scale to zero")
def clusters_scale_to_zero(resources: list[Resource]) -> list[Violation]:
    out = []
    for r in _compute(resources):
        scale = _get(r.inputs, "properties.properties.scaleSettings") or {}
        if scale.get("minNodeCount") != 0:
            out.append(
                Violation(
                    "clusters scale to zero",
                    r.urn,
                    f"minNodeCount is {scale.get('minNodeCount')!r}, must be 0: "
                    "idle nodes are billed",
                )
            )
        idle = str(scale.get("nodeIdleTimeBeforeScaleDown", ""))
        minutes = (
            int(idle[2:-1])
            if idle.startswith("PT") and idle.endswith("M") and idle[2:-1].isdigit()
            else None
        )
        if minutes is None or minutes > MAX_IDLE_MINUTES:
            out.append(
                Violation(
                    "clusters scale to zero",
                    r.urn,
                    f"nodeIdleTimeBeforeScaleDown is {idle!r}, "
                    f"must be at most PT{MAX_IDLE_MINUTES}M",
                )
            )
    return out


@policy("cluster nodes have no SSH")
def clusters_no_ssh(resources: list[Resource]) -> list[Violation]:
    return _expect(
        "cluster nodes have no SSH",
        _compute(resources),
        "machinelearningservices:Compute",
        "properties.properties.remoteLoginPortPublicAccess",
        "Disabled",
        "no open port 22",
    )


@policy("cluster nodes have no public IP")
def clusters_no_public_ip(resources: list[Resource]) -> list[Violation]:
    return _expect(
        "cluster nodes have no public IP",
        resources,
        "machinelearningservices:Compute",
        "properties.properties.enableNodePublicIp",
        False,
        "nodes are not reachable from the internet",
    )


@policy("clusters use identities, not local auth")
def clusters_identity(resources: list[Resource]) -> list[Violation]:
    name = "clusters use identities, not local auth"
    found = _expect(
        name,
        resources,
        "machinelearningservices:Compute",
        "properties.disableLocalAuth",
        True,
        "no keys on nodes",
    )
    found += _expect(
        name,
        resources,
        "machinelearningservices:Compute",
        "identity.type",
        "SystemAssigned",
        "roles are granted to it",
    )
    return found + _expect(
        name,
        resources,
        "machinelearningservices:Workspace",
        "identity.type",
        "SystemAssigned",
        "roles are granted to it",
    )


@policy("datastore holds no keys or SAS")
def datastore_identity(resources: list[Resource]) -> list[Violation]:
    return _expect(
        "datastore holds no keys or SAS",
        resources,
        "machinelearningservices:Datastore",
        "properties.credentials.credentialsType",
        "None",
        "access goes through identities",
    )


@policy("every taggable resource has project, stack and owner tags")
def tags(resources: list[Resource]) -> list[Violation]:
    out = []
    for r in resources:
        if r.typ.startswith("azure-native:") and r.typ not in UNTAGGABLE:
            missing = [k for k in TAG_KEYS if not (r.inputs.get("tags") or {}).get(k)]
            if missing:
                out.append(
                    Violation(
                        "every taggable resource has project, stack and owner tags",
                        r.urn,
                        f"missing tag(s) {', '.join(missing)}",
                    )
                )
    return out


ROLE_NAMES = {
    ACR_PULL: "AcrPull",
    STORAGE_BLOB_DATA_CONTRIBUTOR: "Storage Blob Data Contributor",
    STORAGE_BLOB_DATA_READER: "Storage Blob Data Reader",
}


def _containers(resources: list[Resource], names: Iterable[str]) -> set[str]:
    return {
        f"{a.outputs.get('id')}/blobServices/default/containers/{name}"
        for a in of_type(resources, "storage:StorageAccount")
        for name in names
    }


def _role(assignment: Resource) -> str:
    return str(assignment.inputs.get("roleDefinitionId", "")).rsplit("/", 1)[-1]


@policy("roles are least privilege")
def least_privilege(resources: list[Resource]) -> list[Violation]:
    """AcrPull on the registry, Blob Data Contributor on the outputs container, Blob Data
    Reader on the workspace's default datastore container: nothing else, nowhere broader."""
    registries = {r.outputs.get("id") for r in of_type(resources, "containerregistry:Registry")}
    outputs = [c.inputs.get("containerName") for c in of_type(resources, "storage:BlobContainer")]
    blobstores = [
        f"azureml-blobstore-{w.outputs.get('workspaceId')}"
        for w in of_type(resources, "machinelearningservices:Workspace")
    ]
    allowed = {
        ACR_PULL: registries,
        # the outputs container; the default datastore's for code upload (data principals)
        STORAGE_BLOB_DATA_CONTRIBUTOR: _containers(resources, [*outputs, *blobstores]),
        STORAGE_BLOB_DATA_READER: _containers(resources, blobstores),
    }
    out = []
    for r in of_type(resources, "authorization:RoleAssignment"):
        role, scope = _role(r), r.inputs.get("scope")
        if role not in allowed:
            out.append(
                Violation(
                    "roles are least privilege",
                    r.urn,
                    f"role {role} is not {', '.join(ROLE_NAMES.values())}",
                )
            )
        elif scope not in allowed[role]:
            out.append(
                Violation(
                    "roles are least privilege",
                    r.urn,
                    f"role {role} is granted on {scope}, broader than {sorted(allowed[role])}",
                )
            )
    return out


@policy("endpoints can pull the serving image")
def endpoint_identity(resources: list[Resource]) -> list[Violation]:
    """Azure ML grants a user-assigned endpoint identity nothing: without AcrPull on the
    registry and read on the default datastore, every deployment fails to start."""
    registries = {r.outputs.get("id") for r in of_type(resources, "containerregistry:Registry")}
    out = []
    for identity in of_type(resources, "managedidentity:UserAssignedIdentity"):
        grants = {
            (_role(a), a.inputs.get("scope"))
            for a in of_type(resources, "authorization:RoleAssignment")
            if a.inputs.get("principalId") == identity.outputs.get("principalId")
        }
        if not any(role == ACR_PULL and scope in registries for role, scope in grants):
            out.append(
                Violation(
                    "endpoints can pull the serving image",
                    identity.urn,
                    "no AcrPull on the workspace registry for this identity",
                )
            )
        if not any(role == STORAGE_BLOB_DATA_READER for role, _ in grants):
            out.append(
                Violation(
                    "endpoints can pull the serving image",
                    identity.urn,
                    "no Storage Blob Data Reader on the workspace's default datastore",
                )
            )
    return out


@policy("clusters get AcrPull from Azure ML, once")
def cluster_acr_pull(resources: list[Resource]) -> list[Violation]:
    """Azure ML grants a cluster's system-assigned identity AcrPull on the workspace registry
    when the cluster is created after the workspace and its registry; if it is not, "you have
    to assign the ACRPull role manually" (how-to-identity-based-service-authentication). So:
    every workspace names its registry, and no cluster identity gets AcrPull from this
    program, which Azure would refuse as RoleAssignmentExists on the first `pulumi up`."""
    name = "clusters get AcrPull from Azure ML, once"
    registries = {r.outputs.get("id") for r in of_type(resources, "containerregistry:Registry")}
    out = [
        Violation(name, w.urn, "the workspace names no registry of this stack (containerRegistry)")
        for w in of_type(resources, "machinelearningservices:Workspace")
        if w.inputs.get("containerRegistry") not in registries
    ]
    clusters = {_get(c.outputs, "identity.principalId") for c in _compute(resources)} - {None}
    for a in of_type(resources, "authorization:RoleAssignment"):
        if _role(a) == ACR_PULL and a.inputs.get("principalId") in clusters:
            out.append(
                Violation(
                    name,
                    a.urn,
                    "AcrPull for a cluster identity: Azure ML grants it, and a second "
                    "assignment fails with RoleAssignmentExists",
                )
            )
    return out


@policy("clusters reach the workspace's storage")
def cluster_storage(resources: list[Resource]) -> list[Violation]:
    """Shared keys are off and the datastores use identities, so a job reads its code
    snapshot and ``sim_package`` and writes its logs and MLflow artifacts in the workspace's
    default datastore as the cluster's identity ("Data administration": the compute identity
    needs permission to the storage resource): Blob Data Contributor on that container, and
    on the outputs container for the run directory."""
    name = "clusters reach the workspace's storage"
    outputs = [c.inputs.get("containerName") for c in of_type(resources, "storage:BlobContainer")]
    blobstores = [
        f"azureml-blobstore-{w.outputs.get('workspaceId')}"
        for w in of_type(resources, "machinelearningservices:Workspace")
    ]
    out = []
    for cluster in _compute(resources):
        principal = _get(cluster.outputs, "identity.principalId")
        grants = {
            a.inputs.get("scope")
            for a in of_type(resources, "authorization:RoleAssignment")
            if a.inputs.get("principalId") == principal
            and _role(a) == STORAGE_BLOB_DATA_CONTRIBUTOR
        }
        for what, names in (("default datastore", blobstores), ("outputs", outputs)):
            if not grants & _containers(resources, names):
                out.append(
                    Violation(
                        name,
                        cluster.urn,
                        f"no Storage Blob Data Contributor on the {what} container",
                    )
                )
    return out


def check(resources: list[Resource]) -> list[Violation]:
    return [v for fn in POLICIES.values() for v in fn(resources)]
