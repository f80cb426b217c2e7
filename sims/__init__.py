"""Simulators behind one small contract, their Gymnasium adapter, lessons and checker.

Built-in simulators register Gymnasium ids here (``aml_rl/CSTR-v0``, ``aml_rl/SimpleAdder-v0``)
without importing their modules; a user's simulator module calls :func:`register_sim` itself.
"""

import gymnasium
from gymnasium.envs.registration import register

ENTRY_POINT = "sims.registry:make_env"
"""Gymnasium's entry point for every id registered with :func:`register_sim`."""


def register_sim(env_id: str, name: str) -> None:
    """Register ``env_id`` for the simulator ``name`` (a sims/ module or any resolvable name)."""
    if env_id not in gymnasium.registry:
        register(id=env_id, entry_point=ENTRY_POINT, kwargs={"sim": name})


register_sim("aml_rl/CSTR-v0", "cstr")
register_sim("aml_rl/SimpleAdder-v0", "simple_adder")
