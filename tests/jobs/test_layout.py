"""The layout: env runners, envs and learners sized from what Ray reports, or as configured."""

from __future__ import annotations

import json

import pytest

from jobs.config import DEFAULT_CONFIG, load_config
from jobs.layout import (
    Layout,
    Node,
    nodes_from_ray,
    pinned_for_trials,
    resolve_layout,
    wait_for_nodes,
)


def reported(cpus: float, gpus: float = 0.0, alive: bool = True, host: str = "10.0.0.4") -> dict:
    """One entry of ``ray.nodes()`` as Ray 2.60 reports it (the keys the layout reads)."""
    resources = {"CPU": cpus, "memory": 8e9, "object_store_memory": 2e9, f"node:{host}": 1.0}
    if gpus:
        resources["GPU"] = gpus
    return {"NodeID": "ab" * 28, "Alive": alive, "NodeManagerAddress": host, "Resources": resources}


def layout(nodes: list[dict], *sets: str) -> Layout:
    return resolve_layout(load_config(DEFAULT_CONFIG, list(sets)), nodes_from_ray(nodes))


def test_one_cpu_samples_in_the_driver():
    got = layout([reported(1)])
    assert (got.num_env_runners, got.num_envs_per_env_runner) == (0, 8)
    assert got.describe() == (
        "sampling in the driver x 8 envs, learner in the driver on CPU (1 node: 1 CPU)"
    )


def test_two_cpus_sample_on_one_while_the_driver_learns_on_the_other():
    # PPO samples ahead: the driver learns on its own CPU while the runner samples
    got = layout([reported(2)])
    assert (got.num_env_runners, got.num_envs_per_env_runner) == (1, 8)
    assert got.sample_ahead and got.chosen["sample_ahead"] == "auto"
    assert (got.num_learners, got.num_gpus_per_learner) == (0, 0.0)
    assert got.train_batch_size_per_learner == 4000 and not got.warnings
    assert got.describe() == (
        "1 env runner x 8 envs, sampling ahead, learner in the driver on CPU (1 node: 2 CPUs)"
    )


def test_two_cpus_taking_turns_sample_on_both_while_the_learner_waits():
    # PPO taking turns: the runners share the driver's CPU (BENCHMARKS.md, layout)
    got = layout([reported(2)], "env_runners.sample_ahead=false")
    assert (got.num_env_runners, got.num_envs_per_env_runner) == (2, 4)
    assert not got.sample_ahead and got.chosen["sample_ahead"] == "config"
    assert got.describe() == (
        "2 env runners x 4 envs, learner in the driver on CPU (1 node: 2 CPUs)"
    )


def test_no_env_runner_means_no_sampling_ahead():
    got = layout([reported(4)], "env_runners.num_env_runners=0")
    assert got.num_env_runners == 0 and not got.sample_ahead


def test_four_nodes_of_sixteen_cpus_sample_on_every_cpu_but_the_drivers():
    got = layout([reported(16, host=f"10.0.0.{i}") for i in range(4)])
    assert (got.num_env_runners, got.num_envs_per_env_runner) == (63, 1)
    assert got.num_learners == 0 and got.nodes == 4 and got.cpus == 64
    assert not got.warnings


def test_a_dead_node_is_not_counted():
    got = layout([reported(16), reported(16, alive=False, host="10.0.0.9")])
    assert got.nodes == 1 and got.num_env_runners == 16 - 1


def test_two_gpu_nodes_get_a_learner_on_each_gpu_and_share_the_batch():
    got = layout([reported(8, gpus=1, host="10.0.0.4"), reported(8, gpus=1, host="10.0.0.5")])
    assert (got.num_learners, got.num_gpus_per_learner) == (2, 1.0)
    assert got.num_env_runners == 16 - 2 - 1  # a CPU for each learner actor, the driver's
    assert got.train_batch_size_per_learner * 2 == 4000  # the recipe's batch in total
    assert got.minibatch_size == 64
    assert got.describe().endswith("2 learners on 1 GPU each (2 nodes: 16 CPUs, 2 GPUs)")


def test_one_gpu_updates_in_the_driver():
    got = layout([reported(4, gpus=1)])
    assert (got.num_learners, got.num_gpus_per_learner) == (0, 1.0)
    assert got.num_env_runners == 3 and got.num_envs_per_env_runner == 3


def test_an_explicit_layout_wins_and_says_when_a_node_sits_idle():
    got = layout([reported(16, host=f"10.0.0.{i}") for i in range(4)],
                 "env_runners.num_env_runners=1", "env_runners.num_envs_per_env_runner=8")  # fmt: skip
    assert (got.num_env_runners, got.num_envs_per_env_runner) == (1, 8)
    assert got.chosen["num_env_runners"] == "config"
    (warning,) = got.warnings
    assert warning == (
        "env_runners.num_env_runners: 1 leaves 62 of the cluster's 64 CPUs idle, more than a "
        "node's worth (16); set it to auto (it would be 63), or ask for fewer nodes"
    )


def test_a_cpu_learner_on_a_gpu_cluster_is_warned_about():
    got = layout([reported(8, gpus=1)], "learners.num_gpus_per_learner=0")
    assert got.num_gpus_per_learner == 0
    assert got.warnings == (
        "the cluster has 1 GPU(s) but learners.num_gpus_per_learner is 0.0: the GPU sits "
        "idle; set it to auto, or train on the CPU cluster",
    )


def test_an_explicit_layout_on_one_machine_is_not_warned_about():
    assert not layout([reported(2)], "env_runners.num_env_runners=1").warnings


@pytest.mark.parametrize("sets", [["algorithm=APPO"], ["env_runners.sample_ahead=true"]])
def test_where_learning_overlaps_sampling_the_driver_keeps_a_cpu(sets):
    assert layout([reported(4)], *sets).num_env_runners == 3
    assert layout([reported(2)], *sets).num_env_runners == 1  # they need one, even so


def test_a_studys_trials_keep_the_zoos_layout_where_the_config_says_auto():
    cfg = pinned_for_trials(load_config(DEFAULT_CONFIG))
    assert (cfg.env_runners.num_env_runners, cfg.env_runners.num_envs_per_env_runner) == (1, 8)
    assert (cfg.learners.num_learners, cfg.learners.num_gpus_per_learner) == (0, 0.0)
    # a trial holds a CPU for its driver and one for its runner: PPO samples ahead, as the zoo
    assert resolve_layout(cfg, [Node(2)]).sample_ahead
    explicit = pinned_for_trials(load_config(DEFAULT_CONFIG, ["env_runners.num_env_runners=3"]))
    assert explicit.env_runners.num_env_runners == 3
    in_driver = pinned_for_trials(load_config(DEFAULT_CONFIG, ["env_runners.num_env_runners=0"]))
    assert not resolve_layout(in_driver, [Node(2)]).sample_ahead  # nothing to overlap


def test_the_driver_waits_for_the_jobs_nodes_then_sizes_for_those_that_came():
    joined = iter([[Node(4)], [Node(4), Node(4)], [Node(4), Node(4), Node(4)]])
    said: list[str] = []
    got = wait_for_nodes(3, poll_s=0, nodes=lambda: next(joined), echo=said.append)
    assert len(got) == 3 and said == ["layout: waiting for 3 nodes (1 joined so far)"]
    got = wait_for_nodes(3, poll_s=1, timeout_s=2, nodes=lambda: [Node(4)], echo=said.append)
    assert len(got) == 1
    assert (
        said[-1] == "layout: 1 of the job's 3 nodes joined the Ray cluster in 2 s; sizing for those"
    )


def test_a_bad_layout_value_names_the_key():
    from jobs.config import ConfigError

    with pytest.raises(ConfigError, match=r"env_runners\.num_env_runners"):
        load_config(DEFAULT_CONFIG, ["env_runners.num_env_runners=many"])


def test_a_run_records_its_layout_and_where_each_env_runner_ran(default_smoke):
    run, out = default_smoke  # --smoke sets 1 env runner x 2 envs; the rest is auto
    summary = json.loads((run / "summary.json").read_text())
    recorded = summary["layout"]
    assert (recorded["num_env_runners"], recorded["num_envs_per_env_runner"]) == (1, 2)
    assert recorded["chosen"]["num_envs_per_env_runner"] == "config"
    assert recorded["num_learners"] == 0 and recorded["chosen"]["num_learners"] == "auto"
    assert recorded["sample_ahead"] is True and recorded["chosen"]["sample_ahead"] == "auto"
    (runner,) = recorded["env_runner_nodes"]
    assert runner["env_runner"] == 1 and len(runner["node_id"]) == 56 and runner["host"]
    assert "layout: 1 env runner x 2 envs, sampling ahead, learner in the driver on CPU" in out
