"""`invoke bench`: every figure a ratio or comparison taken side by side in one run."""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from jobs.rundir import ACTION, SCENARIO, STATE, Metric

ROOT = Path(__file__).resolve().parents[1]
FULL_OUT = ROOT / "benchmarks"
CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright's own browsers are not used
QUICK_OUT = ROOT / "benchmarks" / "quick"  # --quick never overwrites the published results
RAYPROJECT_RAY_CPU_GB = 2.21  # rayproject/ray CPU image, published uncompressed size (no torch)


@dataclass
class Figure:
    name: str
    value: float | None
    unit: str
    reference: str
    target: str = ""
    met: bool | None = None


@dataclass
class Benchmark:
    name: str
    figures: list[Figure] = field(default_factory=list)
    conditions: str = ""
    skipped: str = ""
    date: str = ""

    def add(
        self,
        name: str,
        value: float | None,
        unit: str,
        reference: str,
        target: str = "",
        met: Any = None,
    ) -> Figure:
        figure = Figure(
            name,
            None if value is None else float(value),
            unit,
            reference,
            target,
            None if met is None else bool(met),
        )
        self.figures.append(figure)
        return figure


# -- 1. simulator step -------------------------------------------------------------------
def _sample_model(y: np.ndarray, t: float, Tc: float) -> list[float]:
    """The right-hand side as the published Bonsai CSTR sample writes it: NumPy on the state."""
    Ca, T = y
    k = 34930800.0 * np.exp(-11843.0 / (1.98588 * T))
    return [
        1.0 * (10.0 - Ca) - k * Ca,
        1.0 * (298.2 - T) + 5960.0 / 500.0 * k * Ca - 0.3 * (T - Tc),
    ]


def bench_sim_step(quick: bool) -> Benchmark:
    """Our RK4 vs per-step scipy calls on the same coolant sequence, interleaved."""
    from scipy.integrate import odeint, solve_ivp

    from sims import cstr

    rng = np.random.default_rng(0)
    steps = 300 if quick else 3000
    start_y = [cstr.CREF_HIGH, cstr.steady_state(cstr.CREF_HIGH)[0]]
    Tc0 = cstr.steady_state(cstr.CREF_HIGH)[1]
    coolant = list(np.clip(Tc0 + np.cumsum(rng.uniform(-3, 3, steps)), 280, 330))

    def ours() -> list[tuple[float, float]]:
        (Ca, T), out = start_y, []
        for Tc in coolant:
            Ca, T = cstr.rk4(Ca, T, Tc, cstr.DT)
            out.append((Ca, T))
        return out

    def sample_odeint(rtol: float | None = None) -> list[tuple[float, float]]:
        y, out = start_y, []
        tolerances = {"rtol": rtol, "atol": rtol} if rtol else {}
        for Tc in coolant:
            y = odeint(_sample_model, y, [0.0, cstr.DT], args=(Tc,), **tolerances)[-1]
            out.append((y[0], y[1]))
        return out

    def per_step_solve_ivp() -> list[tuple[float, float]]:
        y, out = start_y, []
        for Tc in coolant:
            y = solve_ivp(lambda t, v, Tc=Tc: _sample_model(v, t, Tc), (0.0, cstr.DT), y).y[:, -1]
            out.append((y[0], y[1]))
        return out

    candidates = {"ours": ours, "odeint": sample_odeint, "solve_ivp": per_step_solve_ivp}
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(3 if quick else 5):  # interleaved repeats: the machine is shared and noisy
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    exact = sample_odeint(rtol=1e-11)
    error = max(
        max(abs(x[0] - y[0]) / abs(y[0]), abs(x[1] - y[1]) / abs(y[1]))
        for x, y in zip(ours(), exact, strict=True)
    )
    rate = {name: steps / statistics.median(t) for name, t in times.items()}
    result = Benchmark(
        "sim_step",
        conditions=(
            f"{steps} control steps of 0.5 h on one random coolant walk; medians of interleaved "
            "repeats; scipy with the sample's NumPy right-hand side"
        ),
    )
    result.add(
        "CSTR steps/s, project integrator (RK4, Jacobian-sized substeps)",
        rate["ours"],
        "steps/s",
        "-",
    )
    result.add(
        "CSTR steps/s, odeint per step (the published sample's way)", rate["odeint"], "steps/s", "-"
    )
    result.add("CSTR steps/s, solve_ivp per step (RK45)", rate["solve_ivp"], "steps/s", "-")
    ratio = rate["ours"] / rate["odeint"]
    result.add("speed ratio vs odeint per step", ratio, "x", "odeint per step")
    result.add(
        "speed ratio vs solve_ivp per step",
        rate["ours"] / rate["solve_ivp"],
        "x",
        "solve_ivp per step",
    )
    result.add("max relative error", error, "", "odeint, rtol 1e-11", "<= 1e-4", error <= 1e-4)
    return result


# -- 2, 3: training throughput and trajectory-logging overhead -----------------------------
def reference_csv_logger(path: str) -> type:
    """How the published samples log: per batch, reopen a CSV, check its header, append rows."""
    from ray.rllib.callbacks.callbacks import RLlibCallback

    class ReferenceCsvLogger(RLlibCallback):
        def on_episode_end(self, *, episode, env_runner=None, prev_episode_chunks=None, **kwargs):
            chunks = [*(prev_episode_chunks or []), episode]
            rows = []
            for chunk in chunks:
                for info, reward in zip(chunk.get_infos()[1:], chunk.get_rewards(), strict=False):
                    rows.append({**info["states"], **info["action"], "reward": float(reward)})
            if not rows:
                return
            header = list(rows[0])
            exists = os.path.exists(path)
            if exists:
                with open(path, newline="") as fh:
                    if next(csv.reader(fh), None) != header:
                        raise ValueError("CSV header changed")
            with open(path, "a", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=header)
                if not exists:
                    writer.writeheader()
                writer.writerows(rows)

    return ReferenceCsvLogger


def _rate(algo: Any, iterations: int) -> float:
    algo.train()  # warm-up: the first iteration includes compilation and actor start-up
    steps_before = algo.train()["num_env_steps_sampled_lifetime"]
    start = time.perf_counter()
    last = steps_before
    for _ in range(iterations):
        last = algo.train()["num_env_steps_sampled_lifetime"]
    return (last - steps_before) / (time.perf_counter() - start)


def _algo(sets: list[str], callbacks: Any) -> Any:
    from jobs.algorithms import algorithm_config
    from jobs.config import load_config

    cfg = load_config(ROOT / "jobs" / "configs" / "cstr_ppo.yaml", sets)
    return algorithm_config(cfg, callbacks).build_algo()


def bench_throughput(quick: bool) -> Benchmark:
    import ray

    layouts = [(1, 8)] if quick else [(0, 8), (1, 4), (1, 8), (2, 4)]
    iterations = 1 if quick else 5
    batch = 1000 if quick else 4000
    result = Benchmark(
        "training_throughput",
        conditions=(
            f"default CSTR PPO config, train batch {batch}, {iterations} timed iterations "
            f"after 2 warm-up, {os.cpu_count()} CPUs"
        ),
    )
    ray.init(include_dashboard=False, logging_level="ERROR", ignore_reinit_error=True)
    rates = {}
    for runners, envs in layouts:
        sets = [
            f"env_runners.num_env_runners={runners}",
            f"env_runners.num_envs_per_env_runner={envs}",
            f"training.train_batch_size={batch}",
            "training.minibatch_size=500",
        ]
        algo = _algo(sets, None)
        rates[(runners, envs)] = _rate(algo, iterations)
        algo.stop()
        result.add(
            f"env steps/s, {runners} runner(s) x {envs} envs",
            rates[(runners, envs)],
            "steps/s",
            "other layouts",
        )
    best = max(rates, key=rates.get)
    result.add(
        f"best layout: {best[0]} runner(s) x {best[1]} envs",
        rates[best],
        "steps/s",
        "MACHINE.md: PPO CartPole ~2,800",
        ">= 2,000",
        rates[best] >= 2000,
    )
    return result


def bench_process_sim(quick: bool) -> Benchmark:
    """The C Simple Adder as a process simulator against the in-process Python one: the
    protocol's round trip per step, and training throughput with the same config."""
    import shutil

    import ray

    from jobs.algorithms import algorithm_config
    from jobs.config import load_config
    from sims.package import use_package
    from sims.registry import resolve

    result = Benchmark("process_simulator")
    if shutil.which("cc") is None:
        result.skipped = "no C compiler (cc) to build sims/native/simple_adder.c"
        return result
    package = Path(tempfile.mkdtemp(prefix="aml-rl-adder-c-"))
    subprocess.run(
        ["cc", "-O2", "-o", str(package / "simple_adder"),
         str(ROOT / "sims" / "native" / "simple_adder.c"), "-lm"],
        check=True,
    )  # fmt: skip
    use_package(package)  # for the environments made here; the env runners get it below
    steps = 2000 if quick else 20000
    action = np.array([0.1], dtype=np.float32)
    for sim, label in (("simple_adder_c", "C process"), ("simple_adder", "Python in process")):
        env = resolve(sim).make_env()
        env.reset(seed=0)
        for _ in range(200):  # warm-up (and the process's start)
            if any(env.step(action)[2:4]):
                env.reset()
        seconds = []
        for _ in range(steps):
            start = time.perf_counter()
            _, _, terminated, truncated, _ = env.step(action)
            seconds.append(time.perf_counter() - start)
            if terminated or truncated:
                env.reset()
        env.close()
        p50, p99 = _percentiles(seconds)  # milliseconds
        result.add(f"env.step p50, {label}", p50 * 1e3, "µs", "the other simulator")
        result.add(f"env.step p99, {label}", p99 * 1e3, "µs", "the other simulator")

    # a vector of 4 C simulators: all requests, then all answers, against one by one
    import gymnasium as gym

    from sims.registry import RLlibEnv

    config = {"sim": "simple_adder_c", "lessons": None, "lesson": 0}
    vectors = {
        "pipelined": RLlibEnv({**config, "num_envs": 4}),
        "one by one (gymnasium SyncVectorEnv)": gym.vector.SyncVectorEnv(
            [functools.partial(RLlibEnv, config)] * 4
        ),
    }
    actions = np.zeros((4, 1), dtype=np.float32)
    for label, vector in vectors.items():
        vector.reset(seed=0)
        seconds = []
        for _ in range(steps // 4):
            start = time.perf_counter()
            vector.step(actions)
            seconds.append(time.perf_counter() - start)
        vector.close()
        result.add(
            f"vector step p50, 4 C processes, {label}", _percentiles(seconds)[0] * 1e3, "µs",
            "the other way",
        )  # fmt: skip

    ray.init(include_dashboard=False, logging_level="ERROR", ignore_reinit_error=True)
    iterations = 1 if quick else 5
    rates = {}
    for sim in ("simple_adder", "simple_adder_c"):
        cfg = load_config(
            ROOT / "jobs" / "configs" / "simple_adder_ppo.yaml",
            [f"sim={sim}", "env_runners.num_env_runners=1", "env_runners.num_envs_per_env_runner=4",
             "training.train_batch_size=4000", f"sim_package={package}"],
        )  # fmt: skip
        algo = algorithm_config(cfg, None).build_algo()
        rates[sim] = _rate(algo, iterations)
        algo.stop()
        result.add(f"training env steps/s, {sim}", rates[sim], "steps/s", "-")
    ratio = rates["simple_adder_c"] / rates["simple_adder"]
    result.add(
        "C process / in-process Python throughput", ratio, "x",
        "in-process Python Simple Adder, same config, same run", ">= 0.8", ratio >= 0.8,
    )  # fmt: skip
    result.conditions = (
        f"{steps:,} timed env.step calls after 200 warm-up; training: simple_adder_ppo.yaml, "
        f"1 env runner x 4 envs, train batch 4000, {iterations} timed iterations after 2 "
        "warm-up"
    )
    return result


def bench_logging_overhead(quick: bool) -> Benchmark:
    import ray

    from jobs.callbacks import TrajectoryLogger

    repeats, iterations = (1, 1) if quick else (5, 8)
    folder = Path(tempfile.mkdtemp(prefix="aml-rl-bench-"))
    variants: dict[str, Callable[[], Any]] = {
        "off": lambda: None,
        "project": lambda: functools.partial(
            TrajectoryLogger,
            folder=str(folder / "parquet"),
            sim="cstr",
            run_id="bench",
            session="b",
        ),
        "reference CSV": lambda: reference_csv_logger(str(folder / "reference.csv")),
    }
    ray.init(include_dashboard=False, logging_level="ERROR", ignore_reinit_error=True)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    sets = [
        "env_runners.num_env_runners=1",
        "env_runners.num_envs_per_env_runner=8",
        f"training.train_batch_size={1000 if quick else 4000}",
    ]
    for _ in range(repeats):
        for name, make in variants.items():  # interleaved: off, project, reference, off, ...
            algo = _algo(sets, make())
            rates[name].append(_rate(algo, iterations))
            algo.stop()
    off = statistics.median(rates["off"])
    result = Benchmark(
        "trajectory_logging_overhead",
        conditions=(
            f"{repeats} interleaved repeats x {iterations} iterations, 1 runner x 8 envs; "
            "every episode logged"
        ),
    )
    result.add("env steps/s, logging off", off, "steps/s", "-")
    # How far apart identical runs land here: overheads inside this spread are noise.
    spread = 100.0 * (max(rates["off"]) - min(rates["off"])) / off
    result.add("spread of the logging-off repeats (max - min)", spread, "%", "logging off")
    for name in ("project", "reference CSV"):
        overhead = 100.0 * (1.0 - statistics.median(rates[name]) / off)
        target = "<= 5%" if name == "project" else ""
        result.add(
            f"overhead, {name} logger",
            overhead,
            "%",
            "logging off",
            target,
            overhead <= 5.0 if name == "project" else None,
        )
    return result


# -- 4. control quality ------------------------------------------------------------------
def _time_to_beat_pi(
    config: Path, budget_s: float, check_every: int, runs_root: Path
) -> tuple[tuple[float, int] | None, dict[str, Any]]:
    """Train ``config`` for ``budget_s``, assessing every ``check_every`` iterations; the
    first (training seconds, env steps) at which Ca RMS beats PI with no runaway."""
    from jobs.assess import assess
    from jobs.train import train

    beaten: list[tuple[float, int]] = []

    def on_checkpoint(checkpoint: Path, progress: Any) -> None:
        if beaten:
            return
        kpis = assess(checkpoint, out=checkpoint.parent / "assessment").to_json()["kpis"]
        agent, baseline = kpis["agent"], kpis["baseline"]
        if agent["ca_rms"] < baseline["ca_rms"] and agent["runaway_count"] == 0:
            beaten.append((progress.wall_time_s, progress.env_steps))

    # The same training function as `invoke train`, with the benchmark's budget.
    summary = train(
        config,
        sets=[
            "trajectories.enabled=false",
            "stop.beats_baseline=false",  # the whole budget: does it still beat PI at its end?
            f"stop.max_wall_s={budget_s}",
            "stop.max_env_steps=null",
            "stop.target_return=null",
            f"checkpoints.every_iterations={check_every}",
        ],
        runs_root=runs_root,
        on_checkpoint=on_checkpoint,
    )
    return (beaten[0] if beaten else None), summary


def bench_control(quick: bool) -> Benchmark:
    budget_s = 45.0 if quick else 600.0
    check_every = 5 if quick else 20
    first, summary = _time_to_beat_pi(
        ROOT / "jobs" / "configs" / "cstr_ppo.yaml",
        budget_s,
        check_every,
        Path(tempfile.mkdtemp(prefix="aml-rl-control-")),
    )
    kpis = summary["assessment"]
    result = Benchmark(
        "control_quality",
        conditions=(
            f"default CSTR PPO config, {budget_s:.0f} s training budget, assessed every "
            f"{check_every} iterations on sims/lessons/cstr_scenarios.yaml"
        ),
    )
    result.add(
        "training time until Ca RMS beats PI",
        first[0] if first else None,
        "s",
        "PI baseline",
        "<= 600 s with 0 runaways",
        first is not None and first[0] <= 600,
    )
    result.add(
        "env steps until Ca RMS beats PI", first[1] if first else None, "steps", "PI baseline"
    )
    result.add("env steps in the budget", summary["env_steps_sampled"], "steps", "-")
    for key in ("return", "ca_rms", "t_rms", "max_T", "runaway_count"):
        result.add(f"policy {key}", kpis["agent"][key], "", f"PI: {kpis['baseline'][key]:.4g}")
    return result


# What the CSTR study searches: the keys the default config's comments say were tuned by hand.
def bench_tune(quick: bool) -> Benchmark:
    """A study on the simulator the default recipe is slowest on (the CSTR, in the zoo),
    over the space ``invoke new-sim`` writes, its first trial the config as given; then the
    default and the study's best each trained on three seeds the study did not use: env
    steps to the verdict, as the zoo counts them (benchmarks/zoo.py)."""
    import yaml

    from benchmarks.zoo import BUDGET, to_verdict
    from jobs.tune import run_study
    from sims.scaffold import recipe_space

    samples, cap = (2, 8_000) if quick else (8, 320_000)
    seeds = () if quick else (1, 2, 3)
    work = Path(tempfile.mkdtemp(prefix="aml-rl-tune-"))
    default = ROOT / "jobs" / "configs" / "cstr_ppo.yaml"
    base = yaml.safe_load(default.read_text())
    base["stop"].update(max_env_steps=cap, max_wall_s=None)  # env steps decide, not the load
    base["trajectories"] = {"enabled": False}
    (work / "cstr.yaml").write_text(yaml.safe_dump(base))
    space = recipe_space("cstr")
    (work / "space.yaml").write_text(space)
    study = run_study(
        space=work / "space.yaml", config=work / "cstr.yaml", samples=samples,
        scheduler="fifo", runs_root=work / "runs",
    )  # fmt: skip
    best = study["best"]
    given = next((t for t in study["trials"] if t["given"]), None)
    keys = list(yaml.safe_load(space))
    result = Benchmark(
        "tune",
        conditions=(
            f"CSTR (the zoo member the default recipe needs most env steps on), study of "
            f"{samples} trials over the space new-sim writes ({', '.join(keys)}), FIFO, the "
            f"first trial the config as given, each trial stopped on the verdict or at "
            f"{cap:,} env steps (seed 0); then the default and the best config trained on "
            f"seeds {', '.join(map(str, seeds)) or '-'} to the verdict ({BUDGET:,} env steps "
            f"at most); records in {work}"
        ),
    )
    result.add("trials run", len(study["trials"]), "trials", f"{samples} sampled")
    beat = sum(t["beaten_at"] is not None for t in study["trials"])
    result.add("trials that beat the baseline", beat, "trials", f"within {cap:,} env steps")
    if given is not None:
        result.add(
            "config as given: env steps to the verdict (study)", given["beaten_at"], "steps",
            f"{given['trial']}",
        )  # fmt: skip
    result.add(
        "best trial: env steps to the verdict (study)", best["beaten_at"], "steps", best["trial"]
    )
    for key, value in best["params"].items():
        result.add(
            f"best {key}", value, "", "default: " + str((given or {}).get("params", {}).get(key))
        )
    best_config = work / "runs" / "cstr_ppo" / study["study"] / "best.yaml"
    steps: dict[str, list[int | None]] = {"default": [], "best": []}
    for seed in seeds:
        for name, config in (("default", default), ("best", best_config)):
            found = to_verdict(config, seed, BUDGET, work / f"{name}-{seed}")
            steps[name].append(found["env_steps_to_verdict"])
            result.add(
                f"seed {seed}: env steps to the verdict ({name} config)",
                found["env_steps_to_verdict"], "steps", "not reached = did not beat it",
            )  # fmt: skip
    if seeds and None not in steps["default"] + steps["best"]:
        ratio = sum(steps["best"]) / sum(steps["default"])  # type: ignore[arg-type]
        result.add(
            f"best / default env steps to the verdict, seeds {', '.join(map(str, seeds))}",
            ratio, "x", "default config, same run", "< 1: the study found a faster config",
            ratio < 1,
        )  # fmt: skip
    return result


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


# -- 6. start-up ---------------------------------------------------------------------------
def bench_startup(quick: bool) -> Benchmark:
    runs = Path(tempfile.mkdtemp(prefix="aml-rl-startup-"))
    spawn = time.time()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.train",
            "--smoke",
            "--runs-dir",
            str(runs),
            "--set",
            "assessment.enabled=false",
            "--set",
            "stop.beats_baseline=false",  # it assesses; start-up is measured without it
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(
            "start-up benchmark: smoke training failed:\n"
            f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    (summary,) = runs.rglob("summary.json")
    t = json.loads(summary.read_text())["timeline"]
    total = t["first_iteration"] - spawn
    result = Benchmark(
        "startup",
        conditions="`python -m jobs.train --smoke`, from process spawn to the first iteration",
    )
    result.add("spawn to first iteration", total, "s", "-")
    parts = {
        "importing (Python, Ray, RLlib, torch) and validating the config": t["prepared"] - spawn,
        "starting Ray": t["ray_started"] - t["prepared"],
        "building the algorithm (env runners, learner)": t["algorithm_built"] - t["ray_started"],
        "first iteration": t["first_iteration"] - t["algorithm_built"],
    }
    for name, seconds in parts.items():
        result.add(f"share: {name}", 100.0 * seconds / total, "%", "spawn to first iteration")
    return result


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


# -- 8. serving a policy bundle -------------------------------------------------------------
def _percentiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    values = np.asarray(seconds) * 1e3
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


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
    bundle_p50, bundle_p99 = _percentiles(timings)
    rllib = AgentPolicy(checkpoint)
    for _ in range(WARM_UP):
        rllib(env._observe(states))
    timings = []
    for _ in range(calls):
        start = time.perf_counter()
        env.to_physical(rllib(env._observe(states)))
        timings.append(time.perf_counter() - start)
    rllib_p50, rllib_p99 = _percentiles(timings)
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
    http_p50, http_p99 = _percentiles(timings)
    result.add("HTTP predict, p50", http_p50, "ms", "bundle in process")
    result.add("HTTP predict, p99", http_p99, "ms", "bundle in process", "<= 5 ms", http_p99 <= 5)
    result.add("cold start to first answer", cold, "s", "-", "<= 2 s", cold <= 2)
    training = [i for i in client.images.list("aml-rl") if "aml-rl:cpu" in i.tags]
    reference = f"training image {training[0].attrs['Size'] / 1e6:.0f} MB" if training else "-"
    size = built.size_bytes / 1e6
    result.add("serving image size", size, "MB", reference, "<= 300 MB", size <= 300)
    return result


def bench_zoo(quick: bool) -> Benchmark:
    """The default recipe on every zoo simulator and the CSTR, three seeds, beside SB3's PPO:
    env steps to the verdict (benchmarks/zoo.py)."""
    from benchmarks.zoo import run_zoo

    result = Benchmark("zoo")
    result.conditions = run_zoo(quick, result.add)
    return result


BENCHMARKS: dict[str, Callable[[bool], Benchmark]] = {
    "sim_step": bench_sim_step,
    "training_throughput": bench_throughput,
    "trajectory_logging_overhead": bench_logging_overhead,
    "control_quality": bench_control,
    "image": bench_image,
    "startup": bench_startup,
    "viewer": bench_viewer,
    "serving": bench_serving,
    "tune": bench_tune,
    "process_simulator": bench_process_sim,
    "zoo": bench_zoo,
}


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = int(
        next(
            line.split()[1]
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    )
    return {"cpu_model": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_kb / 2**20, 1)}


def versions() -> dict[str, str]:
    import ray
    import torch

    return {"python": platform.python_version(), "ray": ray.__version__, "torch": torch.__version__}


def run(
    quick: bool = False, only: str | None = None, echo: Callable[[str], None] = print
) -> dict[str, Any]:
    if only is not None and only not in BENCHMARKS:
        raise ValueError(f"--only {only!r}: no such benchmark; choose from {', '.join(BENCHMARKS)}")
    selected = {only: BENCHMARKS[only]} if only else BENCHMARKS
    results = []
    for name, fn in selected.items():
        echo(f"bench: {name} ...")
        start = time.perf_counter()
        result = fn(quick)
        result.date = datetime.now(UTC).isoformat(timespec="seconds")
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


def _fmt(value: float | None) -> str:
    if value is None:
        return "not reached"
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def render_markdown(report: dict[str, Any]) -> str:
    m, v = report["machine"], report["versions"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `invoke bench` from `benchmarks/results.json`; do not edit by hand.",
        "Every figure is taken side by side with its reference in the same run.",
        "",
        f"- Last run: {report['date']}{' (quick run)' if report['quick'] else ''}; each benchmark "
        "below says when it was measured",
        f"- Machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_gb']} GiB",
        f"- Versions: Python {v['python']}, Ray {v['ray']}, torch {v['torch']}",
        "",
    ]
    for bench in report["benchmarks"]:
        lines += [f"## {bench['name']}", ""]
        if bench["skipped"]:
            lines += [f"Skipped: {bench['skipped']}", ""]
            continue
        lines += [
            f"Measured {bench.get('date', report['date'])}. Conditions: {bench['conditions']}",
            "",
            "| figure | value | unit | reference | target | met |",
            "|---|---|---|---|---|---|",
        ]
        for f in bench["figures"]:
            met = {True: "yes", False: "**MISSED**", None: ""}[f["met"]]
            lines.append(
                f"| {f['name']} | {_fmt(f['value'])} | {f['unit']} | {f['reference']} "
                f"| {f['target']} | {met} |"
            )
        lines.append("")
    return "\n".join(lines)
