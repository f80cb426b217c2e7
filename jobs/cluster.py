"""Joining Ray: a local cluster, or the one Azure ML started; the node's role in a job."""

from __future__ import annotations

import logging
import os
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


# Azure ML sets one of these on every node of a distributed job; 0 (or unset) is the head.
RANK_VARIABLES = ("AZUREML_NODE_RANK", "NODE_RANK", "OMPI_COMM_WORLD_RANK")


def node_rank() -> int:
    for name in RANK_VARIABLES:
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return 0


def wait_as_worker(
    rank: int, run_dir: Path | None, poll_s: float = 10.0, timeout_s: float | None = None
) -> int:
    """On a worker node, Azure ML has already joined this node's Ray to the head's cluster and
    the driver runs only on the head: stay up until the head writes the run's summary."""
    console.print(f"node {rank}: a Ray worker (started by Azure ML); the driver runs on the head")
    if run_dir is None:
        return 0
    waited = 0.0
    while not (run_dir / "summary.json").exists():
        if timeout_s is not None and waited >= timeout_s:
            console.print(f"node {rank}: no summary after {waited:.0f} s; leaving")
            return 1
        time.sleep(poll_s)
        waited += poll_s
    console.print(f"node {rank}: the head finished the run; leaving")
    return 0
