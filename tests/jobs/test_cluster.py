"""A multi-node job cannot hang: head and workers agree through Ray that the training is over,
whether or not the head's Ray outlives the driver (real Ray processes, as Azure ML starts them)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def head():
    """A head node's Ray as Azure ML starts it (``ray start --head``): it outlives every
    driver, so a worker that waited for it to go would wait until the job's time limit."""
    port = free_port()
    # A temp dir of its own: `ray start` records its address in the temp dir
    # (ray_current_cluster), where every later `ray.init()` on this machine would find it and
    # try to join it, dead. Short, for Ray's socket paths.
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    proc = subprocess.Popen(
        [str(RAY), "start", "--head", f"--port={port}", f"--temp-dir={temp}",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", "--block"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        # `ray start` would otherwise ask for a token that drivers here are not given
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, "the head did not start"
            time.sleep(0.5)
    yield address
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    shutil.rmtree(temp, ignore_errors=True)


def node(rank: int, address: str, *args: str, run_dir: Path) -> subprocess.Popen:
    """``python -m jobs.train`` as node ``rank`` of the job, as Azure ML runs the command."""
    environ = {**os.environ, "AZUREML_CR_NODE_RANK": str(rank), "RAY_ADDRESS": address}
    environ.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.train", "--smoke", "--run-dir", str(run_dir), *args],
        cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_a_worker_leaves_when_the_driver_says_training_is_over_though_the_heads_ray_stays(
    head, tmp_path
):
    worker = node(1, head, run_dir=tmp_path / "run")
    driver = node(0, head, run_dir=tmp_path / "run")
    out, _ = driver.communicate(timeout=400)
    assert driver.returncode == 0, out[-3000:]
    ended = time.monotonic()
    worker_out, _ = worker.communicate(timeout=60)
    flat = " ".join(worker_out.split())
    assert worker.returncode == 0, worker_out[-3000:]
    assert "node 1: the driver says the training is over; leaving" in flat
    assert time.monotonic() - ended < 30  # a poll or two, not the job's time limit
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert "layout: 1 env runner x 2 envs" in " ".join(out.split())


DRIVER = """
import os, time
from jobs.cluster import start_ray
start_ray()
print("joined", flush=True)
time.sleep(600)
"""


def test_a_worker_leaves_when_the_driver_was_killed_before_it_could_say(head, tmp_path):
    worker = node(1, head, run_dir=tmp_path / "run")
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER], cwd=ROOT, env={**os.environ, "RAY_ADDRESS": head},
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert driver.stdout.readline().strip() == "joined"
    time.sleep(6)
    assert worker.poll() is None, "the worker stays while the driver trains"
    driver.kill()  # SIGKILL: no finally, no announcement
    driver.wait()
    worker_out, _ = worker.communicate(timeout=60)
    flat = " ".join(worker_out.split())
    assert worker.returncode == 0, worker_out[-3000:]
    assert "node 1: the driver's Ray job has ended (it could not say so itself); leaving" in flat
