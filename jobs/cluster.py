"""Joining Ray: a local cluster, or the one Azure ML started; the node's role in a job."""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

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


CODE_ROOT = Path(__file__).resolve().parents[1]
"""The folder the job's code was imported from: on Azure ML the job's staged code snapshot,
in the image /app, in a checkout the repository."""
SHIPPED_EXCLUDES = [".git", ".venv", ".aml", "runs", "outputs", "node_modules", "benchmarks/tmp",
                    "**/__pycache__", "*.pyc", "*.parquet", "tests/artifacts"]  # fmt: skip
"""Never shipped to the other nodes with the code: environments, runs, caches."""
NAMESPACE = b"aml-rl"  # Ray's internal key-value store: the keys below, for every node
DRIVER_KEY = b"driver-job"  # the driver's Ray job id, set when it joins the cluster
OVER_KEY = b"training-over"  # set when the driver's training has ended, however it ended


def start_ray() -> None:
    """Start a local Ray, or join the cluster at ``RAY_ADDRESS`` shipping the job's code to
    every node (Ray's ``working_dir``): a worker node imports this code, not the image's."""
    import ray

    check_ray_version()
    if ray.is_initialized():  # a caller (the benchmarks, a notebook) already started Ray
        return
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        # "local": a Ray of this run's own, never one that `ray start` left on the machine
        # (a dead one's address file would make the run wait on it for ever)
        ray.init(
            address="local",
            include_dashboard=False,
            logging_level=logging.WARNING,
            configure_logging=True,
        )
        return
    try:
        ray.init(
            address=address,
            logging_level=logging.WARNING,
            runtime_env={"working_dir": str(CODE_ROOT), "excludes": SHIPPED_EXCLUDES},
        )
    except RuntimeError as exc:
        if "version" in str(exc).lower():  # Ray's own check when a node's version differs
            raise RunError(
                f"Ray version mismatch joining the cluster at {address}: {exc}"
            ) from None
        raise
    from ray.experimental.internal_kv import _internal_kv_put

    job = ray.get_runtime_context().get_job_id()
    _internal_kv_put(DRIVER_KEY, job.encode(), overwrite=True, namespace=NAMESPACE)


def announce_over() -> None:
    """The driver's training has ended: say so to every node's command, through Ray itself,
    so that a worker leaves whether or not Azure ML keeps the head's Ray running."""
    import ray
    from ray.experimental.internal_kv import _internal_kv_initialized, _internal_kv_put

    if os.environ.get("RAY_ADDRESS") and ray.is_initialized() and _internal_kv_initialized():
        _internal_kv_put(OVER_KEY, b"1", overwrite=True, namespace=NAMESPACE)


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
    on the head only. Wait until the training is over, then leave: the driver said so in
    Ray's key-value store, or its Ray job ended (killed before it could say), or the head's
    Ray is gone. So a worker neither waits on a head that waits on it nor outlives the head.
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
    gcs = _gcs_client(*head)
    if gcs is None:
        console.print(
            f"node {rank}: cannot read the head's Ray state; leaving when its Ray is gone"
        )
    while _reachable(*head):
        why = _training_over(gcs) if gcs is not None else None
        if why:
            console.print(f"node {rank}: {why}; leaving")
            return 0
        time.sleep(poll_s)
    console.print(f"node {rank}: the head's Ray cluster is gone (the run ended there); leaving")
    return 0


def _gcs_client(host: str, port: int) -> object | None:
    """A client of the head's Ray state (GCS), authenticated as any driver of the cluster is
    (Ray's token, where the cluster uses one); None where it cannot connect."""
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available,
    )
    from ray._raylet import GcsClient
    from ray.exceptions import RayError

    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    try:
        return GcsClient(address=f"{host}:{port}")
    except RayError:
        return None


def _training_over(gcs: object) -> str | None:
    """Why the training is over, read from the head's Ray; None while it goes on (or while
    the head does not answer, which the caller tells apart)."""
    from ray.exceptions import RayError

    try:
        if gcs.internal_kv_get(OVER_KEY, NAMESPACE, timeout=5) is not None:
            return "the driver says the training is over"
        driver = gcs.internal_kv_get(DRIVER_KEY, NAMESPACE, timeout=5)
        if driver is None:
            return None
        for job_id, info in gcs.get_all_job_info(timeout=5).items():
            if job_id.hex() == driver.decode() and info.is_dead:
                return "the driver's Ray job has ended (it could not say so itself)"
    except RayError:  # the head restarting or going: the caller tells which
        return None
    return None
