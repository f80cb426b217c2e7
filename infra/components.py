"""One ComponentResource per concern: foundation, workspace, clusters, datastore, access,
the online endpoints' identity, budget."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pulumi
from pulumi_azure_native import (
    applicationinsights,
    authorization,
    consumption,
    containerregistry,
    keyvault,
    managedidentity,
    operationalinsights,
    resources,
    storage,
)
from pulumi_azure_native import (
    machinelearningservices as ml,
)

from infra.config import ClusterSettings, InfraConfig

# Built-in Azure role definition ids.
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
STORAGE_BLOB_DATA_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"


@dataclass
class FoundationArgs:
    config: InfraConfig
    tenant_id: pulumi.Input[str]


class Foundation(pulumi.ComponentResource):
    """Resource group, storage (with the outputs container), key vault, monitoring, registry."""

    def __init__(
        self, name: str, args: FoundationArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("aml-rl:infra:Foundation", name, None, opts)
        cfg, child = args.config, pulumi.ResourceOptions(parent=self)
        tags = cfg.tags
        self.resource_group = resources.ResourceGroup(
            "rg",
            resource_group_name=cfg.resource_group_name,
            location=cfg.location,
            tags=tags,
            opts=child,
        )
        rg = self.resource_group.name
        self.storage = storage.StorageAccount(
            "storage",
            account_name=cfg.storage_account_name,
            resource_group_name=rg,
            location=cfg.location,
            kind="StorageV2",
            sku=storage.SkuArgs(name="Standard_LRS"),
            enable_https_traffic_only=True,
            minimum_tls_version="TLS1_2",
            allow_blob_public_access=False,
            allow_shared_key_access=cfg.shared_key_access,
            default_to_o_auth_authentication=True,
            tags=tags,
            opts=child,
        )
        self.outputs_container = storage.BlobContainer(
            "outputs",
            container_name=cfg.outputs_container,
            account_name=self.storage.name,
            resource_group_name=rg,
            public_access=storage.PublicAccess.NONE,
            opts=child,
        )
        self.key_vault = keyvault.Vault(
            "vault",
            vault_name=cfg.key_vault_name,
            resource_group_name=rg,
            location=cfg.location,
            properties=keyvault.VaultPropertiesArgs(
                tenant_id=args.tenant_id,
                sku=keyvault.SkuArgs(family="A", name=keyvault.SkuName.STANDARD),
                enable_rbac_authorization=True,  # the SDK's default is access policies
                enable_soft_delete=True,
                soft_delete_retention_in_days=cfg.key_vault_retention_days,
                enable_purge_protection=True,
                access_policies=[],
            ),
            tags=tags,
            opts=child,
        )
        self.logs = operationalinsights.Workspace(
            "logs",
            workspace_name=f"log-{cfg.workspace_name}",
            resource_group_name=rg,
            location=cfg.location,
            sku=operationalinsights.WorkspaceSkuArgs(name="PerGB2018"),
            retention_in_days=30,
            tags=tags,
            opts=child,
        )
        self.insights = applicationinsights.Component(
            "insights",
            resource_name_=f"appi-{cfg.workspace_name}",
            resource_group_name=rg,
            location=cfg.location,
            kind="web",
            application_type="web",
            workspace_resource_id=self.logs.id,
            ingestion_mode="LogAnalytics",
            tags=tags,
            opts=child,
        )
        self.registry = containerregistry.Registry(
            "registry",
            registry_name=cfg.registry_name,
            resource_group_name=rg,
            location=cfg.location,
            sku=containerregistry.SkuArgs(name="Basic"),
            admin_user_enabled=False,  # pushes and pulls use Azure identities, never a password
            anonymous_pull_enabled=False,
            tags=tags,
            opts=child,
        )
        self.register_outputs(
            {
                "resource_group": rg,
                "storage_account": self.storage.name,
                "registry_login_server": self.registry.login_server,
            }
        )


@dataclass
class WorkspaceArgs:
    config: InfraConfig
    foundation: Foundation


class Workspace(pulumi.ComponentResource):
    """The Azure ML workspace, with a system-assigned identity and identity-based datastores."""

    def __init__(
        self, name: str, args: WorkspaceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("aml-rl:infra:Workspace", name, None, opts)
        cfg, f = args.config, args.foundation
        self.workspace = ml.Workspace(
            "workspace",
            workspace_name=cfg.workspace_name,
            resource_group_name=f.resource_group.name,
            location=cfg.location,
            identity=ml.ManagedServiceIdentityArgs(type="SystemAssigned"),
            sku=ml.SkuArgs(name="Basic", tier="Basic"),
            storage_account=f.storage.id,
            key_vault=f.key_vault.id,
            application_insights=f.insights.id,
            container_registry=f.registry.id,
            # The workspace's own datastores use its identity, so storage keys can stay off.
            system_datastores_auth_mode="identity",
            # Clusters live in the workspace's managed network: no public IPs on nodes.
            managed_network=ml.ManagedNetworkSettingsArgs(isolation_mode="AllowInternetOutbound"),
            # Provision that network now (about 30 min, once), in `pulumi up`'s time, rather
            # than inside the first job, which would spend its time limit waiting for it.
            provision_network_now=True,
            public_network_access="Enabled",
            tags=cfg.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.name = self.workspace.name
        self.principal_id = self.workspace.identity.apply(lambda i: i.principal_id)
        # the workspace's default datastore: the container Azure ML makes in our storage
        self.blobstore_container = pulumi.Output.concat(
            "azureml-blobstore-", self.workspace.workspace_id
        )
        self.mlflow_tracking_uri = self.workspace.ml_flow_tracking_uri
        self.register_outputs(
            {"workspace_name": self.name, "mlflow_tracking_uri": self.mlflow_tracking_uri}
        )


@dataclass
class ComputeClusterArgs:
    config: InfraConfig
    settings: ClusterSettings
    workspace: Workspace
    resource_group_name: pulumi.Input[str]


class ComputeCluster(pulumi.ComponentResource):
    """An AmlCompute cluster that scales to zero, with no SSH, public IPs or local auth."""

    def __init__(
        self, name: str, args: ComputeClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("aml-rl:infra:ComputeCluster", name, None, opts)
        s = args.settings
        credentials = None
        if s.allow_ssh:
            credentials = ml.UserAccountCredentialsArgs(
                admin_user_name="azureuser", admin_user_ssh_public_key=s.ssh_public_key
            )
        self.compute = ml.Compute(
            "compute",
            compute_name=s.name,
            workspace_name=args.workspace.name,
            resource_group_name=args.resource_group_name,
            location=args.config.location,
            identity=ml.ManagedServiceIdentityArgs(type="SystemAssigned"),
            properties=ml.AmlComputeArgs(
                compute_type="AmlCompute",
                disable_local_auth=True,
                properties=ml.AmlComputePropertiesArgs(
                    vm_size=s.vm_size,
                    vm_priority=s.priority,
                    os_type="Linux",
                    scale_settings=ml.ScaleSettingsArgs(
                        min_node_count=s.min_nodes,  # 0 by default: nothing runs, nothing is billed
                        max_node_count=s.max_nodes,
                        node_idle_time_before_scale_down=s.idle_duration,
                    ),
                    # The SDK defaults are True and "NotSpecified" (open): set both.
                    enable_node_public_ip=s.node_public_ip,
                    remote_login_port_public_access="Enabled" if s.allow_ssh else "Disabled",
                    user_account_credentials=credentials,
                ),
            ),
            tags=args.config.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.name = self.compute.name
        self.principal_id = self.compute.identity.apply(lambda i: i.principal_id)
        self.register_outputs({"name": self.name})


@dataclass
class DatastoreArgs:
    config: InfraConfig
    foundation: Foundation
    workspace: Workspace


class Datastore(pulumi.ComponentResource):
    """The outputs container as an Azure ML datastore, reached with identities (no keys or SAS)."""

    def __init__(
        self, name: str, args: DatastoreArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("aml-rl:infra:Datastore", name, None, opts)
        f = args.foundation
        self.datastore = ml.Datastore(
            "datastore",
            name=args.config.datastore_name,
            workspace_name=args.workspace.name,
            resource_group_name=f.resource_group.name,
            properties=ml.AzureBlobDatastoreArgs(
                datastore_type="AzureBlob",
                account_name=f.storage.name,
                container_name=f.outputs_container.name,
                # stated, not left to the service: it passes null through to azure-ai-ml
                protocol="https",
                endpoint="core.windows.net",
                credentials=ml.NoneDatastoreCredentialsArgs(credentials_type="None"),
                service_data_access_auth_identity="WorkspaceSystemAssignedIdentity",
                description="Run directories: checkpoints, trajectories, metrics, summaries.",
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.name = self.datastore.name
        self.register_outputs({"name": self.name})


@dataclass
class AccessArgs:
    subscription_id: pulumi.Input[str]
    foundation: Foundation
    workspace: Workspace
    principals: dict[str, pulumi.Input[str]]
    """Identities (by a short label) that read and write the outputs container."""
    data_principals: tuple[tuple[str, str], ...] = ()
    """(object id, type) of those who upload code and download runs (stack dataPrincipals)."""


def role_definition(subscription_id: pulumi.Input[str], role: str) -> pulumi.Output[str]:
    return pulumi.Output.concat(
        "/subscriptions/",
        subscription_id,
        "/providers/Microsoft.Authorization/roleDefinitions/",
        role,
    )


class Access(pulumi.ComponentResource):
    """Least privilege: Blob Data Contributor on the outputs container; for the clusters also on
    the workspace's default datastore container (the job's code snapshot, its logs and MLflow
    artifacts: Azure ML's "the compute identity needs permission to the storage resource,
    instead of the identity of the user who submitted the job"); for the stack's data
    principals, Blob Data Contributor on the default datastore container (code upload) and the
    outputs container (download), nothing broader.

    No AcrPull for the clusters: Azure ML grants a cluster's system-assigned identity AcrPull
    on the workspace registry itself when the cluster is created after the workspace and its
    registry (https://learn.microsoft.com/azure/machine-learning/how-to-identity-based-service-authentication),
    and a second assignment of the same role to the same principal on the same scope is
    refused with RoleAssignmentExists, which would fail the first `pulumi up`."""

    def __init__(
        self, name: str, args: AccessArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("aml-rl:infra:Access", name, None, opts)
        f = args.foundation
        containers = f.storage.id.apply(
            lambda account: f"{account}/blobServices/default/containers/"
        )
        outputs = pulumi.Output.concat(containers, f.outputs_container.name)
        blobstore = pulumi.Output.concat(containers, args.workspace.blobstore_container)
        self.assignments: list[authorization.RoleAssignment] = []

        def grant(
            label: str, principal: pulumi.Input[str], kind: str, role: str, scope: pulumi.Input[str]
        ) -> None:
            self.assignments.append(
                authorization.RoleAssignment(
                    label,
                    principal_id=principal,
                    principal_type=kind,
                    role_definition_id=role_definition(args.subscription_id, role),
                    scope=scope,
                    opts=pulumi.ResourceOptions(parent=self),
                )
            )

        for label, principal in args.principals.items():
            grant(
                f"{label}-outputs-rw", principal, "ServicePrincipal",
                STORAGE_BLOB_DATA_CONTRIBUTOR, outputs,
            )  # fmt: skip
            if label.endswith("-cluster"):
                # a job reads its code snapshot and sim_package there, and writes its logs
                # and MLflow artifacts: with shared keys off, as the compute's own identity
                grant(
                    f"{label}-code-rw", principal, "ServicePrincipal",
                    STORAGE_BLOB_DATA_CONTRIBUTOR, blobstore,
                )  # fmt: skip
        for object_id, kind in args.data_principals:
            for what, scope in (("code-rw", blobstore), ("outputs-rw", outputs)):
                grant(
                    f"data-{object_id[:8]}-{what}", object_id, kind,
                    STORAGE_BLOB_DATA_CONTRIBUTOR, scope,
                )  # fmt: skip
        self.register_outputs({})


@dataclass
class EndpointIdentityArgs:
    config: InfraConfig
    subscription_id: pulumi.Input[str]
    foundation: Foundation
    workspace: Workspace


class EndpointIdentity(pulumi.ComponentResource):
    """The user-assigned identity online endpoints run under (`invoke deploy`), with what Azure
    ML requires of it and does not grant by itself: AcrPull on the registry (the serving image)
    and Blob Data Reader on the workspace's default datastore container."""

    def __init__(
        self, name: str, args: EndpointIdentityArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("aml-rl:infra:EndpointIdentity", name, None, opts)
        cfg, f, child = args.config, args.foundation, pulumi.ResourceOptions(parent=self)
        self.identity = managedidentity.UserAssignedIdentity(
            "endpoint-identity",
            resource_name_=f"id-{cfg.workspace_name}-endpoints",
            resource_group_name=f.resource_group.name,
            location=cfg.location,
            tags=cfg.tags,
            opts=child,
        )
        blobstore = pulumi.Output.concat(
            f.storage.id, "/blobServices/default/containers/", args.workspace.blobstore_container
        )
        self.assignments = [
            authorization.RoleAssignment(
                f"endpoint-{what}",
                principal_id=self.identity.principal_id,
                principal_type="ServicePrincipal",
                role_definition_id=role_definition(args.subscription_id, role),
                scope=scope,
                opts=child,
            )
            for what, role, scope in (
                ("acr-pull", ACR_PULL, f.registry.id),
                ("blobstore-read", STORAGE_BLOB_DATA_READER, blobstore),
            )
        ]
        self.id = self.identity.id
        self.register_outputs({"endpoint_identity": self.id})


@dataclass
class BudgetArgs:
    config: InfraConfig
    subscription_id: pulumi.Input[str]
    resource_group_name: pulumi.Input[str]


class Budget(pulumi.ComponentResource):
    """A monthly cost budget on the resource group, e-mailing at 80% actual and 100% forecast."""

    def __init__(
        self, name: str, args: BudgetArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("aml-rl:infra:Budget", name, None, opts)
        cfg = args.config
        start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        self.budget = consumption.Budget(
            "budget",
            budget_name=f"budget-{cfg.workspace_name}",
            scope=pulumi.Output.concat(
                "/subscriptions/",
                args.subscription_id,
                "/resourceGroups/",
                args.resource_group_name,
            ),
            amount=cfg.budget_amount,
            category="Cost",
            time_grain="Monthly",
            time_period=consumption.BudgetTimePeriodArgs(
                start_date=start.strftime("%Y-%m-%dT%H:%M:%SZ")
            ),
            notifications={
                "actual80": consumption.NotificationArgs(
                    enabled=True,
                    operator="GreaterThan",
                    threshold=80,
                    contact_emails=list(cfg.budget_emails),
                ),
                "forecast100": consumption.NotificationArgs(
                    enabled=True,
                    operator="GreaterThan",
                    threshold=100,
                    threshold_type="Forecasted",
                    contact_emails=list(cfg.budget_emails),
                ),
            },
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["timePeriod"]),
        )
        self.register_outputs({})
