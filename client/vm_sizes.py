"""What a node of an Azure ML cluster holds, read from its VM size's name: the layout a job
expects before it is sent (`invoke submit --dry-run`); on the cluster, Ray's own count rules."""

from __future__ import annotations

import re

from jobs.layout import Node

GPUS = {
    "Standard_NC4as_T4_v3": 1, "Standard_NC8as_T4_v3": 1, "Standard_NC16as_T4_v3": 1,
    "Standard_NC64as_T4_v3": 4,
    "Standard_NC6s_v3": 1, "Standard_NC12s_v3": 2, "Standard_NC24s_v3": 4, "Standard_NC24rs_v3": 4,
    "Standard_NC24ads_A100_v4": 1, "Standard_NC48ads_A100_v4": 2, "Standard_NC96ads_A100_v4": 4,
    "Standard_ND96asr_v4": 8, "Standard_ND96amsr_A100_v4": 8,
    "Standard_NC40ads_H100_v5": 1, "Standard_NC80adis_H100_v5": 2, "Standard_ND96isr_H100_v5": 8,
}  # fmt: skip
"""GPUs per VM of Azure's GPU sizes (Azure's size pages); the name does not say."""

# Azure's naming convention since the v3 sizes: Standard_<family><vCPUs><features>_v<N>,
# e.g. Standard_D4s_v3 (4 vCPUs), Standard_NC24ads_A100_v4 (24). Older sizes (Standard_DS3_v2
# has 4 vCPUs) do not follow it.
NAMED = re.compile(r"^Standard_[A-Z]+?(?P<cpus>\d+)[a-z]*(?:_[A-Z0-9]+)?_v(?P<version>\d+)$")


def node_of(vm_size: str) -> Node | None:
    """One node of ``vm_size``, or None where its name does not tell its vCPUs."""
    found = NAMED.match(vm_size.strip())
    if found is None or int(found["version"]) < 3:
        return None
    gpus = GPUS.get(vm_size.strip(), 0)
    if vm_size.startswith(("Standard_N",)) and vm_size not in GPUS:
        return None  # a GPU size whose GPU count is not in the table: not guessed
    return Node(cpus=float(found["cpus"]), gpus=float(gpus))
