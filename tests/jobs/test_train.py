"""Training for real: Ray, RLlib, checkpoints, trajectories, kill and resume, faults, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray

from jobs.assess import ScenarioError, assess, resolve_checkpoint
from jobs.config import CONFIGS
from jobs.rundir import RunError, read_checkpoint_meta
from jobs.trajectories import export_csv, read_trajectories
from tests.conftest import ROOT

SUMMARY_KEYS = {
    "env_steps_sampled", "wall_time_s", "episode_return_mean", "iterations", "checkpoint",
    "trajectories", "assessment", "status", "run_id", "env_step_failures", "failed_episodes",
}  # fmt: skip


def start(*args: str, runs: Path) -> subprocess.Popen:
    """The real entrypoint in its own session, so that a kill takes its Ray processes too."""
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.train", "--runs-dir", str(runs), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # Ray workers import tests.fixtures too
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 400) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"training did not finish in {timeout} s:\n{out[-3000:]}")
    return out


def only_run(runs: Path) -> Path:
    (run,) = [p.parent for p in runs.rglob("config.yaml")]
    return run


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"training exited early ({proc.returncode}):\n{proc.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("timed out waiting for training")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def cstr_run(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    proc = start("--smoke", runs=runs)
    out = finish(proc)
    assert proc.returncode == 0, out[-3000:]
    return only_run(runs)


@pytest.mark.parametrize("config", ["cstr_appo", "simple_adder_ppo", "cartpole_ppo"])
def test_smoke_training_writes_every_file_of_the_run(tmp_path, config):
    proc = start("--smoke", "--config", str(CONFIGS / f"{config}.yaml"), runs=tmp_path)
    out = finish(proc)
    assert proc.returncode == 0, out[-3000:]
    check_run_files(only_run(tmp_path), config, out)


def test_default_smoke_writes_every_file_of_the_run(cstr_run):
    check_run_files(cstr_run, "cstr_ppo", "")
    summary = json.loads((cstr_run / "summary.json").read_text())
    assert set(summary["assessment"]) == {"agent", "baseline"}
    assert set(summary["assessment"]["baseline"]) == {
        "return",
        "ca_rms",
        "t_rms",
        "max_T",
        "runaway_count",
        "dtc_limit_count",
        "sim_failures_count",
    }
    frame = read_trajectories(cstr_run)
    train_rows = frame[frame["phase"] == "train"]
    assert {
        "state_Ca",
        "state_T",
        "state_Tc",
        "state_Cref",
        "state_Tref",
        "action_dTc",
        "scenario_Cref_signal",
    } <= set(frame.columns)
    assert train_rows["action_dTc"].dropna().abs().max() <= 10.0, (
        "actions are logged in physical units"
    )
    assert set(frame["phase"]) == {"train", "assess"}
    assert summary["trajectories"]["rows"] == len(frame)


def check_run_files(run: Path, experiment: str, out: str) -> None:
    assert run.parent.name == experiment
    names = {p.name for p in run.iterdir()}
    assert {
        "config.yaml",
        "checkpoints",
        "trajectories",
        "metrics.jsonl",
        "mlflow.db",
        "summary.json",
        "assessment",
    } <= names
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS
    assert summary["status"] == "completed" and summary["env_steps_sampled"] >= 400
    assert (run / summary["checkpoint"] / "aml_rl.json").is_file()
    assert {"kpis.csv", "kpis.json"} <= {p.name for p in (run / "assessment").iterdir()}
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == list(range(1, summary["iterations"] + 1))
    assert "perf/env_steps_per_s" in lines[-1]
    assert len(read_trajectories(run, phase="train")) > 0
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    history = client.get_metric_history(
        summary["mlflow_run_id"], "env_runners/env_steps_sampled_lifetime"
    )
    assert [m.step for m in history] == list(range(1, summary["iterations"] + 1))


def test_assessment_is_deterministic_and_needs_no_env_runners(cstr_run, tmp_path):
    checkpoint = resolve_checkpoint(cstr_run)
    first = assess(checkpoint, out=tmp_path / "a")
    second = assess(checkpoint, out=tmp_path / "b")
    assert not ray.is_initialized(), "assessment restores only the policy module"
    assert (tmp_path / "a" / "kpis.json").read_text() == (tmp_path / "b" / "kpis.json").read_text()
    summary = json.loads((cstr_run / "summary.json").read_text())
    assert first.to_json()["kpis"] == summary["assessment"] == second.to_json()["kpis"]


def test_assessing_with_another_simulators_scenarios_is_refused(cstr_run, tmp_path):
    scenarios = ROOT / "sims" / "lessons" / "simple_adder_scenarios.yaml"
    with pytest.raises(
        ScenarioError,
        match=r"scenarios\[0\]\.parameters: initial_value not parameters of simulator cstr \(the checkpoint's\)",
    ):
        assess(resolve_checkpoint(cstr_run), scenarios=scenarios, out=tmp_path)
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text("sim: simple_adder\nscenarios:\n  - {name: a, parameters: {}}\n")
    with pytest.raises(
        ScenarioError,
        match=r"these scenarios are for simulator 'simple_adder', but the checkpoint was trained on 'cstr'",
    ):
        assess(resolve_checkpoint(cstr_run), scenarios=tagged, out=tmp_path)


def test_a_folder_that_is_not_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(RunError, match=r"not an aml-rl checkpoint \(no aml_rl\.json\)"):
        resolve_checkpoint(tmp_path)


def test_export_csv_matches_the_parquet_rows(cstr_run, tmp_path):
    path = export_csv(cstr_run, tmp_path / "t.csv")
    assert path.read_text().count("\n") == len(read_trajectories(cstr_run)) + 1


def test_sigkill_then_resume_continues_counters_and_keeps_every_file(tmp_path):
    runs = tmp_path / "runs"
    budget = [
        "--smoke",
        "--set",
        "stop.max_env_steps=1000000",
        "--set",
        "checkpoints.every_iterations=2",
    ]
    proc = start(*budget, runs=runs)

    def checkpoints() -> list[Path]:
        return sorted(runs.glob("*/*/checkpoints/iter-*"))

    wait_for(lambda: len(checkpoints()) >= 2, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    run = only_run(runs)
    before_files = sorted((run / "trajectories").glob("*.parquet"))
    assert before_files, "trajectories were written before the kill"
    for path in before_files:
        pq.read_table(path)  # every file from before the kill reads
    latest = sorted((run / "checkpoints").glob("iter-*"))[-1]
    meta = read_checkpoint_meta(latest)
    assert not (run / "summary.json").exists()

    target = meta["env_steps"] + 600
    proc = start("--resume", str(run), "--set", f"stop.max_env_steps={target}", runs=runs)
    out = finish(proc)
    assert proc.returncode == 0, out[-3000:]
    assert f"resumed at iteration {meta['iteration']}, {meta['env_steps']:,} env steps" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["sessions"] == 2
    assert summary["env_steps_sampled"] >= target
    assert summary["iterations"] > meta["iteration"]
    resumed = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    first_after = next(
        line
        for line in resumed
        if line["iteration"] == meta["iteration"] + 1 and line["env_steps"] > meta["env_steps"]
    )
    assert first_after["env_steps"] - meta["env_steps"] <= 400, (
        "env steps continue from the checkpoint, not from 0"
    )
    assert summary["wall_time_s"] > meta["wall_time_s"], "wall time counts from the original start"
    after_files = sorted((run / "trajectories").glob("*.parquet"))
    assert set(before_files) < set(after_files), "resume appends new files and keeps the old ones"
    assert any("-s02-" in p.name for p in after_files)


def test_a_flaky_simulator_does_not_kill_the_run(tmp_path):
    proc = start(
        "--smoke",
        "--set",
        "sim=tests.fixtures.flaky_sim",
        "--set",
        "stop.max_env_steps=2000",
        runs=tmp_path,
    )
    out = finish(proc)
    assert proc.returncode == 0, out[-3000:]
    summary = json.loads((only_run(tmp_path) / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["env_steps_sampled"] >= 2000
    assert summary["env_step_failures"] >= 1 and summary["failed_episodes"] >= 1
    failures = read_trajectories(only_run(tmp_path)).dropna(subset=["error"])
    assert len(failures) == summary["failed_episodes"]
    # Assessment retried the failed episodes instead of dying (P(no failure in 12) ~ 2e-5).
    assert sum(kpis["sim_failures_count"] for kpis in summary["assessment"].values()) > 0
    assert (
        failures["error"]
        .str.contains("raised RuntimeError: flaky simulator: licence server timed out")
        .all()
    )


def test_ctrl_c_saves_a_checkpoint_before_exiting(tmp_path):
    proc = start(
        "--smoke",
        "--set",
        "stop.max_env_steps=1000000",
        "--set",
        "checkpoints.every_iterations=1000",
        runs=tmp_path,
    )
    wait_for(lambda: any(tmp_path.rglob("metrics.jsonl")), proc)
    os.kill(proc.pid, signal.SIGINT)  # the driver only, as a terminal's Ctrl-C reaches it
    out = finish(proc, timeout=120)
    assert proc.returncode == 130, out[-3000:]
    run = only_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert read_checkpoint_meta(run / summary["checkpoint"])["iteration"] == summary["iterations"]


def test_resume_with_a_checkpoint_from_another_simulator_stops_before_ray(cstr_run, tmp_path):
    import shutil

    from jobs.train import train

    run = tmp_path / "copy"
    shutil.copytree(cstr_run, run)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("sim: cstr", "sim: simple_adder"))
    with pytest.raises(
        RunError,
        match=r"iter-\d+: trained on simulator 'cstr', but .*config\.yaml says 'simple_adder'",
    ):
        train(resume=run)
    assert not ray.is_initialized()


def test_a_relative_runs_dir_works_end_to_end(tmp_path):
    """The README's quick start uses the default, relative `runs/`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.train", "--smoke", "--runs-dir", "runs"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    out = finish(proc)
    assert proc.returncode == 0, out[-3000:]
    run = only_run(tmp_path / "runs")
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["assessment"]) == {"agent", "baseline"}
