"""Everything a run needs is checked before Ray starts and before a run directory exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.assess import ScenarioError
from jobs.config import CONFIGS, ConfigError, load_config
from jobs.train import train

CSTR = CONFIGS / "cstr_ppo.yaml"


def refused(tmp_path: Path, error: type[Exception], match: str, sets: list[str], config=CSTR):
    runs = tmp_path / "runs"
    with pytest.raises(error, match=match):
        train(config, sets=sets, smoke=True, runs_root=runs)
    assert not runs.exists() or not any(runs.rglob("*")), "nothing may be created"


def test_a_lesson_that_does_not_exist(tmp_path):
    refused(
        tmp_path,
        ConfigError,
        r"cstr_ppo\.yaml --set lesson=trasition: sim 'cstr', lessons \(the simulator's own\), lesson 'trasition': no lesson named 'trasition'; the lessons are: .*transition",
        ["lesson=trasition"],
    )


def test_a_lessons_file_given_with_set_that_does_not_exist(tmp_path):
    refused(
        tmp_path,
        ConfigError,
        r"--set lessons=nowhere\.yaml: .*nowhere\.yaml: cannot be read \(No such file or directory\); check the path",
        ["lessons=nowhere.yaml"],
    )


def test_a_lessons_file_with_a_parameter_the_simulator_lacks(tmp_path):
    lessons = tmp_path / "lessons.yaml"
    lessons.write_text("lessons:\n  - name: a\n    parameters:\n      flow: {min: 0, max: 1}\n")
    refused(
        tmp_path,
        ConfigError,
        r"lessons\.yaml: lessons\[0\]\.parameters\.flow: unknown scenario parameter 'flow' for simulator cstr",
        [f"lessons={lessons}"],
    )


def test_lessons_for_a_plain_gymnasium_env(tmp_path):
    lessons = CONFIGS.parent.parent / "sims" / "lessons" / "cstr.yaml"
    refused(
        tmp_path,
        ConfigError,
        r"CartPole-v1 is a plain Gymnasium environment, which has no scenario parameters; drop the lessons setting",
        [f"lessons={lessons}"],
        config=CONFIGS / "cartpole_ppo.yaml",
    )


def test_assessment_scenarios_are_checked_before_training_not_after(tmp_path):
    scenarios = tmp_path / "scenarios.yaml"
    scenarios.write_text("scenarios:\n  - {name: a, parameters: {Cref_signl: 2}}\n")
    refused(
        tmp_path,
        ScenarioError,
        r"scenarios\.yaml: scenarios\[0\]\.parameters: Cref_signl not parameters of simulator cstr",
        [f"assessment.scenarios={scenarios}"],
    )


def test_training_extra_of_the_wrong_kind_names_the_setting(tmp_path):
    refused(
        tmp_path,
        ConfigError,
        r"training\.extra\.vf_clip_param: 'big' is a string, but RLlib's PPO setting vf_clip_param takes a number \(default 10\.0\); give a number",
        ["training.extra.vf_clip_param=big"],
    )


def test_more_env_runners_than_cpus_is_refused_instead_of_hanging(tmp_path, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    runs = tmp_path / "runs"
    with pytest.raises(
        ConfigError,
        match=r"env_runners\.num_env_runners 3 needs 3 CPUs, but this machine has 2; set it to 2 or fewer",
    ):
        train(CSTR, sets=["env_runners.num_env_runners=3"], runs_root=runs)
    assert not runs.exists()


def test_numbers_in_exponent_form_are_numbers_in_files_and_in_set(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "experiment: e\nsim: cstr\ntraining:\n  lr: 1e-4\n  extra: {lambda_: 9.5e-1}\n"
    )
    cfg = load_config(config, ["training.extra.vf_clip_param=1e4"])
    assert cfg.training.lr == 1e-4
    assert cfg.training.extra == {"lambda_": 0.95, "vf_clip_param": 10000.0}


def test_a_simulator_that_does_not_exist_is_refused_before_anything(tmp_path):
    refused(tmp_path, ConfigError, r"unknown simulator 'cstrr'", ["sim=cstrr"])
