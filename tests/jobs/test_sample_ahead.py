"""env_runners.sample_ahead: the env runners sample the next batch while the learner
updates, in real Ray actors; misconfigured, one message says why."""

from __future__ import annotations

import json

import pytest

from jobs.algorithms import algorithm_config
from jobs.config import ConfigError, load_config
from tests.conftest import ROOT, script_json, train_smoke

# Two iterations of each kind in its own process (a Ray of its own); after each, how many
# sample requests are still in flight: sampling ahead leaves the next batch on its way.
IN_FLIGHT = """
import json, sys
import ray
from jobs.algorithms import algorithm_config
from jobs.config import load_config
from jobs.sample_ahead import TAG
ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
out = {}
for ahead in ("false", "true"):
    cfg = load_config("jobs/configs/cstr_ppo.yaml", [
        "training.train_batch_size=400", "training.minibatch_size=100", "training.num_epochs=1",
        "env_runners.num_envs_per_env_runner=2", f"env_runners.sample_ahead={ahead}",
    ])
    algo = algorithm_config(cfg, None).build_algo()
    steps = [algo.train()["num_env_steps_sampled_lifetime"] for _ in range(2)]
    out[ahead] = {
        "algorithm": type(algo).__name__,
        "in_flight": algo.env_runner_group.num_in_flight_async_reqs(TAG),
        "steps": steps,
    }
    algo.stop()
print(json.dumps(out))
"""


def test_sampling_ahead_keeps_the_next_batch_in_flight_while_the_learner_updates():
    out, _ = script_json(IN_FLIGHT)
    assert out["false"]["algorithm"] == "PPO" and out["false"]["in_flight"] == 0
    assert out["true"]["algorithm"] == "SampleAheadPPO"
    assert out["true"]["in_flight"] == 1  # the batch after this one, already sampling
    for kind in ("false", "true"):  # each iteration still trains on a whole batch
        first, second = out[kind]["steps"]
        assert first >= 400 and second >= 800, out


def test_a_run_that_samples_ahead_completes_and_is_assessed(tmp_path):
    run, _ = train_smoke(tmp_path, "--set", "env_runners.sample_ahead=true")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["env_steps_sampled"] >= 400
    assert set(summary["assessment"]) == {"agent", "baseline"}


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["env_runners.num_env_runners=0"],
            "needs PPO with env_runners.num_env_runners >= 1 (here PPO with 0): sampling in "
            "the driver cannot overlap learning; set num_env_runners: 1",
        ),
        (
            ["algorithm=APPO"],
            "(here APPO with 1): APPO samples asynchronously already; drop the setting",
        ),
    ],
)
def test_sampling_ahead_where_it_cannot_overlap_is_refused_with_the_reason(sets, message):
    cfg = load_config(
        ROOT / "jobs" / "configs" / "cstr_ppo.yaml", ["env_runners.sample_ahead=true", *sets]
    )
    with pytest.raises(ConfigError) as caught:
        algorithm_config(cfg, None)
    assert message in str(caught.value)
