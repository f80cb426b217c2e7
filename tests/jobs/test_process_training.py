"""Training on a process simulator (the C Simple Adder built here): the run, assessment,
a simulator killed mid-run, and no simulator process left after the run, Ctrl-C or SIGKILL."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.jobs.test_train import finish, only_run, start, wait_for
from tests.sims.test_process import build_c_adder, processes_of

pytestmark = pytest.mark.skipif(
    subprocess.run(["which", "cc"], capture_output=True).returncode != 0, reason="no cc"
)

CONFIG = """\
experiment: adder_c
sim: simple_adder_c
sim_package: {package}
training:
  train_batch_size: 400
  minibatch_size: 100
  num_epochs: 2
env_runners:
  num_env_runners: 1
  num_envs_per_env_runner: 2
stop:
  target_return: null
  max_env_steps: {steps}
  max_wall_s: 300
checkpoints:
  every_iterations: 2
  keep: 2
min_time_s_per_iteration: 0
"""


@pytest.fixture(scope="module")
def exe(tmp_path_factory) -> Path:
    return build_c_adder(tmp_path_factory.mktemp("adder_pkg"))


def config(tmp_path: Path, exe: Path, steps: int) -> Path:
    path = tmp_path / "adder_c.yaml"
    path.write_text(CONFIG.format(package=exe.parent, steps=steps))
    return path


def wait_gone(exe: Path, timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while processes_of(exe) and time.monotonic() < deadline:
        time.sleep(0.5)
    return processes_of(exe)


def test_train_smoke_and_assess_on_the_c_simulator_leave_no_process(exe, tmp_path):
    cfg = config(tmp_path, exe, 2000)
    out = finish(start("--config", str(cfg), "--smoke", runs=tmp_path / "runs"))
    run = only_run(tmp_path / "runs")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed", out[-3000:]
    assert summary["env_steps_sampled"] >= 400 and summary["env_step_failures"] == 0
    assert set(summary["assessment"]) == {"agent", "baseline"}
    assert wait_gone(exe) == []
    # invoke assess alone finds the package in the run's config
    assessed = subprocess.run(
        [sys.executable, "-m", "invoke", "assess", str(run), "--out", str(tmp_path / "a")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if k != "AML_RL_SIM_PACKAGE"},
    )  # fmt: skip
    assert assessed.returncode == 0, assessed.stdout[-2000:] + assessed.stderr[-2000:]
    assert (tmp_path / "a" / "kpis.json").is_file()
    assert wait_gone(exe) == []


def test_a_simulator_killed_mid_run_is_a_counted_failure_and_the_run_completes(exe, tmp_path):
    runs = tmp_path / "runs"
    proc = start("--config", str(config(tmp_path, exe, 8000)), runs=runs)
    wait_for(lambda: list(runs.rglob("iter-000002")) and processes_of(exe), proc)
    victim = processes_of(exe)[0]
    os.kill(victim, signal.SIGKILL)
    out = finish(proc)
    summary = json.loads((only_run(runs) / "summary.json").read_text())
    assert summary["status"] == "completed", out[-3000:]
    assert summary["env_steps_sampled"] >= 8000
    assert summary["env_step_failures"] >= 1, summary
    assert victim not in processes_of(exe)
    assert wait_gone(exe) == []


@pytest.mark.parametrize("how", ["ctrl-c", "ctrl-c, sampled in the driver", "sigkill"])
def test_no_simulator_process_outlives_an_interrupted_or_killed_driver(exe, tmp_path, how):
    """In the driver (no env runners: what `auto` picks on a one-CPU machine) the simulators
    are the driver's own children, in the group a terminal's Ctrl-C reaches."""
    runs = tmp_path / "runs"
    in_driver = ["--set", "env_runners.num_env_runners=0"] if "driver" in how else []
    proc = start("--config", str(config(tmp_path, exe, 10_000_000)), *in_driver, runs=runs)
    try:
        wait_for(lambda: list(runs.rglob("iter-000002")) and processes_of(exe), proc)
        assert processes_of(exe)
        if how.startswith("ctrl-c"):  # what a terminal sends: SIGINT to the whole foreground group
            os.killpg(proc.pid, signal.SIGINT)
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 130, out[-3000:]
            summary = json.loads((only_run(runs) / "summary.json").read_text())
            assert summary["status"] == "interrupted"
            assert "simulator faults" not in out, out[-3000:]  # they saw no Ctrl-C of their own
        else:  # the driver alone, as the OOM killer or `kill -9 PID` would
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=60)
        left = wait_gone(exe)
        assert left == [], f"simulator processes left after {how}: {left}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the Ray processes of a killed driver
