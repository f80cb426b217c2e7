"""`invoke bench`: every figure a ratio or comparison taken side by side in one run; each
benchmark is a module of this package over the shared harness (benchmarks/harness.py)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from benchmarks.control_quality import bench_control
from benchmarks.harness import (
    FULL_OUT,
    QUICK_OUT,
    ROOT,
    Benchmark,
    machine,
    render_markdown,
    versions,
)
from benchmarks.image import bench_image
from benchmarks.layout import bench_layout
from benchmarks.logging_overhead import bench_logging_overhead
from benchmarks.page_viewer import bench_viewer
from benchmarks.process_simulator import bench_process_sim
from benchmarks.profile import bench_profile
from benchmarks.sample_ahead import bench_sample_ahead
from benchmarks.scale_out import bench_scale_out
from benchmarks.serving import bench_serving
from benchmarks.sim_step import bench_sim_step
from benchmarks.startup import bench_startup
from benchmarks.throughput import bench_throughput
from benchmarks.tune_study import bench_tune
from benchmarks.warm_start import bench_warm_start
from benchmarks.zoo import bench_zoo

__all__ = ["BENCHMARKS", "render_markdown", "run"]

BENCHMARKS: dict[str, Callable[[bool], Benchmark]] = {
    "sim_step": bench_sim_step,
    "training_throughput": bench_throughput,
    "layout": bench_layout,
    "profile": bench_profile,
    "trajectory_logging_overhead": bench_logging_overhead,
    "control_quality": bench_control,
    "sample_ahead": bench_sample_ahead,
    "warm_start": bench_warm_start,
    "image": bench_image,
    "scale_out": bench_scale_out,
    "startup": bench_startup,
    "viewer": bench_viewer,
    "serving": bench_serving,
    "tune": bench_tune,
    "process_simulator": bench_process_sim,
    "zoo": bench_zoo,
}


def run(
    quick: bool = False, only: str | None = None, echo: Callable[[str], None] = print
) -> dict[str, Any]:
    if only is not None and only not in BENCHMARKS:
        raise ValueError(f"--only {only!r}: no such benchmark; choose from {', '.join(BENCHMARKS)}")
    selected = {only: BENCHMARKS[only]} if only else BENCHMARKS
    results = []
    for name, fn in selected.items():
        echo(f"bench: {name} ...")
        start, load = time.perf_counter(), os.getloadavg()[0]
        result = fn(quick)
        result.date = datetime.now(UTC).isoformat(timespec="seconds")
        result.load = [round(load, 2), round(os.getloadavg()[0], 2)]
        echo(f"bench: {name} done in {time.perf_counter() - start:.0f} s")
        results.append(asdict(result))
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": machine(),
        "versions": versions(),
        "benchmarks": results,
    }
    out = QUICK_OUT if quick else FULL_OUT
    out.mkdir(parents=True, exist_ok=True)
    if only and (out / "results.json").exists():  # keep the other benchmarks' latest figures
        previous = json.loads((out / "results.json").read_text())
        kept = [
            {**b, "date": b.get("date") or previous["date"]}
            for b in previous["benchmarks"]
            if b["name"] != only
        ]
        report["benchmarks"] = kept + results
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = render_markdown(report)
    (ROOT / "BENCHMARKS.md" if not quick else out / "BENCHMARKS.md").write_text(markdown)
    return report
