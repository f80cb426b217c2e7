"""`invoke bench --only viewer`: the run page's build time, size and time to first
render in headless chromium."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import (
    CHROMIUM,
    Benchmark,
)
from jobs.rundir import ACTION, SCENARIO, STATE, Metric


# -- 7. the run viewer ----------------------------------------------------------------------
def _synthetic_run(folder: Path, steps: int) -> Path:
    """A CSTR-shaped run directory with ``steps`` logged training steps (90-step episodes,
    files of ~10k rows), 12 assessment episodes, metrics, summary and KPIs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.rundir import RunDir, write_atomic, write_json

    run = RunDir.create(folder, "viewer_bench")
    write_atomic(run.config, "experiment: viewer_bench\nsim: cstr\n")
    rng = np.random.default_rng(0)
    per_file, length = 10_010, 91  # 110 episodes of 91 rows (reset + 90 steps) per file
    states = ("Ca", "T", "Tc", "Cref", "Tref", "T_error", "Tc_error", "T_error_integral")

    def table(n: int, phase: str, ids: np.ndarray, controller: np.ndarray) -> pa.Table:
        step = np.tile(np.arange(length), n // length)
        columns = {
            "run_id": ["bench"] * n,
            "phase": [phase] * n,
            "controller": controller,
            "env_runner": np.ones(n),
            "episode_id": ids,
            "lesson": ["transition"] * n,
            "step": step,
            "reward": np.where(step == 0, np.nan, rng.random(n)),
            "terminated": np.zeros(n, bool),
            "truncated": step == length - 1,
            "error": [None] * n,
            f"{SCENARIO}Cref_signal": np.full(n, 2.0),
            f"{SCENARIO}noise_percentage": np.zeros(n),
            **{f"{STATE}{s}": rng.normal(size=n).cumsum() for s in states},
            f"{ACTION}dTc": np.where(step == 0, np.nan, rng.uniform(-10, 10, n)),
        }
        return pa.table(columns)

    run.trajectories.mkdir(parents=True)
    written = 0
    while written < steps:
        n = min(per_file, (steps - written + length - 1) // length * length)
        ids = np.repeat([f"t{written + i:09d}" for i in range(0, n, length)], length)
        path = run.trajectories / f"train-s01-{written:09d}.parquet"
        pq.write_table(table(n, "train", ids, np.array(["agent"] * n)), path)
        written += n
    scenarios = [f"s{i}" for i in range(6)]
    ids = np.repeat([f"assess-{s}-{c}" for s in scenarios for c in ("agent", "baseline")], length)
    controllers = np.array([i.rsplit("-", 1)[1] for i in ids])
    pq.write_table(table(len(ids), "assess", ids, controllers), run.trajectories / "assess.parquet")
    with run.metrics.open("w") as fh:
        for i in range(1, 251):
            fh.write(
                json.dumps(
                    {
                        "session": 1,
                        "iteration": i,
                        "env_steps": i * 4000,
                        "wall_time_s": 0.4 * i,
                        Metric.RETURN: i / 3,
                        Metric.STEPS_PER_S: 3000.0,
                    }
                )
                + "\n"
            )
    kpis = {"ca_rms": 0.1, "t_rms": 0.5, "max_T": 370.0, "runaway_count": 0.0}
    write_json(
        run.assessment / "kpis.json",
        {
            "kpis": {"agent": {"return": 84.0, **kpis}, "baseline": {"return": 80.9, **kpis}},
            "units": {"ca_rms": "kmol/m3"},
            "scenarios": [
                {"controller": c, "scenario": s, "return": 80.0, **kpis}
                for s in scenarios
                for c in ("agent", "baseline")
            ],
        },
    )
    write_json(run.summary, {"run_id": run.run_id, "sim": "cstr", "status": "completed"})
    return run.path


def bench_viewer(quick: bool) -> Benchmark:
    from playwright.sync_api import sync_playwright

    from viewer.page import build_page

    steps = 50_000 if quick else 1_000_000
    run = _synthetic_run(Path(tempfile.mkdtemp(prefix="aml-rl-viewer-")), steps)
    start = time.perf_counter()
    page = build_page(run)
    built = time.perf_counter() - start
    size_mb = page.stat().st_size / 1e6
    result = Benchmark(
        "viewer",
        conditions=(
            f"a synthetic CSTR run of {steps:,} logged training steps (90-step episodes) and 12 "
            "assessment episodes; default selection (12 training episodes per lesson); "
            "headless Debian chromium, from navigation to the episode player drawn"
        ),
    )
    result.add("page build time", built, "s", "-", "<= 10 s", built <= 10)
    result.add("page size", size_mb, "MB", "-", "<= 15 MB", size_mb <= 15)
    if not CHROMIUM.exists():
        result.skipped = f"time to first render: no {CHROMIUM} (`apt-get install chromium`)"
        return result
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        start = time.perf_counter()
        tab.goto(page.as_uri())
        tab.wait_for_selector("#player .main-svg")  # the last plot drawn on load
        rendered = time.perf_counter() - start
        browser.close()
    result.add("time to first render", rendered, "s", "-", "<= 3 s", rendered <= 3)
    return result
