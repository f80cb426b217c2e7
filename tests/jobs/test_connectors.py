"""jobs/connectors.py: the env runners' fused pipelines sample, and so train, to the same bits
as RLlib's default ones, for a continuous action (the CSTR through the adapter) and a discrete
one (a Gymnasium env, the zoo's thermostat)."""

from __future__ import annotations

from tests.conftest import script_json

# Both pipelines in turn, from the same seed, in a process of its own (a Ray of its own): the
# pipelines' pieces, a digest of every sampled episode (observations, actions, rewards, the
# action's log-probability and distribution inputs, how it ended), and of the weights after
# two iterations trained on such episodes.
SAME_BITS = """
import itertools, json, sys
import ray, torch
from jobs.algorithms import algorithm_config
from jobs.config import load_config
from jobs.connectors import use_rllib_connectors
from tests import bits
torch.set_num_threads(1)
ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")

out = {}
for sim, name in itertools.product(sys.argv[1:], ("rllib", "fused")):
    cfg = load_config("jobs/configs/cstr_ppo.yaml", [
        f"sim={sim}", "env_runners.num_env_runners=0", "env_runners.num_envs_per_env_runner=4",
        "training.train_batch_size=800", "training.minibatch_size=100", "training.num_epochs=2",
        "trajectories.enabled=false",
    ])
    config = algorithm_config(cfg, None)
    if name == "rllib":
        use_rllib_connectors(config)
    algo = config.build_algo()
    runner = algo.env_runner_group.local_env_runner
    for _ in range(2):
        algo.train()
    episodes = runner.sample(num_timesteps=4000)
    out.setdefault(sim, {})[name] = {
        "pieces": [type(c).__name__ for c in runner._env_to_module.connectors]
        + [type(c).__name__ for c in runner._module_to_env.connectors],
        "episodes": len(episodes), "done": sum(bool(ep.is_done) for ep in episodes),
        "sampled": bits.episodes(episodes),
        "trained": bits.weights(algo.learner_group._learner),
    }
    algo.stop()
print(json.dumps(out))
"""


def test_the_fused_connectors_sample_and_train_to_the_same_bits_as_rllibs():
    sims = ["cstr", "sims.thermostat:Thermostat"]
    out, _ = script_json(SAME_BITS, *sims)
    assert list(out) == sims
    for sim in sims:
        rllib, fused = out[sim]["rllib"], out[sim]["fused"]
        assert fused["pieces"] == ["ObservationsToModule", "ActionsToEnv"], sim
        assert "NormalizeAndClipActions" in rllib["pieces"], sim  # RLlib's, to compare with
        assert fused["done"] >= 1, sim  # episodes ended and restarted within the sample
        assert fused["episodes"] == rllib["episodes"], sim
        assert fused["sampled"] == rllib["sampled"], sim
        assert fused["trained"] == rllib["trained"], sim
