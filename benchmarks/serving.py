"""`invoke bench --only serving`: a policy bundle in process, against RLlib's module,
and over HTTP to its container."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks.harness import (
    ROOT,
    Benchmark,
    percentiles,
)

# -- 8. serving a policy bundle -------------------------------------------------------------
WARM_UP = 50  # calls before timing, for each way of acting


def bench_serving(quick: bool) -> Benchmark:
    import requests

    from client.export import export_bundle
    from images.build import ImageError, build_serving_image, docker_client
    from jobs.assess import AgentPolicy
    from jobs.train import train
    from policy_runtime import load
    from sims.registry import resolve

    calls = 300 if quick else 5000
    runs = Path(tempfile.mkdtemp(prefix="aml-rl-serving-"))
    summary = train(
        ROOT / "jobs" / "configs" / "cstr_ppo.yaml",
        smoke=True,
        sets=[
            "trajectories.enabled=false",
            "assessment.enabled=false",
            "stop.beats_baseline=false",
        ],
        runs_root=runs,
    )
    run = runs / summary["experiment"] / summary["run_id"]
    checkpoint = run / summary["checkpoint"]
    bundle = export_bundle(checkpoint, run / "bundle")
    env = resolve("cstr").make_env()
    _, info = env.reset(seed=0)
    states = {k: v for k, v in info["states"].items() if k in env.spec_.observations}
    result = Benchmark(
        "serving",
        conditions=(
            f"the default CSTR policy after a smoke run; {calls} timed calls (after {WARM_UP}) of "
            "one set of states each, "
            "side by side: the bundle in process, RLlib's module in process (restored from the "
            "checkpoint, with the same scaling), and the serving container over HTTP on loopback"
        ),
    )
    policy = load(bundle)
    for _ in range(WARM_UP):  # first calls allocate; measure the steady state
        policy.act(states)
    timings = []
    for _ in range(calls):
        start = time.perf_counter()
        policy.act(states)
        timings.append(time.perf_counter() - start)
    bundle_p50, bundle_p99 = percentiles(timings)
    rllib = AgentPolicy(checkpoint)
    for _ in range(WARM_UP):
        rllib(env._observe(states))
    timings = []
    for _ in range(calls):
        start = time.perf_counter()
        env.to_physical(rllib(env._observe(states)))
        timings.append(time.perf_counter() - start)
    rllib_p50, rllib_p99 = percentiles(timings)
    result.add("bundle act, p50", bundle_p50, "ms", f"RLlib module: {rllib_p50:.3g} ms")
    result.add(
        "bundle act, p99",
        bundle_p99,
        "ms",
        f"RLlib module: {rllib_p99:.3g} ms",
        "<= 0.2 ms",
        bundle_p99 <= 0.2,
    )
    result.add(
        "bundle speed-up over RLlib's inference (p50)",
        rllib_p50 / bundle_p50,
        "x",
        "RLlib module in process",
    )
    try:
        client = docker_client()
    except ImageError as exc:
        result.skipped = f"serving container: {exc}"
        return result
    built = build_serving_image(bundle, client=client, echo=lambda _: None)
    started = time.perf_counter()
    container = client.containers.run(
        built.tag, detach=True, ports={"8000/tcp": ("127.0.0.1", None)}
    )
    try:
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"]["8000/tcp"][0]["HostPort"]
        url = f"http://127.0.0.1:{port}/v1/predict"
        with requests.Session() as http:
            while True:
                try:
                    http.post(url, json={"states": states}, timeout=1).raise_for_status()
                    break
                except requests.ConnectionError:
                    if time.perf_counter() - started > 60:
                        raise
                    time.sleep(0.02)
            cold = time.perf_counter() - started
            for _ in range(WARM_UP):
                http.post(url, json={"states": states}, timeout=5)
            timings = []
            for _ in range(calls):
                start = time.perf_counter()
                http.post(url, json={"states": states}, timeout=5).raise_for_status()
                timings.append(time.perf_counter() - start)
    finally:
        container.remove(force=True)
        client.images.remove(built.tag, force=True)
    http_p50, http_p99 = percentiles(timings)
    result.add("HTTP predict, p50", http_p50, "ms", "bundle in process")
    result.add("HTTP predict, p99", http_p99, "ms", "bundle in process", "<= 5 ms", http_p99 <= 5)
    result.add("cold start to first answer", cold, "s", "-", "<= 2 s", cold <= 2)
    training = [i for i in client.images.list("aml-rl") if "aml-rl:cpu" in i.tags]
    reference = f"training image {training[0].attrs['Size'] / 1e6:.0f} MB" if training else "-"
    size = built.size_bytes / 1e6
    result.add("serving image size", size, "MB", reference, "<= 300 MB", size <= 300)
    return result
