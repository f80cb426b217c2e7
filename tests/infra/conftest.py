"""Run the whole Pulumi program under mocks (no cloud, no CLI) and capture every resource."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pytest

from infra.config import load_values
from infra.policies import Resource
from infra.program import build

SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
TENANT = "99999999-8888-7777-6666-555555555555"
BASE = {"owner": "rl-team@example.com"}

# The input that names each kind of resource (there is no autonaming under mocks).
NAME_KEY = {
    "resources:ResourceGroup": "resourceGroupName",
    "storage:StorageAccount": "accountName",
    "storage:BlobContainer": "containerName",
    "keyvault:Vault": "vaultName",
    "containerregistry:Registry": "registryName",
    "operationalinsights:Workspace": "workspaceName",
    "applicationinsights:Component": "resourceName",
    "machinelearningservices:Workspace": "workspaceName",
    "machinelearningservices:Compute": "computeName",
    "machinelearningservices:Datastore": "name",
    "consumption:Budget": "budgetName",
    "managedidentity:UserAssignedIdentity": "resourceName",
}


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self, stack: str) -> None:
        self.stack = stack
        self.resources: list[Resource] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = dict(args.inputs)
        outputs = dict(inputs)
        kind = args.typ.removeprefix("azure-native:")
        name = inputs.get(NAME_KEY.get(kind, ""), args.name)
        provider = kind.replace(":", "/")
        resource_id = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/{provider}/{name}"
        outputs.setdefault("name", name)
        outputs["id"] = resource_id
        if "identity" in inputs:
            outputs["identity"] = {**inputs["identity"], "principalId": f"{args.name}-principal"}
        if args.typ == "azure-native:containerregistry:Registry":
            outputs["loginServer"] = f"{name.lower()}.azurecr.io"
        if args.typ == "azure-native:managedidentity:UserAssignedIdentity":
            outputs["principalId"] = f"{args.name}-principal"
        if args.typ == "azure-native:machinelearningservices:Workspace":
            outputs["workspaceId"] = "0a1b2c3d-0000-4000-8000-000000000001"
            outputs["mlFlowTrackingUri"] = (
                f"azureml://westeurope.api.azureml.ms/mlflow/v1.0{resource_id}"
            )
        urn = f"urn:pulumi:{self.stack}::aml-rl::{args.typ}::{args.name}"
        self.resources.append(Resource(args.typ, args.name, urn, inputs, outputs))
        return resource_id, outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        if args.token == "azure-native:authorization:getClientConfig":
            return {
                "subscriptionId": SUBSCRIPTION,
                "tenantId": TENANT,
                "clientId": "client",
                "objectId": "object",
            }
        return {}


@dataclass
class Stack:
    resources: list[Resource]
    outputs: dict[str, Any]

    def of_type(self, typ: str) -> list[Resource]:
        return [r for r in self.resources if r.typ == f"azure-native:{typ}"]

    def one(self, typ: str, name: str | None = None) -> Resource:
        found = [r for r in self.of_type(typ) if name is None or r.name == name]
        assert len(found) == 1, f"expected one {typ} {name or ''}, found {[r.name for r in found]}"
        return found[0]


def run_stack(settings: dict[str, Any] | None = None, stack: str = "dev") -> Stack:
    mocks = RecordingMocks(stack)
    pulumi.runtime.set_mocks(mocks, project="aml-rl", stack=stack, preview=False)
    cfg = load_values({**BASE, **(settings or {})}, stack, SUBSCRIPTION)  # as infra.config.load
    captured: dict[str, Any] = {}

    @pulumi.runtime.test
    def program() -> pulumi.Output:
        outputs = build(cfg)
        return pulumi.Output.all(**outputs).apply(captured.update)

    program()
    return Stack(mocks.resources, captured)


@pytest.fixture(scope="module")
def default_stack() -> Stack:
    return run_stack()
