"""Where a run's work goes: env runners, envs per runner and learners, sized from the CPUs
and GPUs Ray reports (one machine, or every node of a cluster), or as the config says."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

AUTO = "auto"
RECIPE_ENVS = 8
"""Parallel envs the recipe samples from (the zoo's 1 x 8): ``auto`` spreads them over the
env runners, so each iteration's batch holds as many episodes side by side whatever the
layout, and learning in env steps hardly depends on the machine."""
DRIVER_CPUS = 1
"""The driver's CPU (the training loop and, without remote learners, the learner), reserved
where it works while the env runners sample."""


@dataclass(frozen=True)
class Node:
    """One node as Ray reports it (``ray.nodes()``): its CPUs and GPUs."""

    cpus: float
    gpus: float = 0.0
    host: str = ""


@dataclass(frozen=True)
class Layout:
    """The resolved layout: what RLlib is given, and what the cluster had."""

    num_env_runners: int
    num_envs_per_env_runner: int
    num_learners: int
    num_gpus_per_learner: float
    train_batch_size_per_learner: int
    minibatch_size: int
    nodes: int
    cpus: float
    gpus: float
    chosen: dict[str, str] = field(default_factory=dict)
    """Per setting: ``auto`` or ``config``."""
    warnings: tuple[str, ...] = ()
    sample_ahead: bool = False
    """PPO's env runners sample the next batch while the learner updates (jobs.sample_ahead)."""

    def describe(self) -> str:
        """One line: ``2 env runners x 4 envs, learner in the driver on CPU (1 node: 2 CPUs)``."""
        runners = (
            "sampling in the driver"
            if self.num_env_runners == 0
            else f"{self.num_env_runners} env runner{'s' * (self.num_env_runners != 1)}"
        )
        device = f"{self.num_gpus_per_learner:g} GPU" if self.num_gpus_per_learner else "CPU"
        learners = (
            f"learner in the driver on {device}"
            if self.num_learners == 0
            else f"{self.num_learners} learner{'s' * (self.num_learners != 1)} on {device} each"
        )
        cpus = f"{self.cpus:g} CPU{'s' * (self.cpus != 1)}"
        where = f"{self.nodes} node{'s' * (self.nodes != 1)}: {cpus}" + (
            f", {self.gpus:g} GPU{'s' * (self.gpus != 1)}" if self.gpus else ""
        )
        ahead = ", sampling ahead" if self.sample_ahead else ""
        return f"{runners} x {self.num_envs_per_env_runner} envs{ahead}, {learners} ({where})"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "warnings": list(self.warnings)}


def resolve_layout(cfg: Any, nodes: Sequence[Node]) -> Layout:
    """The layout for ``cfg`` (an :class:`~jobs.config.ExperimentConfig`) on ``nodes``.

    ``auto`` learners: one per GPU (1 GPU each) where the cluster has several, the driver's
    on the GPU where it has one, else the driver's on CPU. ``auto`` env runners: one per CPU
    left after the remote learners (and after the driver's, where it learns while they
    sample: APPO, IMPALA, sampling ahead); under two, sampling runs in the driver, since one
    remote runner would only add actor calls to the same turns (BENCHMARKS.md, layout).
    ``auto`` envs per runner: the recipe's 8 envs spread over the runners. The train batch stays the
    recipe's in total: each learner takes its share.

    An explicit setting wins, with a warning when it leaves more than a node's worth of CPUs,
    or a GPU, idle.
    """
    runners_set = cfg.env_runners.num_env_runners
    envs_set = cfg.env_runners.num_envs_per_env_runner
    learners_set = cfg.learners.num_learners
    gpus_set = cfg.learners.num_gpus_per_learner
    cpus = sum(node.cpus for node in nodes)
    gpus = sum(node.gpus for node in nodes)
    chosen = {
        "num_env_runners": AUTO if runners_set == AUTO else "config",
        "num_envs_per_env_runner": AUTO if envs_set == AUTO else "config",
        "num_learners": AUTO if learners_set == AUTO else "config",
        "num_gpus_per_learner": AUTO if gpus_set == AUTO else "config",
        "sample_ahead": AUTO if cfg.env_runners.sample_ahead == AUTO else "config",
    }

    whole_gpus = math.floor(gpus)
    # auto: one learner per GPU (data-parallel); a single GPU's learner stays in the driver
    auto_learners = whole_gpus if whole_gpus > 1 else 0
    learners = auto_learners if learners_set == AUTO else learners_set
    if gpus_set == AUTO:  # a whole GPU each, or a share where learners outnumber GPUs
        per_learner = min(1.0, gpus / max(1, learners)) if gpus else 0.0
    else:
        per_learner = float(gpus_set)

    # PPO taking turns: the runners sample while the driver waits, then the driver learns
    # while they wait, so they share its CPU. Where the two overlap (APPO, IMPALA, PPO
    # sampling ahead) the driver keeps a CPU of its own. Each remote learner is an actor with
    # a CPU of its own. PPO samples ahead (auto) where a runner has a CPU beside the driver's.
    ahead_set = cfg.env_runners.sample_ahead
    spare = math.floor(cpus) - learners - DRIVER_CPUS >= 1
    ahead = cfg.algorithm == "PPO" and (
        ahead_set is True or (ahead_set == AUTO and spare and runners_set != 0)
    )
    overlaps = cfg.algorithm in ("APPO", "IMPALA") or ahead
    reserved = learners + (DRIVER_CPUS if overlaps else 0)
    fits = max(0, math.floor(cpus) - reserved)
    auto_runners = fits if fits >= 2 else (1 if overlaps else 0)
    runners = auto_runners if runners_set == AUTO else runners_set
    envs = math.ceil(RECIPE_ENVS / max(1, runners)) if envs_set == AUTO else envs_set

    shares = max(1, learners)
    batch = max(1, cfg.training.train_batch_size // shares)
    minibatch = max(1, min(batch, cfg.training.minibatch_size // shares))

    warnings = []
    largest_node = max((node.cpus for node in nodes), default=0.0)
    idle_cpus = cpus - reserved - max(runners, 1)  # with none, the driver samples
    if runners_set != AUTO and len(nodes) > 1 and idle_cpus >= largest_node:
        warnings.append(
            f"env_runners.num_env_runners: {runners_set} leaves {idle_cpus:g} of the cluster's "
            f"{cpus:g} CPUs idle, more than a node's worth ({largest_node:g}); set it to auto "
            f"(it would be {fits}), or ask for fewer nodes"
        )
    if gpus and per_learner == 0:
        warnings.append(
            f"the cluster has {gpus:g} GPU(s) but learners.num_gpus_per_learner is "
            f"{gpus_set}: the GPU sits idle; set it to auto, or train on the CPU cluster"
        )
    elif gpus and learners > 1 and learners * per_learner < whole_gpus:
        warnings.append(
            f"learners.num_learners: {learners} x {per_learner:g} GPU uses "
            f"{learners * per_learner:g} of the cluster's {gpus:g} GPUs; set it to auto"
        )
    return Layout(
        num_env_runners=runners,
        num_envs_per_env_runner=envs,
        num_learners=learners,
        num_gpus_per_learner=per_learner,
        train_batch_size_per_learner=batch,
        minibatch_size=minibatch,
        nodes=len(nodes),
        cpus=cpus,
        gpus=gpus,
        chosen=chosen,
        warnings=tuple(warnings),
        sample_ahead=ahead and runners >= 1,
    )


def local_nodes() -> list[Node]:
    """This machine, as Ray would report it before it starts: its CPUs, no GPU counted."""
    import os

    return [Node(cpus=float(os.cpu_count() or 1))]


def pinned_for_trials(cfg: Any) -> Any:
    """A study's trials share the cluster: each keeps the zoo's layout (1 env runner x 8 envs,
    the learner in the driver on CPU) wherever the config says ``auto``. ``sample_ahead:
    auto`` stays: with its CPU for the driver and one for its runner, a PPO trial samples
    ahead, as the zoo does."""
    runners, learners = cfg.env_runners, cfg.learners
    pins = {
        "num_env_runners": 1 if runners.num_env_runners == AUTO else runners.num_env_runners,
        "num_envs_per_env_runner": (
            RECIPE_ENVS
            if runners.num_envs_per_env_runner == AUTO
            else runners.num_envs_per_env_runner
        ),
    }
    learner_pins = {
        "num_learners": 0 if learners.num_learners == AUTO else learners.num_learners,
        "num_gpus_per_learner": (
            0.0 if learners.num_gpus_per_learner == AUTO else learners.num_gpus_per_learner
        ),
    }
    return cfg.model_copy(
        update={
            "env_runners": runners.model_copy(update=pins),
            "learners": learners.model_copy(update=learner_pins),
        }
    )


def env_runner_nodes(algo: Any) -> list[dict[str, Any]]:
    """Where each env runner of a built algorithm runs: its index, Ray node and host."""

    def where(runner: Any) -> dict[str, Any]:
        import socket

        import ray

        return {
            "env_runner": runner.worker_index,
            "node_id": ray.get_runtime_context().get_node_id(),
            "host": socket.gethostname(),
        }

    group = algo.env_runner_group
    remote = group.num_remote_env_runners() > 0
    return sorted(
        group.foreach_env_runner(where, local_env_runner=not remote),
        key=lambda item: item["env_runner"],
    )


def nodes_from_ray(reported: list[dict[str, Any]]) -> list[Node]:
    """The alive nodes among what ``ray.nodes()`` reports."""
    return [
        Node(
            cpus=float(node["Resources"].get("CPU", 0.0)),
            gpus=float(node["Resources"].get("GPU", 0.0)),
            host=node.get("NodeManagerAddress", ""),
        )
        for node in reported
        if node.get("Alive")
    ]


def ray_nodes() -> list[Node]:
    """The alive nodes of the Ray cluster this process is connected to."""
    import ray

    return nodes_from_ray(ray.nodes())


NODES_VARIABLE = "AML_RL_NODES"
"""The job's node count (``invoke submit --nodes``): the driver waits for them to join."""


def cluster_layout(cfg: Any, echo: Callable[[str], None] = print) -> Layout:
    """The layout for ``cfg`` on the Ray this process joined: on a cluster once the job's
    nodes have joined (``AML_RL_NODES``), so that ``auto`` counts every one of them."""
    import os

    expected = int(os.environ.get(NODES_VARIABLE) or 1)
    nodes = wait_for_nodes(expected, echo=echo) if expected > 1 else ray_nodes()
    return resolve_layout(cfg, nodes)


def wait_for_nodes(
    expected: int,
    *,
    timeout_s: float = 600.0,
    poll_s: float = 5.0,
    nodes: Callable[[], list[Node]] = ray_nodes,
    echo: Callable[[str], None] = print,
) -> list[Node]:
    """The cluster's nodes once ``expected`` have joined, or what is there after
    ``timeout_s`` (said, so that a smaller cluster trains rather than waits forever)."""
    waited, said = 0.0, False
    found = nodes()
    while len(found) < expected:
        if waited >= timeout_s:
            echo(
                f"layout: {len(found)} of the job's {expected} nodes joined the Ray cluster in "
                f"{waited:.0f} s; sizing for those"
            )
            return found
        if not said:
            echo(f"layout: waiting for {expected} nodes ({len(found)} joined so far)")
            said = True
        time.sleep(poll_s)
        waited += poll_s
        found = nodes()
    return found
