"""Compose the components into a stack; returns the outputs contract (see infra/outputs.py)."""

from __future__ import annotations

import pulumi
from pulumi_azure_native import authorization

from infra.components import (
    Access,
    AccessArgs,
    Budget,
    BudgetArgs,
    ComputeCluster,
    ComputeClusterArgs,
    Datastore,
    DatastoreArgs,
    EndpointIdentity,
    EndpointIdentityArgs,
    Foundation,
    FoundationArgs,
    Workspace,
    WorkspaceArgs,
)
from infra.config import InfraConfig


def build(cfg: InfraConfig) -> dict[str, pulumi.Input[str]]:
    client = authorization.get_client_config_output()
    foundation = Foundation("foundation", FoundationArgs(config=cfg, tenant_id=client.tenant_id))
    workspace = Workspace("workspace", WorkspaceArgs(config=cfg, foundation=foundation))
    clusters = {
        kind: ComputeCluster(
            f"{kind}-cluster",
            ComputeClusterArgs(
                config=cfg,
                settings=settings,
                workspace=workspace,
                resource_group_name=foundation.resource_group.name,
            ),
        )
        for kind, settings in (("cpu", cfg.cpu), ("gpu", cfg.gpu))
        if settings is not None
    }
    datastore = Datastore(
        "datastore", DatastoreArgs(config=cfg, foundation=foundation, workspace=workspace)
    )
    principals = {f"{kind}-cluster": cluster.principal_id for kind, cluster in clusters.items()}
    principals["workspace"] = workspace.principal_id  # reads the datastore for the studio
    Access(
        "access",
        AccessArgs(
            subscription_id=client.subscription_id,
            foundation=foundation,
            workspace=workspace,
            principals=principals,
            data_principals=cfg.data_principals,
        ),
    )
    endpoints = EndpointIdentity(
        "endpoints",
        EndpointIdentityArgs(
            config=cfg,
            subscription_id=client.subscription_id,
            foundation=foundation,
            workspace=workspace,
        ),
    )
    if cfg.budget_amount is not None:
        Budget(
            "budget",
            BudgetArgs(
                config=cfg,
                subscription_id=client.subscription_id,
                resource_group_name=foundation.resource_group.name,
            ),
        )
    return {
        "subscription_id": client.subscription_id,
        "resource_group": foundation.resource_group.name,
        "location": cfg.location,
        "workspace_name": workspace.name,
        "cpu_cluster": clusters["cpu"].name,
        "gpu_cluster": clusters["gpu"].name if "gpu" in clusters else "",
        # what `invoke submit --dry-run` sizes the expected layout from (jobs/layout.py)
        "cpu_vm_size": cfg.cpu.vm_size,
        "gpu_vm_size": cfg.gpu.vm_size if "gpu" in clusters else "",
        "datastore": datastore.name,
        "registry_login_server": foundation.registry.login_server,
        "storage_account": foundation.storage.name,
        "mlflow_tracking_uri": workspace.mlflow_tracking_uri,
        "endpoint_identity": endpoints.id,
    }
