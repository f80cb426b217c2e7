"""A real study: Ray Tune over a user's config, trials as runs, ASHA, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from jobs.config import load_config
from jobs.rundir import RunError
from jobs.tune.results import rank
from jobs.tune.rows import TrialRow
from jobs.tune.study import Study
from jobs.tune.trial import same_values_or_refuse
from tests.conftest import ROOT

# A user's experiment: the Simple Adder on a budget of seconds, sampling in the driver so
# that each trial takes one CPU and two run at a time here.
CONFIG = """\
experiment: adder_study
sim: simple_adder
training:
  lr: 0.0003
  train_batch_size: 200
  minibatch_size: 100
  num_epochs: 2
env_runners:
  num_env_runners: 0
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
SPACE = """\
training.lr: {loguniform: [1.0e-5, 1.0e-3]}
training.num_epochs: {choice: [1, 3]}
"""


def start(work: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.tune", "--runs-dir", str(work / "runs"), *args],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
            "PYTHONPATH": str(ROOT),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a kill takes the study's Ray processes too
    )


def finish(proc: subprocess.Popen, timeout: float = 420) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the study did not finish in {timeout} s:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-4000:]
    return out


def write_inputs(work: Path, steps: int, space: str = SPACE) -> tuple[Path, Path]:
    work.mkdir(parents=True, exist_ok=True)
    (work / "adder.yaml").write_text(CONFIG.format(steps=steps))
    (work / "space.yaml").write_text(space)
    return work / "adder.yaml", work / "space.yaml"


def only_study(work: Path) -> Path:
    (study,) = (work / "runs" / "adder_study").glob("study-*")
    return study


def iterations(trial: Path) -> list[int]:
    lines = (trial / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["iteration"] for line in lines]


def children(study: Path) -> dict[str, mlflow.entities.Run]:
    """The study's MLflow child runs by name, superseded first attempts left out."""
    client = mlflow.tracking.MlflowClient(f"sqlite:///{study / 'mlflow.db'}")
    parent = Study.read(study).mlflow_run_id
    experiment = client.get_experiment_by_name("adder_study").experiment_id
    runs = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    live = [r for r in runs if r.data.tags.get("aml_rl.superseded") != "true"]
    names = [r.info.run_name for r in live]
    assert len(names) == len(set(names)), f"a trial counted twice in MLflow: {sorted(names)}"
    return {r.info.run_name: r for r in live}


def check_trials_exact(study: Path, samples: int) -> list[dict]:
    """Every trial a whole run, each iteration once in metrics.jsonl and in MLflow."""
    trials = sorted(study.glob("trial-*"))
    assert [t.name for t in trials] == [f"trial-{i:03d}" for i in range(samples)]
    client = mlflow.tracking.MlflowClient(f"sqlite:///{study / 'mlflow.db'}")
    runs = children(study)
    assert sorted(runs) == [t.name for t in trials]
    summaries = []
    for trial in trials:
        summary = json.loads((trial / "summary.json").read_text())
        assert summary["status"] in ("completed", "stopped"), summary
        seen = iterations(trial)
        assert seen == list(range(1, summary["iterations"] + 1)), (trial.name, seen)
        history = client.get_metric_history(runs[trial.name].info.run_id, "perf/env_steps_per_s")
        assert sorted(m.step for m in history) == seen, trial.name
        summaries.append(summary)
    return summaries


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("tune")
    config, space = write_inputs(work, steps=2400)
    out = finish(start(work, "--config", str(config), "--space", str(space), "--samples", "4"))
    return only_study(work), out


def test_every_trial_is_an_ordinary_run_with_its_sampled_values(study):
    folder, out = study
    summaries = check_trials_exact(folder, samples=4)
    given, *sampled = sorted(folder.glob("trial-*"))
    cfg = load_config(given / "config.yaml")  # the first trial: the config's own values
    assert (cfg.training.lr, cfg.training.num_epochs) == (0.0003, 2)
    for trial in sampled:
        cfg = load_config(trial / "config.yaml")  # the run's own config, as --resume reads it
        assert 1e-5 <= cfg.training.lr <= 1e-3
        assert cfg.training.num_epochs in (1, 3)
        assert cfg.sim == "simple_adder" and cfg.training.train_batch_size == 200
    for trial in (given, *sampled):
        assert (trial / "checkpoints").is_dir() and any((trial / "trajectories").iterdir())
    assert len({s["run_id"] for s in summaries}) == 4
    assert "each trial takes 1 CPU(s) (1 driver + 0 env runner(s)); 2 at a time on" in out
    assert "the first trial trains the config as given, the others sampled values" in out


def test_asha_stops_weak_trials_as_runs_that_still_write_their_summary(study):
    folder, _ = study
    summaries = [json.loads(p.read_text()) for p in folder.glob("trial-*/summary.json")]
    completed = [s for s in summaries if s["status"] == "completed"]
    stopped = [s for s in summaries if s["status"] == "stopped"]
    assert completed, "no trial reached its budget"
    for s in completed:
        assert s["env_steps_sampled"] >= 2400 and s["assessment"]["agent"]["return"] is not None
    for s in stopped:  # an early stop is a checkpointed run, not a killed process
        assert s["stop_reason"] == "stopped early by the study (its scheduler or time budget)"
        assert s["env_steps_sampled"] < 2400 and s["assessment"] is None
        assert (folder / s["run_id"] / s["checkpoint"]).is_dir()


def test_the_table_ranks_by_the_assessment_and_the_best_config_is_written(study):
    folder, out = study
    results = json.loads((folder / "study.json").read_text())
    assessed = [t for t in results["trials"] if t["kpi"] is not None]
    assert [t["kpi"] for t in assessed] == sorted((t["kpi"] for t in assessed), reverse=True)
    assert not any(t["beats"] for t in assessed)  # else those would rank first, by env steps
    best = results["best"]
    assert best["trial"] == assessed[0]["trial"]
    assert "final ranking" in out
    final = out[out.index("final ranking") :]
    for trial in results["trials"]:
        assert trial["trial"] in final
    # in the verdict's terms (the Simple Adder's baseline is the optimum: none beats it here)
    assert results["kpi"] == "reached_count"  # the simulator's primary KPI, the verdict's
    said = f"best: {best['trial']} (reached_count {best['kpi']:.4g}; does NOT beat the baseline)"
    assert said in out
    assert best["beats"] is False and best["beaten_at"] is None
    # and against what the user gave it, in the same terms
    given = next(t for t in results["trials"] if t["given"])
    assert given["trial"] == "trial-000" and "trial-000 (as given)" in final
    if best["trial"] == "trial-000":
        against = "no sampled trial did better than the config as given (trial-000, which "
    else:
        against = "the config as given (trial-000) "
    assert results["against_given"].startswith(against) and results["against_given"] in out
    assert f"# {results['against_given']}\n" in (folder / "best.yaml").read_text()
    written = yaml.safe_load((folder / "best.yaml").read_text())
    trained = yaml.safe_load((folder / best["trial"] / "config.yaml").read_text())
    assert written == trained
    assert written["training"]["lr"] == best["params"]["training.lr"]


def test_the_best_config_trains_unchanged_with_invoke_train(study, tmp_path):
    folder, _ = study
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "train", "--config", str(folder / "best.yaml"),
         "--runs-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    (run,) = tmp_path.glob("adder_study/*/summary.json")
    summary = json.loads(run.read_text())
    assert summary["status"] == "completed" and summary["env_steps_sampled"] >= 2400


def test_mlflow_has_the_study_as_parent_and_one_child_per_trial(study):
    folder, _ = study
    client = mlflow.tracking.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    parent = client.get_run(Study.read(folder).mlflow_run_id)
    assert parent.info.status == "FINISHED"
    results = json.loads((folder / "study.json").read_text())
    best = results["best"]
    assert parent.data.tags["best_trial"] == best["trial"]
    assert results["kpi"] == "reached_count"  # the Simple Adder's primary KPI
    assert parent.data.metrics["best/reached_count"] == pytest.approx(best["kpi"])
    artifacts = Path(parent.info.artifact_uri.removeprefix("file://"))
    assert (artifacts / "best.yaml").read_text() == (folder / "best.yaml").read_text()
    assert artifacts.is_relative_to(folder)  # not ./mlruns wherever the study ran
    runs = children(folder)
    assert sorted(runs) == [f"trial-{i:03d}" for i in range(4)]
    for name, run in runs.items():
        status = json.loads((folder / name / "summary.json").read_text())["status"]
        assert run.info.status == ("FINISHED" if status == "completed" else "KILLED")


def test_a_study_killed_with_sigkill_resumes_with_no_trial_lost_or_counted_twice(tmp_path):
    config, space = write_inputs(tmp_path, steps=4000, space="training.lr: {uniform: [1.0e-4, 5.0e-4]}\n")  # fmt: skip
    proc = start(
        tmp_path, "--config", str(config), "--space", str(space), "--samples", "3",
        "--scheduler", "fifo",
    )  # fmt: skip
    deadline = time.monotonic() + 240
    runs = tmp_path / "runs" / "adder_study"
    # kill once a trial has a checkpoint and before any has finished
    while not list(runs.glob("study-*/trial-*/checkpoints/iter-*")):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    folder = only_study(tmp_path)
    assert not (folder / "study.json").exists()
    before = {
        t.name: iterations(t) for t in folder.glob("trial-*") if (t / "metrics.jsonl").exists()
    }

    out = finish(start(tmp_path, "--resume", str(folder)))
    summaries = check_trials_exact(folder, samples=3)
    assert all(s["status"] == "completed" for s in summaries)
    resumed = [s for s in summaries if s["sessions"] == 2]
    assert resumed, f"no trial resumed from its checkpoint: {out[-2000:]}"
    for name, lines in before.items():  # what was committed before the kill is kept
        assert iterations(folder / name)[: len(lines)] == lines
    assert (folder / "best.yaml").is_file()

    again = subprocess.run(
        [sys.executable, "-m", "jobs.tune", "--resume", str(folder)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0 and "is complete; nothing to do" in again.stdout


def test_a_trial_restarted_with_other_values_is_refused(tmp_path):
    run = tmp_path / "trial-000"
    run.mkdir()
    (run / "config.yaml").write_text("training:\n  lr: 0.0003\n  num_epochs: 3\n")
    same_values_or_refuse(run, {"training.lr": 0.0003, "training.num_epochs": 3})
    with pytest.raises(RunError, match=r"training\.lr 0\.0003 there, 0\.0001 now.*new study"):
        same_values_or_refuse(run, {"training.lr": 0.0001, "training.num_epochs": 3})


def test_ranking_puts_assessed_trials_first_by_the_kpi_in_its_direction():
    def row(name, kpi, metric):
        return TrialRow(name, "x", {}, 1, 1, metric, kpi, None, None)

    rows = [row("a", None, 9.0), row("b", 2.0, 1.0), row("c", 3.0, 0.0), row("d", None, None)]
    study = Study(metric="env_runners/episode_return_mean")
    assert [r.trial for r in rank(rows, study, higher_kpi_better=True)] == ["c", "b", "a", "d"]
    assert [r.trial for r in rank(rows, study, higher_kpi_better=False)] == ["b", "c", "a", "d"]


# A user's adder whose old controller turns the wrong way: any policy that holds still beats
# it, so every run beats it at its first assessment, and a trial's speed to the verdict is
# set by how often it is assessed, not by luck.
WRONG_WAY = """
import dataclasses

from sims import simple_adder


class AlwaysAddTen:
    def reset(self):
        pass

    def act(self, states):
        return {"addend": 10.0}


SPEC = dataclasses.replace(
    simple_adder.SPEC, name="wrong_way", env_id="user/WrongWay-v0", baseline=AlwaysAddTen,
    primary_kpi="final_error", kpi_units={**simple_adder.SPEC.kpi_units, "final_error": "-"},
    kpi_higher_better=frozenset(), source=__file__,
)
"""


def test_the_best_trials_lead_is_confirmed_on_seeds_the_study_did_not_use(tmp_path):
    (tmp_path / "wrong_way.py").write_text(WRONG_WAY)
    config = yaml.safe_load(CONFIG.format(steps=2000))
    config.update(experiment="wrong_way_study", sim="wrong_way")
    config["stop"].update(beats_baseline=True, assess_every_iterations=3)
    (tmp_path / "user.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "space.yaml").write_text("stop.assess_every_iterations: {choice: [1]}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.tune", "--config", "user.yaml", "--space", "space.yaml",
         "--samples", "2", "--scheduler", "fifo", "--confirm-seeds", "1,2", "--runs-dir", "runs"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    (folder,) = (tmp_path / "runs" / "wrong_way_study").glob("study-*")
    results = json.loads((folder / "study.json").read_text())
    assert results["best"]["trial"] == "trial-001"  # assessed every iteration: first verdict
    confirmation = results["confirmation"]
    assert confirmation["seeds"] == [1, 2] and confirmation["best"] == "trial-001"
    for trial, steps in (("trial-000", "given_steps"), ("trial-001", "best_steps")):
        runs = sorted((folder / f"confirm-{trial}").glob("trial-*/summary.json"))
        summaries = [json.loads(path.read_text()) for path in runs]
        configs = [yaml.safe_load(p.with_name("config.yaml").read_text()) for p in runs]
        assert [c["seed"] for c in configs] == [1, 2]
        every = 3 if trial == "trial-000" else 1  # the trial's own values, the seed aside
        assert all(c["stop"]["assess_every_iterations"] == every for c in configs)
        assert confirmation[steps] == [s["verdicts"][0]["env_steps"] for s in summaries]
        assert all(s["verdicts"][0]["beats"] for s in summaries)
    best, given = confirmation["best_steps"], confirmation["given_steps"]
    assert all(b < g for b, g in zip(best, given, strict=True))
    assert confirmation["confirmed"] is True
    said = confirmation["said"]
    ratio = ((given[0] + given[1]) / 2) / ((best[0] + best[1]) / 2)
    assert said == (
        f"confirmed on seeds 1, 2: trial-001 needs a median of {(best[0] + best[1]) / 2:,.0f} "
        f"env steps to the verdict ({best[0]:,} / {best[1]:,}), the config as given needs a "
        f"median of {(given[0] + given[1]) / 2:,.0f} env steps to the verdict ({given[0]:,} / "
        f"{given[1]:,}): {ratio:.2f}x fewer env steps to the verdict"
    )
    assert said in out and f"# {said}\n" in (folder / "best.yaml").read_text()


def test_a_lead_that_does_not_hold_on_other_seeds_is_not_confirmed():
    from jobs.tune.confirm import Confirmation

    held = Confirmation([1, 2, 3], "trial-004", [320_000, 160_000, None], [200_000, 640_000, None])
    assert not held.confirmed
    assert held.words() == (
        "NOT confirmed on seeds 1, 2, 3: trial-004 needs a median of 640,000 env steps to the "
        "verdict (200,000 / 640,000 / never), the config as given needs a median of 320,000 env "
        "steps to the verdict (320,000 / 160,000 / never): its lead on the study's seed did not "
        "hold; keep the config"
    )
    never = Confirmation([1, 2, 3], "trial-004", [None, None, 1], [1, 2, None])
    assert never.confirmed
    assert never.words().endswith(
        "the config as given never beats the baseline on most seeds (never / never / 1)"
    )


def test_confirming_on_the_studys_own_seed_or_a_bad_list_is_refused():
    from jobs.tune.space import SpaceError
    from jobs.tune.study import new_study, parse_seeds

    assert parse_seeds("1, 2,3") == [1, 2, 3] and parse_seeds("") == []
    for text in ("1,x", "1,1", "-1"):
        with pytest.raises(SpaceError, match=rf"--confirm-seeds '{text}': give distinct whole"):
            parse_seeds(text)
    cfg = load_config(ROOT / "jobs" / "configs" / "simple_adder_ppo.yaml")
    with pytest.raises(SpaceError, match=rf"--confirm-seeds {cfg.seed},5: {cfg.seed} is the seed"):
        new_study([], 2, "fifo", "env_runners/episode_return_mean", "", 0, cfg, [cfg.seed, 5])
