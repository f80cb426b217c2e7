"""Joining Ray: a local cluster, or the one Azure ML started; the node's role in a job."""

from __future__ import annotations

import logging
import os
import socket
import time

from jobs.console import console
from jobs.rundir import RunError


def check_ray_version(expected: str | None = None) -> None:
    """The image records the Ray version it was built with; the job refuses another one."""
    import ray

    expected = expected or os.environ.get("AML_RL_RAY_VERSION")
    if expected and expected != ray.__version__:
        raise RunError(
            f"Ray version mismatch: this image was built for Ray {expected} (AML_RL_RAY_VERSION) "
            f"but Ray {ray.__version__} is installed; rebuild the image with `invoke build` so "
            "that every node runs the host's Ray"
        )


def start_ray() -> None:
    import ray

    check_ray_version()
    if ray.is_initialized():  # a caller (the benchmarks, a notebook) already started Ray
        return
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        ray.init(include_dashboard=False, logging_level=logging.WARNING, configure_logging=True)
        return
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except RuntimeError as exc:
        if "version" in str(exc).lower():  # Ray's own check when a node's version differs
            raise RunError(
                f"Ray version mismatch joining the cluster at {address}: {exc}"
            ) from None
        raise


# The node's rank, by the first of these that is set: Azure ML's runtime sets
# AZUREML_CR_NODE_RANK on every node of a job; NODE_RANK (PyTorch distribution) and
# OMPI_COMM_WORLD_RANK (MPI) belong to other distributions; AZUREML_NODE_RANK is ours, for
# tests and for other launchers. None set: a single node, the head.
RANK_VARIABLES = ("AZUREML_CR_NODE_RANK", "AZUREML_NODE_RANK", "NODE_RANK", "OMPI_COMM_WORLD_RANK")


def node_rank() -> tuple[int, str | None]:
    """This node's rank and the variable it came from (0 and None on a single node)."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return int(value), name
            except ValueError:
                raise RunError(f"{name}={value!r} is not a node rank (a whole number)") from None
    return 0, None


def head_address(address: str | None) -> tuple[str, int] | None:
    """host and port of the head's Ray (GCS), from RAY_ADDRESS or, for ``auto``, from the
    cluster this node's Ray joined; None when there is none yet."""
    from ray._private.services import canonicalize_bootstrap_address

    try:
        found = canonicalize_bootstrap_address(address or "auto")
    except (ConnectionError, ValueError):
        return None
    if not found or ":" not in found:
        return None
    host, _, port = found.rpartition(":")
    return host, int(port)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


def wait_as_worker(
    rank: int,
    variable: str | None,
    address: str | None = None,
    *,
    poll_s: float = 5.0,
    join_timeout_s: float = 600.0,
) -> int:
    """A worker node: its Ray joins the head's cluster (Azure ML starts it) and the driver runs
    on the head only. Wait while the head's Ray answers, then leave: a worker never runs a
    driver, and never outlives the head (it watches the head itself, not a mounted file).
    Leaves with 1 if no head answers within ``join_timeout_s``."""
    where = f"from {variable}" if variable else "no rank variable"
    console.print(f"node {rank} ({where}): a Ray worker; the driver runs on the head (rank 0)")
    waited = 0.0
    head = head_address(address)
    while head is None or not _reachable(*head):
        if waited >= join_timeout_s:
            console.print(
                f"node {rank}: no head Ray cluster answered at {address or 'auto'} in "
                f"{waited:.0f} s; leaving (is RAY_ADDRESS right, and did the head start?)"
            )
            return 1
        time.sleep(poll_s)
        waited += poll_s
        head = head or head_address(address)
    console.print(f"node {rank}: the head's Ray cluster is at {head[0]}:{head[1]}")
    while _reachable(*head):
        time.sleep(poll_s)
    console.print(f"node {rank}: the head's Ray cluster is gone (the run ended there); leaving")
    return 0
