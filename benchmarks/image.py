"""`invoke bench --only image`: the training image's size, cold build and code-only
rebuild."""

from __future__ import annotations

import time

from benchmarks.harness import (
    RAYPROJECT_RAY_CPU_GB,
    ROOT,
    Benchmark,
)


# -- 5. image ------------------------------------------------------------------------------
def bench_image(quick: bool) -> Benchmark:
    from images.build import BuildOptions, ImageError, build_image, docker_client

    result = Benchmark(
        "image",
        conditions="CPU image; base from `invoke build-base` where the public one cannot be pulled",
    )
    try:
        client = docker_client(timeout=900)
    except ImageError as exc:
        result.skipped = str(exc)
        return result
    if quick:
        cold = build_image(BuildOptions(tag="aml-rl:cpu"), client=client, echo=lambda _: None)
        result.add("build time, cached", cold.seconds, "s", "-")
    else:
        cold = build_image(
            BuildOptions(tag="aml-rl:cpu", nocache=True), client=client, echo=lambda _: None
        )
        result.add("cold build time (no cache; base image present)", cold.seconds, "s", "-")
    size_gb = cold.size_bytes / 1e9
    result.add(
        "CPU image size",
        size_gb,
        "GB",
        f"rayproject/ray CPU {RAYPROJECT_RAY_CPU_GB} GB (no torch)",
        "<= 1.5 GB",
        size_gb <= 1.5,
    )
    original = (ROOT / "sims" / "cstr.py").read_bytes()
    touched = build_image(
        BuildOptions(
            tag="aml-rl:cpu-touched",
            overlay={"sims/cstr.py": original + f"\n# {time.time()}\n".encode()},
            revision=f"{time.time_ns():040x}",  # as after a commit: a new revision label
        ),
        client=client,
        echo=lambda _: None,
    )
    result.add(
        "rebuild after a one-line change in sims/ (and a new commit)",
        touched.seconds,
        "s",
        "cold build",
        "<= 15 s",
        touched.seconds <= 15,
    )
    client.api.remove_image("aml-rl:cpu-touched", force=True)
    return result
