"""The Azure ML workspace a command talks to (infra outputs, environment, flags) and the
login it uses."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Where each setting can come from, in increasing precedence: infra outputs, env, flags.
ENVIRONMENT = {
    "subscription_id": "AZURE_SUBSCRIPTION_ID",
    "resource_group": "AZURE_RESOURCE_GROUP",
    "workspace_name": "AZUREML_WORKSPACE_NAME",
    "cpu_cluster": "AZUREML_CPU_CLUSTER",
    "gpu_cluster": "AZUREML_GPU_CLUSTER",
    "cpu_vm_size": "AZUREML_CPU_VM_SIZE",  # the layout `submit` expects (client/vm_sizes.py)
    "gpu_vm_size": "AZUREML_GPU_VM_SIZE",
    "datastore": "AZUREML_DATASTORE",
    "registry_login_server": "AZURE_CONTAINER_REGISTRY",
    "endpoint_identity": "AZUREML_ENDPOINT_IDENTITY",  # resource id; `invoke deploy` only
}


FLAGS = ("subscription_id", "resource_group", "workspace_name")  # the tasks' flags for them


class SubmitError(ValueError):
    """Something submission needs is missing or wrong; the message says where to set it."""


@dataclass
class Target:
    values: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> str:
        return self.values[key]

    def describe(self) -> str:
        width = max(map(len, ENVIRONMENT))
        return "\n".join(
            f"{key.ljust(width)}  {self.values.get(key, '(unset)')}  [{self.sources.get(key, '-')}]"
            for key in ENVIRONMENT
        )


def resolve_target(
    outputs_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, str | None] | None = None,
    stack: str | None = None,
) -> Target:
    """Layer the infra outputs contract, then environment variables, then flags."""
    from infra.outputs import OutputsError, read_outputs

    environ = os.environ if environ is None else environ
    target = Target()
    try:
        outputs = read_outputs(outputs_file, stack=stack)
    except OutputsError as exc:
        if outputs_file is not None:
            raise SubmitError(str(exc)) from None
        target.sources["(infra outputs)"] = f"not used: {exc}"
    else:
        source = str(outputs_file) if outputs_file else "pulumi stack output"
        for key in ENVIRONMENT:
            value = getattr(outputs, key, "")
            if value:
                target.values[key], target.sources[key] = value, source
    for key, variable in ENVIRONMENT.items():
        if environ.get(variable):
            target.values[key], target.sources[key] = environ[variable], f"${variable}"
    for key, value in (flags or {}).items():
        if value:
            target.values[key], target.sources[key] = value, f"--{key.replace('_', '-')}"
    return target


def require(target: Target, keys: list[str]) -> None:
    missing = [key for key in keys if not target.values.get(key)]
    if missing:
        how = "; ".join(
            f"{key}: ${ENVIRONMENT[key]}"
            + (f" or --{key.replace('_', '-')}" if key in FLAGS else "")
            for key in missing
        )
        raise SubmitError(
            f"the workspace is not fully known: missing {', '.join(missing)}. Run `pulumi up` in "
            f"infra/ (or pass --outputs FILE from `pulumi stack output --json`), or set {how}"
        )


def credential() -> Any:
    """The Azure credential (:func:`client.credentials.azure_credential`), checked once, with
    one message when nobody is logged in."""
    from azure.core.exceptions import ClientAuthenticationError

    from client.credentials import azure_credential

    cred = azure_credential()
    identity = logging.getLogger("azure.identity")
    level = identity.level
    identity.setLevel(logging.ERROR)  # its warning per credential tried: 13 lines, said below
    try:
        cred.get_token("https://management.azure.com/.default")
    except ClientAuthenticationError as exc:
        raise SubmitError(
            "not logged in to Azure: run `az login` (or, in CI, azure/login with OpenID Connect) "
            f"and try again ({str(exc).splitlines()[0][:160]})"
        ) from None
    finally:
        identity.setLevel(level)
    return cred


def ml_client(target: Target, cred: Any = None, **kwargs: Any) -> Any:
    from azure.ai.ml import MLClient

    require(target, ["subscription_id", "resource_group", "workspace_name"])
    return MLClient(
        cred or credential(),
        target["subscription_id"],
        target["resource_group"],
        target["workspace_name"],
        **kwargs,
    )


def credential_of(client: Any) -> Any:
    """The credential an MLClient was made with (for storage calls beside it)."""
    return getattr(client, "_credential", None) or credential()
