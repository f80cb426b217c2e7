"""Every stack setting, read once from ``pulumi.Config()``, with defaults and validation.

Settings (``pulumi config set aml-rl:<key> <value>``):

| key | default | meaning |
|-----|---------|---------|
| location | westeurope | Azure region (else `azure-native:location`), e.g. `swedencentral` |
| prefix | amlrl | start of every resource name (lowercase letters and digits) |
| owner | (required) | `owner` tag on every resource, e.g. a team e-mail |
| cpuVmSize / gpuVmSize | Standard_D4s_v3 / Standard_NC4as_T4_v3 | cluster VM sizes |
| cpuMaxNodes / gpuMaxNodes | 4 / 2 | cluster upper bounds |
| cpuMinNodes / gpuMinNodes | 0 | nodes kept warm (and billed); the cost policy flags > 0 |
| cpuPriority / gpuPriority | Dedicated / LowPriority | `Dedicated` or `LowPriority` |
| idleMinutes | 15 | idle time before a cluster scales down (1-30) |
| gpuCluster | true | create the GPU cluster |
| allowSsh | false | open SSH on cluster nodes (needs sshPublicKey) |
| sshPublicKey | (none) | admin public key when allowSsh is true |
| nodePublicIp | false | give cluster nodes public IPs |
| sharedKeyAccess | false | allow storage account keys (identity-only by default) |
| keyVaultRetentionDays | 90 | soft-delete retention (7-90) |
| budgetAmount | (none) | monthly budget in the billing currency; unset for none |
| budgetEmails | (none) | comma-separated addresses alerted at 80% and 100% |
| dataPrincipals | (none) | who submits and downloads: `OBJECT-ID[:User|Group|ServicePrincipal]`, |
|  |  | comma-separated; Blob Data Contributor on the default datastore and outputs containers |
| storageAccountName, keyVaultName, registryName | from prefix and stack | explicit names |
| workspaceName, cpuClusterName, gpuClusterName | from prefix and stack | explicit names |
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pulumi import RunError

from infra.regions import REGIONS

PROJECT = "aml-rl"
KEYS = (
    "location", "prefix", "owner", "cpuVmSize", "gpuVmSize", "cpuMaxNodes", "gpuMaxNodes",
    "cpuMinNodes", "gpuMinNodes",
    "cpuPriority", "gpuPriority", "idleMinutes", "gpuCluster", "allowSsh", "nodePublicIp",
    "sharedKeyAccess", "keyVaultRetentionDays", "budgetAmount", "budgetEmails",
    "resourceGroupName", "storageAccountName", "keyVaultName", "registryName",
    "workspaceName", "cpuClusterName", "gpuClusterName", "sshPublicKey", "dataPrincipals",
)  # fmt: skip
"""Every ``aml-rl:<key>`` the program reads."""


class InfraConfigError(RunError, ValueError):
    """A stack setting that Azure would reject; names the key, the value and the rule. A
    ``pulumi.RunError``: `pulumi up` prints it as a message, where any other exception
    comes with the Python traceback of the program."""


# Azure's naming rules, by resource kind: (pattern, rule in words).
NAME_RULES: dict[str, tuple[str, str]] = {
    "storage account": (r"[a-z0-9]{3,24}", "3-24 lowercase letters and digits"),
    "key vault": (
        r"(?!.*--)[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]",
        "3-24 letters, digits and hyphens, starting with a letter, "
        "not ending with or doubling a hyphen",
    ),
    "container registry": (r"[A-Za-z0-9]{5,50}", "5-50 letters and digits"),
    "workspace": (
        r"[A-Za-z0-9][A-Za-z0-9_-]{2,32}",
        "3-33 letters, digits, hyphens and underscores, starting with a letter or digit",
    ),
    "compute": (
        r"[A-Za-z][A-Za-z0-9-]{0,14}[A-Za-z0-9]",
        "2-16 letters, digits and hyphens, starting with a letter",
    ),
    "resource group": (
        r"[-\w.()]{0,89}[-\w()]",
        "1-90 letters, digits, underscores, hyphens, periods and parentheses, "
        "not ending with a period",
    ),
}  # fmt: skip


def check_name(kind: str, key: str, value: str) -> str:
    pattern, rule = NAME_RULES[kind]
    if not re.fullmatch(pattern, value):
        raise InfraConfigError(
            f"{PROJECT}:{key} = {value!r} is not a valid {kind} name: Azure requires {rule}; "
            f"set another with `pulumi config set {PROJECT}:{key} <name>`"
        )
    return value


PRINCIPAL_TYPES = ("User", "Group", "ServicePrincipal")
GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _principals(raw: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        object_id, _, kind = item.partition(":")
        kind = kind or "User"
        if not GUID.fullmatch(object_id) or kind not in PRINCIPAL_TYPES:
            raise InfraConfigError(
                f"{PROJECT}:dataPrincipals: {item!r} is not "
                f"OBJECT-ID[:{'|'.join(PRINCIPAL_TYPES)}]; "
                "find an object id with `az ad signed-in-user show --query id -o tsv` (you) or "
                "`az ad sp show --id APP-ID --query id -o tsv` (a pipeline)"
            )
        out.append((object_id.lower(), kind))
    return tuple(out)


def check_location(value: str) -> str:
    """A region name ARM takes: ``westeurope``, not ``West Europe`` or a typo."""
    if value in REGIONS:
        return value
    compact = re.sub(r"[\s_-]", "", value.lower())
    close = [compact] if compact in REGIONS else difflib.get_close_matches(compact, REGIONS, 3)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise InfraConfigError(
        f"{PROJECT}:location = {value!r} is not an Azure region name (lowercase, no spaces, as "
        f"`az account list-locations -o table` shows under Name){hint} Set it with "
        f"`pulumi config set {PROJECT}:location <region>`"
    )


@dataclass(frozen=True)
class ClusterSettings:
    name: str
    vm_size: str
    max_nodes: int
    min_nodes: int
    priority: str  # Dedicated | LowPriority
    idle_minutes: int
    allow_ssh: bool
    node_public_ip: bool
    ssh_public_key: str | None = None

    @property
    def idle_duration(self) -> str:
        return f"PT{self.idle_minutes}M"  # ISO 8601, as Azure expects


@dataclass(frozen=True)
class InfraConfig:
    stack: str
    location: str
    owner: str
    resource_group_name: str
    storage_account_name: str
    key_vault_name: str
    registry_name: str
    workspace_name: str
    outputs_container: str
    datastore_name: str
    cpu: ClusterSettings
    gpu: ClusterSettings | None
    shared_key_access: bool
    key_vault_retention_days: int
    budget_amount: float | None
    budget_emails: tuple[str, ...]
    data_principals: tuple[tuple[str, str], ...] = ()
    """(object id, principal type) of the people and pipelines that upload code and download
    runs: with shared keys off, azure-ai-ml reads and writes blobs as the caller."""

    @property
    def tags(self) -> dict[str, str]:
        return {"project": PROJECT, "stack": self.stack, "owner": self.owner}


def _reader(values: Mapping[str, str]) -> tuple[Callable, Callable, Callable]:
    def text(key: str, default: str | None = None) -> str:
        value = values.get(key, default)
        if value is None or value == "":
            raise InfraConfigError(
                f"{PROJECT}:{key} is required; set it with "
                f"`pulumi config set {PROJECT}:{key} <value>`"
            )
        return str(value)

    def number(key: str, default: int, low: int, high: int) -> int:
        raw = values.get(key, default)
        try:
            parsed = float(raw)  # Pulumi passes numbers as strings (or floats in mocks)
        except (TypeError, ValueError):
            parsed = math.nan
        if not parsed.is_integer():  # 2.5 nodes is a typo, not 2 nodes
            raise InfraConfigError(f"{PROJECT}:{key} = {raw!r} is not a whole number")
        value = int(parsed)
        if not low <= value <= high:
            raise InfraConfigError(f"{PROJECT}:{key} = {value} is outside {low}-{high}")
        return value

    def flag(key: str, default: bool) -> bool:
        raw = values.get(key, default)
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("true", "false"):
            return str(raw).lower() == "true"
        raise InfraConfigError(f"{PROJECT}:{key} = {raw!r} must be true or false")

    return text, number, flag


def name_suffix(subscription_id: str, stack: str) -> str:
    """5 hex characters, stable for one subscription and stack: storage accounts, registries
    and key vaults have global DNS names, so every user of this template needs their own."""
    if not subscription_id:
        return ""
    return hashlib.sha256(f"{subscription_id.lower()}/{stack}".encode()).hexdigest()[:5]


def load_values(values: Mapping[str, str], stack: str, subscription_id: str = "") -> InfraConfig:
    """Validate raw settings (keys without the ``aml-rl:`` prefix) into an :class:`InfraConfig`.
    Default global names carry :func:`name_suffix` when the subscription is known."""
    text, number, flag = _reader(values)
    suffix = name_suffix(subscription_id, stack)
    prefix = text("prefix", "amlrl")
    if not re.fullmatch(r"[a-z][a-z0-9]{1,11}", prefix):
        raise InfraConfigError(
            f"{PROJECT}:prefix = {prefix!r} must be 2-12 lowercase letters and digits, starting "
            "with a letter: it starts every resource name, and storage accounts allow no more"
        )
    short_stack = re.sub(r"[^a-z0-9]", "", stack.lower())[:8] or "stack"
    idle = number("idleMinutes", 15, 1, 30)
    allow_ssh, public_ip = flag("allowSsh", False), flag("nodePublicIp", False)
    ssh_key = text("sshPublicKey") if allow_ssh else None  # SSH without a key is no access

    def cluster(kind: str, vm_size: str, max_nodes: int, priority: str) -> ClusterSettings:
        chosen = text(f"{kind}Priority", priority)
        if chosen not in ("Dedicated", "LowPriority"):
            raise InfraConfigError(
                f"{PROJECT}:{kind}Priority = {chosen!r} must be Dedicated or LowPriority"
            )
        return ClusterSettings(
            name=check_name(
                "compute", f"{kind}ClusterName", text(f"{kind}ClusterName", f"{kind}-cluster")
            ),
            vm_size=text(f"{kind}VmSize", vm_size),
            max_nodes=(top := number(f"{kind}MaxNodes", max_nodes, 1, 100)),
            min_nodes=number(f"{kind}MinNodes", 0, 0, top),
            priority=chosen,
            idle_minutes=idle,
            allow_ssh=allow_ssh,
            node_public_ip=public_ip,
            ssh_public_key=ssh_key,
        )

    budget_raw = values.get("budgetAmount")
    budget = None
    if budget_raw not in (None, ""):
        try:
            budget = float(budget_raw)
        except ValueError:
            raise InfraConfigError(
                f"{PROJECT}:budgetAmount = {budget_raw!r} is not a number"
            ) from None
        if not (math.isfinite(budget) and budget > 0):
            raise InfraConfigError(
                f"{PROJECT}:budgetAmount = {budget_raw!r} must be a positive amount, such as 200"
            )
    emails = tuple(e.strip() for e in str(values.get("budgetEmails", "")).split(",") if e.strip())
    bad = [e for e in emails if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", e)]
    if bad:
        raise InfraConfigError(f"{PROJECT}:budgetEmails: {', '.join(bad)} not e-mail address(es)")
    if budget is not None and not emails:
        raise InfraConfigError(
            f"{PROJECT}:budgetEmails is required with budgetAmount: who gets the alert?"
        )

    return InfraConfig(
        data_principals=_principals(str(values.get("dataPrincipals") or "")),
        stack=stack,
        location=check_location(text("location", "westeurope")),
        owner=text("owner"),
        resource_group_name=check_name(
            "resource group", "resourceGroupName", text("resourceGroupName", f"rg-{prefix}-{stack}")
        ),
        storage_account_name=check_name(
            "storage account",
            "storageAccountName",
            text("storageAccountName", f"{prefix}{short_stack[: 8 - len(suffix)]}{suffix}st"),
        ),
        key_vault_name=check_name(
            "key vault",
            "keyVaultName",
            text("keyVaultName", f"kv-{prefix}-{short_stack[: 8 - len(suffix)]}{suffix}"),
        ),
        registry_name=check_name(
            "container registry",
            "registryName",
            text("registryName", f"{prefix}{short_stack}{suffix}acr"),
        ),
        workspace_name=check_name(
            "workspace", "workspaceName", text("workspaceName", f"mlw-{prefix}-{short_stack}")
        ),
        outputs_container="outputs",
        datastore_name="outputs",
        cpu=cluster("cpu", "Standard_D4s_v3", 4, "Dedicated"),
        gpu=cluster("gpu", "Standard_NC4as_T4_v3", 2, "LowPriority")
        if flag("gpuCluster", True)
        else None,
        shared_key_access=flag("sharedKeyAccess", False),
        key_vault_retention_days=number("keyVaultRetentionDays", 90, 7, 90),
        budget_amount=budget,
        budget_emails=emails,
    )


def load(stack: str) -> InfraConfig:
    """Read the current stack's ``aml-rl:*`` settings."""
    import pulumi

    config = pulumi.Config(PROJECT)
    values = {k: v for k in KEYS if (v := config.get(k)) is not None}
    if "location" not in values:  # the provider's own setting, as Pulumi's guides set it
        provider = pulumi.Config("azure-native").get("location")
        if provider:
            values["location"] = provider
    from pulumi_azure_native import authorization

    subscription = authorization.get_client_config().subscription_id  # who deploys, where
    return load_values(values, stack, subscription)
