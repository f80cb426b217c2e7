"""Files and values a user gets wrong, at every entry point: one message naming the file, key,
value or flag (never a traceback), the documented exit code, and nothing created or changed.

Entry points run in this process through their real front doors: invoke's own ``Program``
over tasks.py (what `invoke TASK ...` runs) and ``python -m jobs.train``'s ``main``.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from invoke import Collection, Program
from invoke.loader import FilesystemLoader

from jobs.train import main as train_main
from tests.conftest import ROOT

# tasks.py as `invoke` loads it (it is no package module: nothing imports it)
tasks, _ = FilesystemLoader(start=str(ROOT)).load("tasks")

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"  # a file that is not text


@dataclass(frozen=True)
class Case:
    name: str
    argv: list[str]  # `invoke ...` words, or `jobs.train` arguments when entry == "train"
    code: int
    message: str  # a regex the output must match; {work} is the sandbox folder
    entry: str = "invoke"
    files: tuple[tuple[str, str | bytes], ...] = ()  # written into the sandbox first


def sandbox_run(work: Path) -> Path:
    """A finished run a user might point at: config, a checkpoint of ours, a summary."""
    run = work / "runs" / "cstr_ppo" / "20261123-000000-beef"
    checkpoint = run / "checkpoints" / "iter-000002"
    checkpoint.mkdir(parents=True)
    shutil.copy(ROOT / "jobs" / "configs" / "cstr_ppo.yaml", run / "config.yaml")
    (checkpoint / "aml_rl.json").write_text(json.dumps({"sim": "cstr", "iteration": 2}))
    return run


RUN = "runs/cstr_ppo/20261123-000000-beef"


def _parquet() -> bytes:
    """A trajectory file as training writes it: one episode of two steps."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table({
        "run_id": ["beef"] * 2, "phase": ["train"] * 2, "controller": ["agent"] * 2,
        "env_runner": [1, 1], "episode_id": ["e1", "e1"], "lesson": ["transition"] * 2,
        "step": [0, 1], "reward": [None, 1.0], "terminated": [False, True],
        "truncated": [False, False], "state_Ca": [8.5, 8.6], "action_dTc": [None, 0.5],
    }), sink)  # fmt: skip
    return sink.getvalue()


PARQUET = _parquet()
DAMAGED = (  # a checkpoint whose learner state was cut short after it was saved
    (f"{RUN}/checkpoints/iter-000002/aml_rl.json", json.dumps({
        "sim": "cstr", "iteration": 2, "files": {"learner_group/learner/state.pkl": [5000, "0" * 64]},
    })),
    (f"{RUN}/checkpoints/iter-000002/learner_group/learner/state.pkl", b"\x80\x04\x95"),
)  # fmt: skip

CASES = [
    # python -m jobs.train: config files
    Case("config missing", ["--config", "nope.yaml"], 2, r"nope\.yaml", "train"),
    Case("config not text", ["--config", "c.yaml"], 2, r"c\.yaml: .*(not text|UTF-8)", "train", (("c.yaml", PNG),)),
    Case("config bad YAML", ["--config", "c.yaml"], 2, r"c\.yaml: .*(YAML|line)", "train", (("c.yaml", "sim: cstr\n  training: [\n"),)),
    Case("config a list", ["--config", "c.yaml"], 2, r"c\.yaml", "train", (("c.yaml", "- sim\n- cstr\n"),)),
    Case("config empty", ["--config", "c.yaml"], 2, r"c\.yaml", "train", (("c.yaml", ""),)),
    Case("config unknown key", ["--config", "c.yaml"], 2, r"c\.yaml: trainig", "train", (("c.yaml", "sim: cstr\ntrainig:\n  lr: 1e-4\n"),)),
    Case("config wrong type", ["--config", "c.yaml"], 2, r"c\.yaml: training\.lr", "train", (("c.yaml", "training:\n  lr: fast\n"),)),
    Case("config negative budget", ["--config", "c.yaml"], 2, r"c\.yaml: stop\.max_env_steps", "train", (("c.yaml", "stop:\n  max_env_steps: -5\n"),)),
    Case("config unknown sim", ["--config", "c.yaml"], 2, r"unknown simulator 'tank_v9'", "train", (("c.yaml", "sim: tank_v9\n"),)),
    # python -m jobs.train: --set
    Case("set without =", ["--set", "training.lr"], 2, r"--set training\.lr", "train"),
    Case("set unknown key", ["--set", "training.lrr=1e-4"], 2, r"training\.lrr", "train"),
    Case("set wrong type", ["--set", "training.train_batch_size=abc"], 2, r"training\.train_batch_size", "train"),
    Case("set lesson typo", ["--set", "lesson=trasition"], 2, r"lesson 'trasition'", "train"),
    Case("set lessons missing", ["--set", "lessons=nowhere.yaml"], 2, r"nowhere\.yaml: cannot be read", "train"),
    Case("set lessons not text", ["--set", "lessons=l.yaml"], 2, r"l\.yaml", "train", (("l.yaml", PNG),)),
    Case("set scenarios not text", ["--set", "assessment.scenarios=s.yaml"], 2, r"s\.yaml", "train", (("s.yaml", PNG),)),
    Case("set scenarios unknown parameter", ["--set", "assessment.scenarios=s.yaml"], 2, r"s\.yaml: .*flow", "train", (("s.yaml", "- {flow: 1, seed: 1}\n"),)),
    Case("set scenario value refused", ["--set", "assessment.scenarios=s.yaml"], 2, r"s\.yaml: scenarios\[0\] \(seven\): the simulator refuses \{'Cref_signal': 7\.0\}: .*Cref_signal must be one of 1-5, got 7", "train", (("s.yaml", "scenarios:\n  - {name: seven, parameters: {Cref_signal: 7}}\n"),)),
    Case("set lesson value refused", ["--set", "lessons=l.yaml"], 2, r"--set lessons=l\.yaml: lessons l\.yaml: lessons\[1\] \(transition_noisy\): Cref_signal: the simulator refuses 99: .*Cref_signal must be one of 1-5, got 99", "train", (("l.yaml", "lessons:\n  - name: warm\n    parameters:\n      Cref_signal: {values: [2]}\n  - name: transition_noisy\n    parameters:\n      Cref_signal: {values: [3, 99]}\n"),)),
    Case("set layout word", ["--set", "env_runners.num_env_runners=many"], 2, r"env_runners\.num_env_runners: give auto or a whole number >= 0 \(got 'many'\)$", "train"),
    Case("set gpus negative", ["--set", "learners.num_gpus_per_learner=-1"], 2, r"learners\.num_gpus_per_learner: give auto or a number >= 0 \(got -1\)$", "train"),
    Case("set extra of wrong kind", ["--set", "training.extra={clip_param: wide}"], 2, r"clip_param", "train"),
    Case("config batched without a batch form", ["--config", "c.yaml"], 2, r"env_runners\.batched: true, but simulator 'simple_adder' has no batch form \(its spec names no batch_simulator\); add one", "train", (("c.yaml", "experiment: x\nsim: simple_adder\nenv_runners:\n  batched: true\n"),)),
    Case("config warm start without a baseline", ["--config", "c.yaml"], 2, r"training\.warm_start_steps: 100, but simulator 'CartPole-v1' has no baseline to start from; give its spec a baseline, or set it to 0", "train", (("c.yaml", "experiment: x\nsim: CartPole-v1\ntraining:\n  warm_start_steps: 100\n"),)),
    Case("set sim_package missing", ["--set", "sim_package=nowhere.tar.gz"], 2, r"--set sim_package=nowhere\.tar\.gz: sim_package nowhere\.tar\.gz: no such file or folder", "train"),
    Case("set sim_package checksum not hex", ["--set", "sim_package_sha256=abc"], 2, r"sim_package_sha256: String should match pattern", "train"),
    # python -m jobs.train: --resume
    Case("resume missing folder", ["--resume", "runs/nope"], 2, r"runs/nope: no such directory", "train"),
    Case("resume not a run", ["--resume", "."], 2, r"not a run directory \(no config\.yaml\)", "train"),
    Case("resume with --config", ["--resume", RUN, "--config", "c.yaml"], 2, r"takes its config from the run; drop --config", "train"),
    Case("resume config not text", ["--resume", "bad_run"], 2, r"bad_run/config\.yaml", "train", (("bad_run/config.yaml", PNG),)),
    Case("resume into another network", ["--resume", RUN], 2, r"iter-000002 cannot be resumed with .*config\.yaml: training\.hidden \[32\] there, \[64, 64\] now\. A checkpoint restores only into the network and spaces it was trained with; drop the change, or start a new run", "train", ((f"{RUN}/checkpoints/iter-000002/aml_rl.json", json.dumps({"sim": "cstr", "iteration": 2, "restores_with": {"sim": "cstr", "training.hidden": [32]}})),)),
    Case("resume every checkpoint damaged", ["--resume", RUN], 2, r"no checkpoint can be restored \(iter-000002: learner_group/learner/state\.pkl is 3 bytes, 5,000 when saved\); start a new run", "train", DAMAGED),
    # invoke: flags of the wrong type, and arguments that are not what they should be
    Case("flag not a number", ["check-sim", "--episodes", "many"], 1, r"--episodes 'many': not a valid int"),
    Case("train flag not a number", ["export-trajectories", RUN, "--csv", "--out", "x", "--bogus"], 1, r"No idea what '--bogus' is"),
    Case("check-sim negative episodes", ["check-sim", "--episodes", "-5"], 2, r"check-sim: --episodes -5: give 1 or more random-policy episodes"),
    Case("view negative episodes", ["view", RUN, "--episodes", "-3"], 2, r"view: --episodes -3: give 1 or more episodes per lesson"),
    Case("view out under a file", ["view", RUN, "--out", "c.yaml/view.html"], 2, r"view: c\.yaml: (File exists|Not a directory); check the path and its permissions \(--out: a folder you can write\)", "invoke", (("c.yaml", "sim: cstr\n"), (f"{RUN}/trajectories/train-s01-r001-1-000000.parquet", PARQUET))),
    Case("view truncated parquet", ["view", RUN], 2, r"train-s01-r001-1-000001\.parquet: not a whole Parquet file \(ArrowInvalid: .*\); move it out of trajectories/ \(a copy or a kill cut it short\) and try again", "invoke", ((f"{RUN}/trajectories/train-s01-r001-1-000001.parquet", PARQUET[:300]),)),
    Case("export-trajectories truncated parquet", ["export-trajectories", RUN, "--csv", "--out", "t.csv"], 2, r"train-s01-r001-1-000001\.parquet: not a whole Parquet file", "invoke", ((f"{RUN}/trajectories/train-s01-r001-1-000001.parquet", PARQUET[:300]),)),
    Case("export-trajectories out under a file", ["export-trajectories", RUN, "--csv", "--out", "c.yaml/t.csv"], 2, r"export-trajectories: c\.yaml: (File exists|Not a directory); check the path", "invoke", (("c.yaml", "sim: cstr\n"), (f"{RUN}/trajectories/train-s01-r001-1-000000.parquet", PARQUET))),
    Case("check-sim unknown", ["check-sim", "--sim", "tank_v9"], 1, r"unknown simulator 'tank_v9'"),
    Case("check-sim lessons missing", ["check-sim", "--lessons", "nowhere.yaml"], 1, r"nowhere\.yaml"),
    Case("assess missing", ["assess", "runs/nope"], 2, r"runs/nope: no such (directory|checkpoint)"),
    Case("assess scenarios missing", ["assess", RUN, "--scenarios", "nowhere.yaml"], 2, r"nowhere\.yaml"),
    Case("export missing", ["export", "runs/nope"], 2, r"runs/nope: no such (directory|checkpoint)"),
    Case("export not a checkpoint", ["export", "."], 2, r"not an aml-rl checkpoint"),
    Case("export damaged checkpoint", ["export", RUN], 2, r"iter-000002: the checkpoint is damaged \(learner_group/learner/state\.pkl is 3 bytes, 5,000 when saved\); retrain it", "invoke", DAMAGED),
    Case("assess damaged checkpoint", ["assess", RUN], 2, r"iter-000002: the checkpoint is damaged \(learner_group/learner/state\.pkl is 3 bytes, 5,000 when saved\); retrain it", "invoke", DAMAGED),
    Case("view missing", ["view", "runs/nope"], 2, r"runs/nope"),
    Case("view summary a list", ["view", RUN], 2, r"summary\.json: not a run summary", "invoke", ((f"{RUN}/summary.json", "[]"),)),
    Case("view sim.json not one", ["view", RUN], 2, r"sim\.json: not the run's simulator snapshot \(ValidationError\); restore it from the run's copy, or delete it to read the run as one from before sim\.json", "invoke", ((f"{RUN}/sim.json", '{"name": "cstr"}'), (f"{RUN}/trajectories/train-s01-r001-1-000000.parquet", PARQUET))),
    Case("export sim.json not text", ["export", RUN, "--allow-losing"], 2, r"export: .*sim\.json: not the run's simulator snapshot \(UnicodeDecodeError\)", "invoke", ((f"{RUN}/sim.json", PNG),)),
    Case("compare one run", ["compare", "--run", RUN], 2, r"compare: runs/cstr_ppo/20261123-000000-beef: one run only; compare two or more \(--run A --run B\)"),
    Case("compare a study unfinished", ["compare", "--run", "study"], 2, r"compare: study/study\.json: not a finished study's results; resume the study", "invoke", (("study/study.json", "{}"),)),
    Case("report no summary", ["report", RUN], 2, r"no summary\.json"),
    Case("report summary a list", ["report", RUN], 2, r"summary\.json: not a run summary", "invoke", ((f"{RUN}/summary.json", "[]"),)),
    Case("report summary not text", ["report", RUN], 2, r"summary\.json: not a run summary", "invoke", ((f"{RUN}/summary.json", PNG),)),
    Case("export-trajectories none", ["export-trajectories", RUN, "--csv"], 2, r"trajectories"),
    Case("serve not a bundle", ["serve", "."], 2, r"policy\.json|bundle"),
    Case("build --serve not a bundle", ["build", "--serve", "."], 1, r"policy\.json|bundle"),
    Case("submit config bad", ["submit", "--dry-run", "--outputs", "o.json", "--config", "c.yaml"], 2, r"c\.yaml: trainig", "invoke", (("c.yaml", "trainig: {}\n"), ("o.json", "GOOD_OUTPUTS"))),
    Case("submit outputs not JSON", ["submit", "--dry-run", "--outputs", "o.json"], 2, r"o\.json: not JSON", "invoke", (("o.json", "subscription_id: x\n"),)),
    Case("submit outputs a list", ["submit", "--dry-run", "--outputs", "o.json"], 2, r"o\.json: (missing or invalid|not)", "invoke", (("o.json", "[]"),)),
    Case("submit outputs not text", ["submit", "--dry-run", "--outputs", "o.json"], 2, r"o\.json", "invoke", (("o.json", PNG),)),
    Case("submit no nodes", ["submit", "--dry-run", "--outputs", "o.json", "--nodes", "0"], 2, r"--nodes 0: a job needs at least 1 node", "invoke", (("o.json", "GOOD_OUTPUTS"),)),
    Case("deploy not a bundle", ["deploy", "nope", "--dry-run", "--outputs", "o.json"], 2, r"'nope' is not a local bundle, run or checkpoint folder", "invoke", (("o.json", "GOOD_OUTPUTS"),)),
    Case("tune no space", ["tune"], 2, r"give the search space: --space FILE"),
    Case("tune space missing", ["tune", "--space", "nope.yaml"], 2, r"nope\.yaml: cannot be read"),
    Case("tune space not text", ["tune", "--space", "s.yaml"], 2, r"s\.yaml: not a text file", "invoke", (("s.yaml", PNG),)),
    Case("tune space empty", ["tune", "--space", "s.yaml"], 2, r"s\.yaml: the search space is empty", "invoke", (("s.yaml", ""),)),
    Case("tune space a list", ["tune", "--space", "s.yaml"], 2, r"s\.yaml: expected a mapping of config keys to distributions, got list", "invoke", (("s.yaml", "- training.lr\n"),)),
    Case("tune space unknown key", ["tune", "--space", "s.yaml"], 2, r"s\.yaml: training\.lrr: no key 'lrr' under training.*did you mean training\.lr\?", "invoke", (("s.yaml", "training.lrr: {uniform: [0.1, 0.2]}\n"),)),
    Case("tune space a bare value", ["tune", "--space", "s.yaml"], 2, r"s\.yaml: training\.lr: expected one distribution", "invoke", (("s.yaml", "training.lr: 0.001\n"),)),
    Case("tune space unknown distribution", ["tune", "--space", "s.yaml"], 2, r"s\.yaml: training\.lr: unknown distribution 'logunif' \(did you mean loguniform\?\)", "invoke", (("s.yaml", "training.lr: {logunif: [1.0e-5, 1.0e-3]}\n"),)),
    Case("tune space loguniform from 0", ["tune", "--space", "s.yaml"], 2, r"s\.yaml: training\.lr: loguniform takes \[low, high\], both > 0 \(got \[0, 0\.001\]\)", "invoke", (("s.yaml", "training.lr: {loguniform: [0, 1.0e-3]}\n"),)),
    Case("tune space bounds reversed", ["tune", "--space", "s.yaml"], 2, r"s\.yaml: training\.gamma: uniform takes \[low, high\], low below high", "invoke", (("s.yaml", "training.gamma: {uniform: [0.999, 0.9]}\n"),)),
    Case("tune space value refused", ["tune", "--space", "s.yaml"], 2, r"s\.yaml: training\.train_batch_size: the value 16 is refused by the config: .*greater than or equal to 32", "invoke", (("s.yaml", "training.train_batch_size: {choice: [16, 4000]}\n"),)),
    Case("tune space every trial fails", ["tune", "--space", "s.yaml"], 2, r"s\.yaml: training\.extra: the value \{'clip_parm': 0\.2\} is refused by the config: .*clip_parm", "invoke", (("s.yaml", "training.extra: {choice: [{clip_parm: 0.2}]}\n"),)),
    Case("tune space lesson refused", ["tune", "--space", "s.yaml"], 2, r"s\.yaml \(its first trial\): lessons l\.yaml: lessons\[0\] \(transition_noisy\): Cref_signal: the simulator refuses 99", "invoke", (("s.yaml", "lessons: {choice: [l.yaml]}\n"), ("l.yaml", "lessons:\n  - name: transition_noisy\n    parameters:\n      Cref_signal: {values: [99]}\n"))),
    Case("tune unknown scheduler", ["tune", "--space", "s.yaml", "--scheduler", "hyperband"], 2, r"--scheduler 'hyperband': use one of asha, fifo", "invoke", (("s.yaml", "training.lr: {choice: [1.0e-4]}\n"),)),
    Case("tune unknown metric", ["tune", "--space", "s.yaml", "--metric", "reward"], 2, r"--metric 'reward': use one of .*env_runners/episode_return_mean", "invoke", (("s.yaml", "training.lr: {choice: [1.0e-4]}\n"),)),
    Case("tune unknown kpi", ["tune", "--space", "s.yaml", "--kpi", "speed"], 2, r"--kpi 'speed': cstr has KPIs return, ", "invoke", (("s.yaml", "training.lr: {choice: [1.0e-4]}\n"),)),
    Case("tune resume not a study", ["tune", "--resume", RUN], 2, r"not a study \(no study\.yaml\)"),
    Case("tune resume with a space", ["tune", "--resume", RUN, "--space", "s.yaml"], 2, r"takes its settings from the study; drop --space s\.yaml"),
    Case("predict states not JSON", ["predict", "--endpoint", "cstr-1", "--states", "s.json", "--outputs", "o.json"], 2, r"s\.json: not JSON", "invoke", (("s.json", "Ca: 8.5\n"), ("o.json", "GOOD_OUTPUTS"))),
    Case("predict state a boolean", ["predict", "--endpoint", "cstr-1", "--states", "s.json", "--outputs", "o.json"], 2, r"s\.json: states\.Ca: Input should be a valid number", "invoke", (("s.json", '{"Ca": true}'), ("o.json", "GOOD_OUTPUTS"))),
    Case("predict state NaN", ["predict", "--endpoint", "cstr-1", "--states", "s.json", "--outputs", "o.json"], 2, r"s\.json: states\.Ca: Input should be a finite number", "invoke", (("s.json", '{"Ca": NaN}'), ("o.json", "GOOD_OUTPUTS"))),
    Case("predict state not a number", ["predict", "--endpoint", "cstr-1", "--states", "s.json", "--outputs", "o.json"], 2, r"s\.json: states\.Ca: Input should be a valid number", "invoke", (("s.json", '{"Ca": "high"}'), ("o.json", "GOOD_OUTPUTS"))),
]  # fmt: skip

GOOD_OUTPUTS = {
    "subscription_id": "sub-1", "resource_group": "rg", "location": "westeurope",
    "workspace_name": "ws", "cpu_cluster": "cpu", "datastore": "outputs",
    "registry_login_server": "acr.azurecr.io", "storage_account": "st",
    "endpoint_identity": "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id",
}  # fmt: skip


def test_the_table_has_at_least_40_inputs_across_the_entry_points():
    assert len(CASES) >= 40
    entries = {c.argv[0] if c.entry == "invoke" else "jobs.train" for c in CASES}
    assert len(entries) >= 12, entries


def run_entry(case: Case, work: Path) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        if case.entry == "train":
            code = train_main([*case.argv, "--runs-dir", str(work / "runs")])
        else:
            program = Program(namespace=Collection.from_module(tasks), binary="invoke")
            try:
                program.run(["invoke", *case.argv], exit=True)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue()


def snapshot(work: Path) -> dict[str, int]:
    return {str(p.relative_to(work)): p.stat().st_mtime_ns for p in sorted(work.rglob("*"))}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_bad_input_gets_one_message_and_changes_nothing(case, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    sandbox_run(work)
    for name, content in case.files:
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == "GOOD_OUTPUTS":
            content = json.dumps(GOOD_OUTPUTS)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    monkeypatch.chdir(work)
    before = snapshot(work)
    had_staging = (ROOT / ".aml").is_dir()
    staged = set((ROOT / ".aml").glob("*")) if had_staging else set()
    code, out = run_entry(case, work)
    assert "Traceback" not in out, out[-3000:]
    assert code == case.code, out[-3000:]
    flat = " ".join(out.split())
    assert __import__("re").search(case.message, flat), f"{case.message!r} not in:\n{flat[-2000:]}"
    assert snapshot(work) == before, "nothing may be created or changed"
    now = set((ROOT / ".aml").glob("*")) if (ROOT / ".aml").is_dir() else set()
    assert now == staged, f"a refused submission left staged code: {sorted(now - staged)}"
    assert had_staging or not (ROOT / ".aml").exists(), "a refused submission left .aml/"
