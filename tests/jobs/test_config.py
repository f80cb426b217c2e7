"""Experiment configs: the shipped ones validate; bad input names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from jobs.algorithms import algorithm_config
from jobs.config import CONFIGS, ConfigError, load_config
from jobs.train import train

SHIPPED = sorted(CONFIGS.glob("*.yaml"))


def test_the_configs_are_shipped():
    assert [p.name for p in SHIPPED] == [
        "balance_ppo.yaml",
        "cartpole_ppo.yaml",
        "cstr_appo.yaml",
        "cstr_ppo.yaml",
        "positioner_ppo.yaml",
        "simple_adder_ppo.yaml",
        "tank_ppo.yaml",
        "thermostat_ppo.yaml",
    ]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_configs_validate_and_build_an_algorithm_config(path):
    cfg = load_config(path)
    assert cfg.experiment == path.stem
    config = algorithm_config(cfg, callbacks=None)
    assert config.train_batch_size_per_learner == cfg.training.train_batch_size


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "experiment: x\nsim: cstr\nlearning_rate: 0.1\n",
            r"exp\.yaml: learning_rate: unknown key; remove it or check its spelling",
        ),
        (
            "experiment: x\nsim: cstr\ntraining: {lr: -1}\n",
            r"exp\.yaml: training\.lr: Input should be greater than 0 \(got -1\)",
        ),
        (
            "experiment: x\nsim: nope\n",
            r"exp\.yaml: sim: unknown simulator 'nope'; use one of balance, cstr, positioner, "
            r"simple_adder, simple_adder_c, tank,",
        ),
        (
            "experiment: x\nsim: cstr\nalgorithm: DQNN\n",
            r"exp\.yaml: algorithm: Input should be 'PPO', 'APPO' or 'IMPALA' \(got 'DQNN'\)",
        ),
        (
            "experiment: x\nsim: cstr\ntraining: {train_batch_size: 100, minibatch_size: 200}\n",
            r"training: minibatch_size 200 > train_batch_size 100; lower minibatch_size",
        ),
        (
            "experiment: x\nsim: cstr\nalgorithm: APPO\nenv_runners: {num_env_runners: 0}\n",
            r"APPO needs env_runners\.num_env_runners >= 1",
        ),
        (
            "experiment: x\nsim: cstr\nstop: {max_env_steps: null, max_wall_s: null}\n",
            r"stop: set at least one of target_return, max_env_steps, max_wall_s",
        ),
        ("experiment: has space\nsim: cstr\n", r"experiment: String should match pattern"),
        ("- a list\n", r"exp\.yaml: expected a mapping of config keys, got list"),
    ],
    ids=[
        "unknown-key",
        "bad-value",
        "unknown-sim",
        "unknown-algorithm",
        "minibatch",
        "appo-runners",
        "no-stop",
        "bad-name",
        "not-mapping",
    ],
)
def test_bad_configs_name_the_file_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_set_overrides_are_typed_and_nested():
    cfg = load_config(
        CONFIGS / "cstr_ppo.yaml",
        [
            "training.lr=1e-4",
            "training.hidden=[32, 32]",
            "stop.target_return=null",
            "training.extra.clip_param=0.1",
        ],
    )
    assert cfg.training.lr == 1e-4 and cfg.training.hidden == [32, 32]
    assert cfg.stop.target_return is None
    assert algorithm_config(cfg, callbacks=None).clip_param == 0.1


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            "stop.max_stepz=5",
            r"--set stop\.max_stepz=5: no key 'max_stepz' under stop; keys there: target_return, max_env_steps, max_wall_s",
        ),
        (
            "simulator=cstr",
            r"--set simulator=cstr: no key 'simulator' under the top level; keys there: experiment, sim,",
        ),
        (
            "training.lr",
            r"--set 'training\.lr': expected KEY=VALUE, e\.g\. --set training\.lr=1e-4",
        ),
        (
            "training.hidden.x=1",
            r"training\.hidden: Input should be a valid list \(got \{'x': 1\}\)",
        ),
    ],
)
def test_bad_set_overrides_name_the_key(item, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "cstr_ppo.yaml", [item])


def test_unknown_extra_training_setting_is_refused():
    cfg = load_config(CONFIGS / "cstr_ppo.yaml", ["training.extra.clip_parm=0.1"])
    with pytest.raises(ConfigError, match=r"training\.extra: clip_parm not PPO training settings"):
        algorithm_config(cfg, callbacks=None)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (  # both passed the old hasattr check, then died in RLlib with a TypeError
            "training.extra.model_config={fcnet_hiddens: [32]}",
            r"training\.extra: model_config not PPO training settings \(the arguments of RLlib's "
            r"PPOConfig\.training\(\)\); model_config: use training\.hidden, "
            r"training\.share_layers and training\.activation",
        ),
        (
            "training.extra.num_env_runners=2",
            r"training\.extra: num_env_runners not PPO .*num_env_runners: use "
            r"env_runners\.num_env_runners",
        ),
    ],
)
def test_settings_outside_training_are_refused_with_the_typed_key(item, message):
    cfg = load_config(CONFIGS / "cstr_ppo.yaml", [item])
    with pytest.raises(ConfigError, match=message):
        algorithm_config(cfg, callbacks=None)


def test_the_recipe_separates_policy_and_value_and_normalises_rewards():
    config = algorithm_config(load_config(CONFIGS / "cstr_ppo.yaml"), callbacks=None)
    assert config.model_config["vf_share_layers"] is False
    assert config.model_config["fcnet_hiddens"] == [64, 64]
    assert config.vf_clip_param == 10.0 and config.lambda_ == 0.95  # RLlib's clip, restored
    assert config.env_config["normalize_rewards_gamma"] == 0.99
    shared = load_config(CONFIGS / "cstr_ppo.yaml", ["training.share_layers=true"])
    assert algorithm_config(shared, callbacks=None).model_config["vf_share_layers"] is True


def test_stopping_on_the_verdict_without_an_assessment_is_refused():
    with pytest.raises(
        ConfigError,
        match=r"cstr_ppo\.yaml: \(top level\): stop\.beats_baseline assesses the agent: set "
        r"assessment\.enabled: true, or stop\.beats_baseline: false",
    ):
        load_config(CONFIGS / "cstr_ppo.yaml", ["assessment.enabled=false"])


@pytest.mark.parametrize("hidden", ["[]", "[0]", "[64, -1]"])
def test_empty_or_zero_width_layers_are_refused_before_ray(hidden):
    with pytest.raises(ConfigError, match=r"training\.hidden"):
        load_config(CONFIGS / "cstr_ppo.yaml", [f"training.hidden={hidden}"])


def test_smoke_overrides_the_budget_only():
    full, smoke = (
        load_config(CONFIGS / "cstr_ppo.yaml"),
        load_config(CONFIGS / "cstr_ppo.yaml", smoke=True),
    )
    assert smoke.stop.max_env_steps == 400 and smoke.training.train_batch_size == 200
    assert (smoke.sim, smoke.algorithm, smoke.lesson) == (full.sim, full.algorithm, full.lesson)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sets": ["sim=nope"]}, r"sim: unknown simulator 'nope'"),
        ({"sets": ["stop.nope=1"]}, r"no key 'nope' under stop"),
        ({"sets": ["training.extra.bogus=1"]}, r"training\.extra: bogus not PPO training settings"),
    ],
)
def test_bad_input_stops_before_ray_starts_and_leaves_no_run(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        train(CONFIGS / "cstr_ppo.yaml", runs_root=tmp_path / "runs", **kwargs)
    assert not ray.is_initialized()
    assert not any((tmp_path / "runs").rglob("summary.json"))


def test_resume_of_a_folder_that_is_not_a_run(tmp_path):
    from jobs.rundir import RunError

    with pytest.raises(
        RunError,
        match=r"not a run directory \(no config\.yaml\); pass a folder made by `invoke train`",
    ):
        train(resume=tmp_path)
    with pytest.raises(RunError, match=r"nowhere: no such directory"):
        train(resume=tmp_path / "nowhere")
    assert not ray.is_initialized()


def test_a_tracking_uri_this_process_set_is_not_taken_for_the_environments(monkeypatch, tmp_path):
    """mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI: a second run in one process (the
    benchmarks) once logged into the first run's store, and a study's artifacts into ./mlruns."""
    import os

    import mlflow

    from jobs.tracking import tracking_uri, use_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = f"sqlite:///{tmp_path / 'first.db'}"
    use_tracking_uri(first)  # as the first run of a process does
    assert mlflow.get_tracking_uri() == first
    # MLflow wrote it into the environment for child processes: put back, so that a training
    # this process starts next (a test's, a notebook's) logs into its own run's store
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert tracking_uri("sqlite:///second.db") == "sqlite:///second.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", first)  # as if written by MLflow, all the same
    assert tracking_uri("sqlite:///second.db") == "sqlite:///second.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "azureml://workspace")  # as Azure ML sets it
    assert tracking_uri("sqlite:///second.db") == "azureml://workspace"
    use_tracking_uri(first)  # a run in a job: the job's own variable stays for its children
    assert os.environ["MLFLOW_TRACKING_URI"] == "azureml://workspace"
