"""Training for real: Ray, RLlib, checkpoints, trajectories, kill and resume, faults, Ctrl-C."""

from __future__ import annotations

import json
import os
import re
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
from jobs.train import StopSignal, Terminated
from jobs.trajectories import export_csv, read_trajectories
from tests.conftest import ROOT, copy_run

SUMMARY_KEYS = {
    "env_steps_sampled", "wall_time_s", "episode_return_mean", "iterations", "checkpoint",
    "trajectories", "assessment", "status", "run_id", "env_step_failures", "failed_episodes",
}  # fmt: skip


def _interruptible() -> None:
    """Ctrl-C as a terminal's foreground job gets it, even where the tests themselves run in
    the background: a non-interactive shell starts a job with `&` with SIGINT ignored, which
    its children inherit, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*args: str, runs: Path, path: Path | None = None) -> subprocess.Popen:
    """The real entrypoint in its own session, so that a kill takes its Ray processes too;
    ``path`` holds a user's own simulator module."""
    pythonpath = os.pathsep.join(str(p) for p in (ROOT, path) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.train", "--runs-dir", str(runs), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": pythonpath},  # Ray workers import tests.fixtures too
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=_interruptible,
    )


def finish(proc: subprocess.Popen, timeout: float = 400) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"training did not finish in {timeout} s:\n{out[-3000:]}")
    return out


def left_in_session(sid: int, grace_s: float = 10.0) -> list[str]:
    """The processes still in session ``sid`` (a driver started with start_new_session)
    after a grace for Ray's daemons to see their driver gone."""
    deadline = time.monotonic() + grace_s
    while True:
        left = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:
                continue
            fields = text.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp sid
            if int(fields[3]) == sid and fields[0] != "Z":
                left.append(text.split(")", 1)[0] + ")")
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def run_dirs(runs: Path) -> list[Path]:
    """``runs/<experiment>/<run-id>/``: not a walk of the whole tree, which a live run's
    checkpoint save (a temporary folder renamed) can pull from under it."""
    return [p.parent for p in runs.glob("*/*/config.yaml")]


def only_run(runs: Path) -> Path:
    (run,) = run_dirs(runs)
    return run


def _holds(predicate) -> bool:
    """A predicate over a live run's files; a folder the run renamed mid-look is "not yet"."""
    try:
        return bool(predicate())
    except FileNotFoundError:
        return False


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not _holds(predicate):
        if proc.poll() is not None:
            pytest.fail(f"training exited early ({proc.returncode}):\n{proc.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("timed out waiting for training")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def cstr_run(default_smoke, tmp_path_factory) -> Path:
    return copy_run(default_smoke[0], tmp_path_factory.mktemp("runs"))


@pytest.mark.parametrize("config", ["cstr_appo", "simple_adder_ppo", "cartpole_ppo"])
def test_smoke_training_writes_every_file_of_the_run(smoke_of, config):
    run, out = smoke_of("--config", str(CONFIGS / f"{config}.yaml"))
    check_run_files(run, config, out)


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


def test_sampling_ahead_the_run_keeps_the_episodes_it_trained_on(cstr_run):
    """The runner writes its next batch's file before the learner has that batch; the one
    sampled after the last update is set aside, so the trajectories are what was counted."""
    summary = json.loads((cstr_run / "summary.json").read_text())
    assert summary["layout"]["sample_ahead"] is True
    frame = read_trajectories(cstr_run, phase="train")
    assert frame["episode_id"].nunique() == summary["episodes_total"]
    last = cstr_run / summary["checkpoint"] / "trajectories.json"
    covered = set(json.loads(last.read_text()))
    assert covered == training_files(cstr_run)
    set_aside = {p.name for p in (cstr_run / "trajectories" / "rolled-back").iterdir()}
    assert set_aside and not set_aside & covered  # the batch in flight at the end


def test_export_csv_matches_the_parquet_rows(cstr_run, tmp_path):
    path = export_csv(cstr_run, tmp_path / "t.csv")
    assert path.read_text().count("\n") == len(read_trajectories(cstr_run)) + 1


def newest_checkpoint(run: Path) -> Path | None:
    found = sorted((run / "checkpoints").glob("iter-*"))
    return found[-1] if found else None


def training_files(run: Path) -> set[str]:
    return {p.name for p in (run / "trajectories").glob("*.parquet") if p.name[:5] != "asses"}


def rolled_back_work_exists(runs: Path) -> bool:
    """A checkpoint, and trajectory files written after it: the kill will roll something back."""
    runs_found = run_dirs(runs)
    if not runs_found or (checkpoint := newest_checkpoint(runs_found[0])) is None:
        return False
    covered = set(json.loads((checkpoint / "trajectories.json").read_text()))
    return len(covered) >= 2 and bool(training_files(runs_found[0]) - covered)


def mlflow_steps(run: Path) -> list[int]:
    from mlflow.tracking import MlflowClient

    summary = json.loads((run / "summary.json").read_text())
    client = MlflowClient(tracking_uri=f"sqlite:///{(run / 'mlflow.db').resolve()}")
    history = client.get_metric_history(summary["mlflow_run_id"], "perf/env_steps_per_s")
    return sorted(m.step for m in history)


def assert_exact(run: Path, mlflow_also: tuple[int, ...] = ()) -> dict:
    """What a run that never stopped would hold: each iteration once in metrics.jsonl and in
    MLflow (plus ``mlflow_also``: rolled-back iterations MLflow cannot forget), and exactly the
    episodes the counters count in the trajectories."""
    summary = json.loads((run / "summary.json").read_text())
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    every = list(range(1, summary["iterations"] + 1))
    assert [line["iteration"] for line in lines] == every, "metrics.jsonl: each iteration once"
    assert mlflow_steps(run) == sorted(every + list(mlflow_also)), "MLflow: each iteration once"
    frame = read_trajectories(run, phase="train")
    assert frame["episode_id"].nunique() == summary["episodes_total"]
    return summary


def test_sigkill_between_checkpoints_then_resume_is_exact(tmp_path):
    runs = tmp_path / "runs"
    budget = [
        "--smoke",
        "--set",
        "stop.max_env_steps=1000000",
        "--set",
        "checkpoints.every_iterations=3",
    ]
    proc = start(*budget, runs=runs)
    wait_for(lambda: rolled_back_work_exists(runs), proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    run = only_run(runs)
    checkpoint = newest_checkpoint(run)
    meta = read_checkpoint_meta(checkpoint)
    covered = set(json.loads((checkpoint / "trajectories.json").read_text()))
    after_checkpoint = training_files(run) - covered
    assert after_checkpoint and not (run / "summary.json").exists()
    for path in (run / "trajectories").glob("*.parquet"):
        pq.read_table(path)  # every file from before the kill reads

    target = meta["env_steps"] + 600
    proc = start("--resume", str(run), "--set", f"stop.max_env_steps={target}", runs=runs)
    out = " ".join(finish(proc).split())  # the console wraps long lines
    assert proc.returncode == 0, out[-3000:]
    assert f"resumed at iteration {meta['iteration']}, {meta['env_steps']:,} env steps" in out
    # an env runner can outlive the kill by one sample batch, and sampling ahead, the runner
    # writes its next batch before the learner has it (at the kill, and at the end): count
    # what the resume and the end moved
    rolled_back = {p.name for p in (run / "trajectories" / "rolled-back").iterdir()}
    at_resume = re.search(r"resume: (\d+) trajectory file\(s\) of rolled-back iterations", out)
    at_end = re.search(r"(\d+) trajectory file\(s\) sampled after the last update", out)
    assert at_resume and int(at_resume[1]) >= len(after_checkpoint)
    assert int(at_resume[1]) + (int(at_end[1]) if at_end else 0) == len(rolled_back)
    assert after_checkpoint <= rolled_back and not rolled_back & covered
    summary = assert_exact(run)
    assert summary["sessions"] == 2 and summary["env_steps_sampled"] >= target
    assert summary["wall_time_s"] > meta["wall_time_s"], "wall time counts from the original start"
    assert covered < training_files(run), "the covered files stay, the new session's are added"
    assert any("-s02-" in name for name in training_files(run))
    first_after = json.loads((run / "metrics.jsonl").read_text().splitlines()[meta["iteration"]])
    assert first_after["session"] == 2
    assert 0 < first_after["env_steps"] - meta["env_steps"] <= 400, (
        "steps continue from the checkpoint"
    )


def test_resuming_a_completed_run_changes_nothing_unless_the_budget_is_raised(cstr_run, tmp_path):
    import shutil

    from jobs.train import train

    run = tmp_path / "copy"
    shutil.copytree(cstr_run, run)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    summary = train(resume=run)
    assert summary == json.loads((run / "summary.json").read_text())
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before
    assert not ray.is_initialized(), "nothing started"
    proc = start("--resume", str(run), runs=tmp_path)
    out = finish(proc)
    assert proc.returncode == 0
    assert (
        f"{run} is complete (max_env_steps 400 reached); nothing to do. To train it further, raise its budget"
        in " ".join(out.split())
    )


def test_a_corrupt_newest_checkpoint_is_set_aside_and_the_one_before_used(cstr_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(cstr_run, run)
    newest, previous = sorted((run / "checkpoints").glob("iter-*"))[::-1][:2]
    state = (
        newest / "learner_group" / "learner" / "rl_module" / "default_policy" / "module_state.pkl"
    )
    size = state.stat().st_size
    state.write_bytes(state.read_bytes()[:100])  # cut short, as a kill during a copy leaves it
    meta = read_checkpoint_meta(previous)
    proc = start("--resume", str(run), "--set", "stop.max_env_steps=800", runs=tmp_path)
    out = " ".join(finish(proc).split())
    assert proc.returncode == 0, out[-3000:]
    assert (
        f"{newest} is damaged (learner_group/learner/rl_module/default_policy/module_state.pkl "
        f"is 100 bytes, {size:,} when saved); set aside as .corrupt-{newest.name}, resuming "
        f"from {previous.name}, the one before it"
    ) in out
    assert f"resumed at iteration {meta['iteration']}" in out
    assert (run / "checkpoints" / f".corrupt-{newest.name}").is_dir(), "kept, not deleted"
    rolled_back = tuple(range(meta["iteration"] + 1, int(newest.name.split("-")[1]) + 1))
    assert f"MLflow keeps its values of the rolled-back iterations {rolled_back[0]}-" in out
    assert_exact(run, mlflow_also=rolled_back)


def files_of(run: Path) -> dict[str, bytes]:
    """Every file of a run, byte for byte, but the lock (it names the last session) and the
    session's logs (RUN/logs/: Ray's notes of the attempt itself, kept for its diagnosis)."""
    files = sorted(
        p for p in run.rglob("*")
        if p.is_file() and p.name != ".lock" and p.relative_to(run).parts[0] != "logs"
    )  # fmt: skip
    return {str(p.relative_to(run)): p.read_bytes() for p in files}


def test_a_resume_with_another_network_is_refused_before_ray_and_changes_nothing(
    cstr_run, tmp_path
):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(cstr_run, run)
    before = files_of(run)
    newest = sorted((run / "checkpoints").glob("iter-*"))[-1]
    # a completed run: the network is compared before the budget is
    proc = start("--resume", str(run), "--set", "training.hidden=[128,128]", runs=tmp_path)
    out = " ".join(finish(proc).split())
    assert proc.returncode == 2, out[-3000:]
    assert (
        f"error: {newest} cannot be resumed with {run / 'config.yaml'} --set "
        "training.hidden=[128,128]: training.hidden [64, 64] there, [128, 128] now. A checkpoint "
        "restores only into the network and spaces it was trained with"
    ) in out
    assert "Nothing in the run was changed" in out
    assert "Traceback" not in out and "Started a local Ray instance" not in out
    assert files_of(run) == before, "a refused resume changes nothing, byte for byte"


def test_a_checkpoint_that_fails_to_restore_for_another_reason_is_left_alone(cstr_run, tmp_path):
    """Checkpoints saved by an earlier aml-rl record neither their network nor their files'
    digests: a resume into another network reaches RLlib's restore, which fails, and the
    run's checkpoints are not taken for corrupt (they were all renamed .corrupt-* before)."""
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(cstr_run, run)
    for meta_file in (run / "checkpoints").glob("iter-*/aml_rl.json"):
        meta = json.loads(meta_file.read_text())
        del meta["files"], meta["restores_with"]
        meta_file.write_text(json.dumps(meta))
    before = files_of(run)
    newest = sorted((run / "checkpoints").glob("iter-*"))[-1]
    proc = start(
        "--resume", str(run), "--set", "training.hidden=[32]",
        "--set", "stop.max_env_steps=800", runs=tmp_path,
    )  # fmt: skip
    out = " ".join(finish(proc).split())
    assert proc.returncode == 2, out[-3000:]
    assert f"error: {newest} did not restore (" in out
    assert (
        f"it was saved by an earlier aml-rl, without file digests, so nothing in {run} was "
        "changed. Resume with the aml-rl, Ray and simulator versions it was trained with, or "
        "start a new run"
    ) in out
    assert not list((run / "checkpoints").glob(".corrupt-*"))
    assert files_of(run) == before, "a failed restore changes nothing, byte for byte"


def test_a_kill_during_a_save_or_before_its_metrics_were_written_resumes_exactly(
    cstr_run, tmp_path
):
    """The two states a SIGKILL around a checkpoint save leaves, made exactly: a half-saved
    hidden folder of the next checkpoint, and the newest checkpoint's iterations missing from
    metrics.jsonl and MLflow (killed after the rename, before they were written)."""
    import shutil
    import sqlite3

    run = tmp_path / "copy"
    shutil.copytree(cstr_run, run)
    newest = newest_checkpoint(run)
    meta = read_checkpoint_meta(newest)
    partial = run / "checkpoints" / f".iter-{meta['iteration'] + 1:06d}.tmp"
    shutil.copytree(newest, partial)
    (partial / "aml_rl.json").unlink()  # cut short
    lines = (run / "metrics.jsonl").read_text().splitlines()
    pending = (newest / "metrics.jsonl").read_text().splitlines()
    assert pending and lines[-len(pending) :] == pending
    (run / "metrics.jsonl").write_text("".join(line + "\n" for line in lines[: -len(pending)]))
    first_pending = json.loads(pending[0])["iteration"]
    with sqlite3.connect(run / "mlflow.db") as db:  # as if never logged
        db.execute("DELETE FROM metrics WHERE step >= ?", (first_pending,))
    proc = start("--resume", str(run), "--set", "stop.max_env_steps=800", runs=tmp_path)
    out = " ".join(finish(proc).split())
    assert proc.returncode == 0, out[-3000:]
    assert f"resume: {len(pending)} metrics line(s) restored from it" in out
    assert "resume: 1 partial checkpoint(s) removed" in out
    assert not partial.exists()
    assert_exact(run)


def test_a_second_resume_of_a_running_run_is_refused_naming_the_first(tmp_path):
    runs = tmp_path / "runs"
    proc = start("--smoke", "--set", "stop.max_env_steps=1000000", runs=runs)
    wait_for(lambda: any(runs.rglob("iter-*")), proc)
    run = only_run(runs)
    second = start("--resume", str(run), runs=runs)
    out = " ".join(finish(second, timeout=120).split())
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert second.returncode == 2, out[-3000:]
    assert f"error: {run} is in use by pid {proc.pid} on " in out
    assert "wait for it to finish or stop it, then resume" in out


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MB tmpfs: a disk the test can fill (mounting needs root, as CI runs)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}"
        if os.environ.get("CI") == "true":  # a fault test never skips silently in CI
            pytest.fail(f"{reason}; the full-disk test needs root (CI runs as root)")
        pytest.skip(reason)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(bytes(1 << 20))
                fh.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_stops_the_run_cleanly_and_it_resumes_exactly(small_disk):
    runs = small_disk / "runs"
    proc = start("--smoke", "--set", "stop.max_env_steps=1000000", runs=runs)
    wait_for(lambda: any(runs.rglob("iter-*/aml_rl.json")), proc)
    filler = fill(small_disk)
    out = " ".join(finish(proc, timeout=120).split())
    run = only_run(runs)
    assert proc.returncode == 2, out[-3000:]
    checkpoint = newest_checkpoint(run)
    assert (
        f"error: the disk under {run} is full (OSError); the run stopped, its last good "
        f"checkpoint is checkpoints/{checkpoint.name} and its MLflow run is marked FAILED. Free "
        f"some space, then continue with `invoke train --resume {run}`" in out
    )
    leftovers = [p for p in run.rglob(".*") if p.name not in (".lock",)]
    assert leftovers == [], "no half-written checkpoint, trajectory file or reserve"
    meta = read_checkpoint_meta(checkpoint)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(run / 'mlflow.db').resolve()}")
    (mlflow_run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert mlflow_run.info.status == "FAILED" and mlflow_run.data.tags["status"] == "failed"

    filler.unlink()
    target = meta["env_steps"] + 400
    proc = start("--resume", str(run), "--set", f"stop.max_env_steps={target}", runs=runs)
    out = finish(proc)
    assert proc.returncode == 0, out[-3000:]
    summary = assert_exact(run)
    assert summary["env_steps_sampled"] >= target and summary["sessions"] == 2


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


BROKEN_TANK = """
import dataclasses

from sims import cstr


class BrokenTank(cstr.CSTR):  # its licence server answers an episode's first step only

    def reset(self, config):
        self.n = 0
        return super().reset(config)

    def step(self, action):
        self.n += 1
        if self.n > 1:
            raise ConnectionError("licence server unreachable")
        return super().step(action)


SPEC = dataclasses.replace(
    cstr.SPEC, name="broken_tank", env_id="user/BrokenTank-v0", simulator=BrokenTank
)
"""


def test_a_simulator_whose_every_step_fails_is_refused_before_ray(tmp_path):
    """The lessons' check steps the simulator once per lesson value before Ray starts."""
    (tmp_path / "dead_tank.py").write_text(
        BROKEN_TANK.replace("self.n > 1", "self.n > 0").replace("broken_tank", "dead_tank")
    )
    proc = start("--smoke", "--set", "sim=dead_tank", runs=tmp_path / "runs", path=tmp_path)
    flat = " ".join(finish(proc).split())
    assert proc.returncode == 2, flat[-3000:]
    assert (
        "lessons[0] (transition): Cref_signal 1: the simulator fails at its first step (3 "
        "tries): dead_tank.step() at step 0 of scenario"
    ) in flat
    assert "raised ConnectionError: licence server unreachable" in flat
    assert not (tmp_path / "runs").exists(), "refused before a run directory exists"


def test_a_simulator_that_fails_every_episode_stops_the_run_with_its_error(tmp_path):
    (tmp_path / "broken_tank.py").write_text(BROKEN_TANK)
    runs = tmp_path / "runs"
    proc = start("--smoke", "--set", "sim=broken_tank", runs=runs, path=tmp_path)
    out = finish(proc)
    flat = " ".join(out.split())
    assert proc.returncode == 2, out[-3000:]
    run = only_run(runs)
    assert (
        "error: simulator 'broken_tank' kept failing, so the run stopped: 100 episodes in a row "
        "failed and none completed; the last fault: broken_tank.step() at step 1 of scenario"
    ) in flat
    assert "raised ConnectionError: licence server unreachable." in flat
    logged = read_trajectories(run).dropna(subset=["error"])
    assert len(logged) >= 100, "each failure is a row"
    assert (
        f"{len(logged)} simulator faults are logged ({len(logged)} x broken_tank.step() raised"
        in flat
    )
    assert f"it has no checkpoint yet; summary {run / 'summary.json'} (status failed)" in flat
    assert "Reproduce it with `invoke check-sim --sim broken_tank`" in flat
    # one message: RLlib's tracebacks of each fault go to the run's log, not the console
    assert "Traceback" not in out, out[-3000:]
    assert "licence server unreachable" in "".join(
        p.read_text() for p in (run / "logs").glob("*.log")
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["checkpoint"] is None
    assert summary["fault"]["last_fault"]["error"].endswith("licence server unreachable")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(run / 'mlflow.db').resolve()}")
    (mlflow_run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert mlflow_run.info.status == "FAILED"


LICENCED_REACTOR = """
import dataclasses
import random

from sims import cstr


class LicencedReactor(cstr.CSTR):
    \"\"\"A user's model behind a licence server that drops most connections.\"\"\"

    def reset(self, config):
        self.n = 0
        return super().reset(config)

    def step(self, action):
        self.n += 1
        if self.n == 3 and random.random() < 0.7:
            raise ConnectionError("licence server dropped the connection")
        return super().step(action)


SPEC = dataclasses.replace(
    cstr.SPEC, name="licenced", env_id="user/Licenced-v0", simulator=LicencedReactor
)
"""


def test_a_simulator_that_keeps_failing_ends_the_run_within_its_fault_budget(tmp_path):
    """Most episodes fail, some complete: no count of failures in a row ever ends it, the
    time budget does, with the summary, the last good checkpoint and one message."""
    (tmp_path / "licenced.py").write_text(LICENCED_REACTOR)
    runs = tmp_path / "runs"
    started = time.monotonic()
    proc = start(
        "--smoke", "--set", "sim=licenced", "--set", "stop.max_env_steps=1000000",
        "--set", "stop.max_fault_s=10", "--set", "stop.max_wall_s=3000",
        runs=runs, path=tmp_path,
    )  # fmt: skip
    out = finish(proc)
    took = time.monotonic() - started
    flat = " ".join(out.split())
    assert proc.returncode == 2, out[-3000:]
    run = only_run(runs)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["stop_reason"].startswith("most episodes failed for ")
    assert summary["stop_reason"].endswith(" s (stop.max_fault_s 10)")
    last = summary["fault"]["last_fault"]
    assert last["step"] == 2 and set(last["scenario"]) == {"Cref_signal", "noise_percentage"}
    assert summary["checkpoint"] and (run / summary["checkpoint"]).is_dir(), "the last good one"
    assert (
        "error: simulator 'licenced' kept failing, so the run stopped: most episodes failed" in flat
    )
    assert f"its last good checkpoint is {summary['checkpoint']}" in flat
    assert "Traceback" not in out and out.count("licence server dropped") == 2, out[-3000:]
    assert took < 240, f"a 10 s fault budget took {took:.0f} s (bound for slow machines)"
    assert not left_in_session(proc.pid), "no simulator, env runner or Ray process is left"


@pytest.mark.parametrize(
    ("how", "code", "reason"),
    [(signal.SIGINT, 130, "interrupted (Ctrl-C)"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
    ids=["ctrl-c", "sigterm"],
)
def test_ctrl_c_or_sigterm_saves_a_checkpoint_before_exiting(tmp_path, how, code, reason):
    """SIGTERM is what a container runtime or a scheduler sends to stop a job."""
    proc = start(
        "--smoke",
        "--set",
        "stop.max_env_steps=1000000",
        "--set",
        "checkpoints.every_iterations=1000",
        runs=tmp_path,
    )
    wait_for(lambda: any(tmp_path.rglob("train-*.parquet")), proc)  # training is under way
    os.kill(proc.pid, how)  # the driver only, as a terminal's Ctrl-C reaches it
    out = finish(proc, timeout=120)
    assert proc.returncode == code, out[-3000:]
    run = only_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["stop_reason"] == reason
    assert read_checkpoint_meta(run / summary["checkpoint"])["iteration"] == summary["iterations"]
    assert "stopping at the end of this iteration (again to stop at once)" in out


@pytest.mark.parametrize(
    ("how", "raised"), [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)]
)
def test_a_stop_signal_waits_for_the_iteration_and_a_second_one_does_not(how, raised, capfd):
    # what was there before: Python's handler, or SIG_IGN where the shell started pytest in
    # the background without job control
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    stop = StopSignal()
    with stop:
        os.kill(os.getpid(), how)  # lands mid-iteration: noted, not raised
        with pytest.raises(raised):
            stop.raise_if_received()  # the iteration's end
        with pytest.raises(raised):
            os.kill(os.getpid(), how)  # again: at once
    assert {sig: signal.getsignal(sig) for sig in before} == before  # put back
    assert "stopping at the end of this iteration" in capfd.readouterr().err


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


def test_a_scheduler_stop_on_the_iteration_that_meets_the_budget_leaves_the_run_completed(
    tmp_path,
):
    """Tune's ASHA stops a trial at its last rung and a study's time budget may end just
    then: the run met its own budget in that iteration, so it is completed and assessed."""
    from jobs.train import StopTraining, train

    def stop_always(progress, metrics):
        raise StopTraining("stopped early by the study (its scheduler or time budget)")

    adder = tmp_path / "adder.yaml"
    sets = ["training.train_batch_size=200", "training.minibatch_size=100",
            "env_runners.num_env_runners=0", "env_runners.num_envs_per_env_runner=2",
            "stop.beats_baseline=false", "stop.max_wall_s=300"]  # fmt: skip
    adder.write_text("experiment: adder\nsim: simple_adder\n")
    met = train(adder, sets=[*sets, "stop.max_env_steps=200"], runs_root=tmp_path / "a",
                on_iteration=stop_always)  # fmt: skip
    assert met["status"] == "completed" and met["stop_reason"] == "max_env_steps 200 reached"
    assert met["assessment"]["agent"]["return"] is not None
    early = train(adder, sets=[*sets, "stop.max_env_steps=400"], runs_root=tmp_path / "b",
                  on_iteration=stop_always)  # fmt: skip
    assert early["status"] == "stopped" and early["env_steps_sampled"] < 400
    assert early["stop_reason"] == "stopped early by the study (its scheduler or time budget)"
    assert early["assessment"] is None


def test_run_files_are_readable_as_the_umask_says(tmp_path):
    """summary.json, config.yaml and view.html were owner-only (0600) whatever the umask:
    a team's artifact server or a colleague could not read them."""
    script = (
        "import os, sys\n"
        "os.umask(int(sys.argv[2], 8))\n"
        "from pathlib import Path\n"
        "from jobs.rundir import write_json\n"
        "write_json(Path(sys.argv[1]), {'status': 'completed'})\n"
    )
    for umask, mode in (("022", 0o644), ("027", 0o640), ("077", 0o600)):
        path = tmp_path / f"summary-{umask}.json"
        subprocess.run([sys.executable, "-c", script, str(path), umask], cwd=ROOT, check=True)
        assert path.stat().st_mode & 0o777 == mode, (umask, oct(path.stat().st_mode))
