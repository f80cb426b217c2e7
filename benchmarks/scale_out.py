"""`invoke bench --only scale_out`: a Ray cluster of training-image containers on one Docker
network, every container held to a share of a CPU (``--cpus``), with 1, 2 and 3 worker
containers: how sampling and training speed grow with the nodes."""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

from benchmarks.harness import Benchmark

CPUS_PER_CONTAINER = 0.5  # head + 3 workers: this machine's 2 CPUs, no more
WORKERS = (1, 2, 3)
ENVS = 8  # per env runner, fixed: each worker's work has the same shape whatever k is

DRIVER = """
import json, sys, time
import ray, torch
from jobs.algorithms import algorithm_config
from jobs.config import load_config
from jobs.layout import resolve_layout, ray_nodes

runners, envs, batch, iterations = (int(a) for a in sys.argv[1:5])
torch.set_num_threads(1)
ray.init(address="auto", logging_level="ERROR")
cfg = load_config("jobs/configs/cstr_ppo.yaml", [
    f"env_runners.num_env_runners={runners}", f"env_runners.num_envs_per_env_runner={envs}",
    f"training.train_batch_size={batch}", "trajectories.enabled=false"])
layout = resolve_layout(cfg, ray_nodes())
algo = algorithm_config(cfg, None, layout).build_algo()
for _ in range(2):
    algo.train()  # warm-up: actor start-up, the first weights
sampled = sampling = learning = total = 0.0
for _ in range(iterations):
    tick = time.perf_counter()
    result = algo.train()
    total += time.perf_counter() - tick
    timers = result["timers"]
    sampled += result["env_runners"]["num_env_steps_sampled"]
    sampling += timers["env_runner_sampling_timer"]
    learning += timers["learner_update_timer"]
hosts = algo.env_runner_group.foreach_env_runner(
    lambda r: __import__("socket").gethostname(), local_env_runner=False)
print("RESULT " + json.dumps({"sampled": sampled, "sampling_s": sampling, "learning_s": learning,
                              "total_s": total, "hosts": sorted(hosts)}))
algo.stop()
"""


def _measure(head: Any, runners: int, batch: int, iterations: int) -> dict[str, Any]:
    done = head.exec_run(
        ["python", "-c", DRIVER, str(runners), str(ENVS), str(batch), str(iterations)],
        environment={"RAY_ADDRESS": "auto"},
    )
    out = done.output.decode()
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if done.exit_code != 0 or not lines:
        raise RuntimeError(f"the scale-out driver failed ({done.exit_code}): {out[-2000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def bench_scale_out(quick: bool) -> Benchmark:
    """Head (driver and learner, no env runner: ``--num-cpus=0``) and k workers (one env
    runner each), each container at ``CPUS_PER_CONTAINER`` CPUs; the env runners' sampling
    rate (env steps over the time the driver waited for samples, the learner's excluded),
    the end-to-end rate and the learner's share of an iteration, with 1, 2 and 3 workers."""
    from images.build import BuildOptions, ImageError, build_image, docker_client

    workers = (1,) if quick else WORKERS
    cpus = 1.0 if quick else CPUS_PER_CONTAINER  # --quick checks the path: head + 1 worker
    batch, iterations = (1000, 1) if quick else (4000, 3)
    result = Benchmark(
        "scale_out",
        conditions=(
            f"CSTR, default recipe, train batch {batch}, {ENVS} envs per env runner, one env "
            f"runner per worker container; head and workers each --cpus {cpus} "
            f"on one Docker network ({os.cpu_count()} CPUs on this machine); {iterations} timed "
            "iteration(s) after 2 warm-up, per cluster size"
        ),
    )
    try:
        client = docker_client(timeout=900)
    except ImageError as exc:
        result.skipped = str(exc)
        return result
    image = build_image(BuildOptions(tag="aml-rl:cpu"), client=client, echo=lambda _: None).tag
    network = client.networks.create(f"aml-rl-scale-{uuid.uuid4().hex[:8]}", driver="bridge")
    limits = {"nano_cpus": int(cpus * 1e9), "shm_size": "512m", "detach": True,
              "network": network.name}  # fmt: skip
    containers = []
    rates: dict[int, dict[str, float]] = {}
    try:
        head = client.containers.run(
            image, ["ray", "start", "--head", "--port=6379", "--num-cpus=0",
                    "--disable-usage-stats", "--block"],
            name=f"{network.name}-head", **limits,
        )  # fmt: skip
        containers.append(head)
        # a worker's `ray start --address` gives up at once on a head not up yet
        _wait_for_nodes(head, 1)
        for k in workers:
            while len(containers) - 1 < k:
                join = ["ray", "start", f"--address={head.name}:6379", "--num-cpus=1", "--block"]
                containers.append(client.containers.run(image, join, **limits))
            _wait_for_nodes(head, k + 1)
            got = _measure(head, k, batch, iterations)
            if len(set(got["hosts"])) != k:
                raise RuntimeError(f"{k} env runners ran on {got['hosts']}, not one per worker")
            rates[k] = {
                "sampling": got["sampled"] / got["sampling_s"],
                "end_to_end": got["sampled"] / got["total_s"],
                "learner_share": got["learning_s"] / got["total_s"],
            }
    finally:
        for container in containers:
            container.remove(force=True)
        network.remove()
    for k, rate in rates.items():
        result.add(f"sampling rate, {k} worker(s)", rate["sampling"], "steps/s", "1 worker")
        result.add(f"end-to-end rate, {k} worker(s)", rate["end_to_end"], "steps/s", "1 worker")
        result.add(
            f"learner's share of an iteration, {k} worker(s)", 100 * rate["learner_share"], "%",
            "the iteration",
        )  # fmt: skip
        if k > 1:
            efficiency = rate["sampling"] / (k * rates[1]["sampling"])
            target = ">= 0.8" if k == 3 else ""
            result.add(
                f"sampling efficiency, {k} workers", efficiency, "x",
                f"{k} x the 1-worker sampling rate", target, efficiency >= 0.8 if target else None,
            )  # fmt: skip
            result.add(
                f"end-to-end efficiency, {k} workers",
                rate["end_to_end"] / (k * rates[1]["end_to_end"]), "x",
                f"{k} x the 1-worker end-to-end rate",
            )  # fmt: skip
    result.reading = reading(rates)
    return result


def reading(rates: dict[int, dict[str, float]]) -> str:
    """What the figures say, computed from them: how sampling and training grow."""
    if len(rates) < 2:
        return ""
    top = max(rates)
    sampling = rates[top]["sampling"] / (top * rates[1]["sampling"])
    end_to_end = rates[top]["end_to_end"] / rates[1]["end_to_end"]
    return (
        f"From 1 to {top} workers the env runners sample {sampling * top:.2f}x as fast "
        f"({sampling:.2f} of linear), but training runs only {end_to_end:.2f}x as fast: the "
        "learner, one process on the head, takes "
        f"{100 * rates[1]['learner_share']:.0f}% of an iteration with 1 worker and "
        f"{100 * rates[top]['learner_share']:.0f}% with {top}, and synchronous PPO waits for it; "
        "more env runners shorten only the sampling share. Past this point a faster learner "
        "(a GPU) or an asynchronous algorithm (APPO, IMPALA, sampling ahead) is the lever."
    )


def _wait_for_nodes(head: Any, expected: int, timeout_s: float = 300) -> None:
    """Until the head's Ray counts ``expected`` alive nodes. Each probe is a Ray driver in a
    container of a fraction of a CPU (seconds of start-up each): hence the generous wait."""
    probe = "import ray; ray.init(address='auto', logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"  # noqa: E501
    deadline = time.monotonic() + timeout_s
    while True:
        said = head.exec_run(["python", "-c", probe]).output.decode().strip().splitlines()
        if said[-1:] == [str(expected)]:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the cluster did not reach {expected} nodes in {timeout_s:.0f} s; the head's "
                f"last count: {said[-1:] or 'nothing'}"
            )
        time.sleep(2)
