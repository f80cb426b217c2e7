"""Find simulators by name: built-in and user modules under ``sims/``, and Gymnasium ids."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import gymnasium as gym

import sims
from sims.contract import SimError, SimSpec

# Modules of the toolkit itself, not simulators.
_TOOLKIT = {"adapter", "baselines", "check", "contract", "lessons", "registry", "scaffold"}


def available() -> list[str]:
    """Names of the simulators under ``sims/`` (modules that define ``SPEC``)."""
    names = []
    for info in pkgutil.iter_modules(sims.__path__):
        if info.name in _TOOLKIT or info.name.startswith("_") or info.ispkg:
            continue
        module = importlib.import_module(f"sims.{info.name}")
        if isinstance(getattr(module, "SPEC", None), SimSpec):
            names.append(info.name)
    return sorted(names)


def _unknown(name: str) -> SimError:
    return SimError(
        f"unknown simulator {name!r}; use one of {', '.join(available())}, a Gymnasium id "
        "such as CartPole-v1, or scaffold your own with `invoke new-sim NAME`"
    )


def _module_name(name: str) -> str | None:
    """The module behind ``name``: ``sims.<name>`` for a short name or an ``aml_rl/...`` id,
    or ``name`` itself when it is a dotted module path (a simulator kept outside sims/)."""
    if name in gym.registry:
        entry = gym.registry[name]
        if entry.entry_point == "sims.adapter:SimEnv":
            return f"sims.{entry.kwargs['sim']}"
        return None
    if name.isidentifier():
        return None if name in _TOOLKIT else f"sims.{name}"
    if all(part.isidentifier() for part in name.split(".")):
        return name
    return None


def spec_for(name: str) -> SimSpec:
    """The spec of the simulator ``name`` (``cstr``, ``aml_rl/CSTR-v0``, ``pkg.module``)."""
    module_name = _module_name(name)
    if module_name is None:
        raise _unknown(name)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if module_name == exc.name or module_name.startswith(f"{exc.name}."):
            raise _unknown(name) from None
        raise
    spec = getattr(module, "SPEC", None)
    if not isinstance(spec, SimSpec):
        raise SimError(
            f"{module.__file__}: defines no SPEC (a sims.contract.SimSpec); add one, as in "
            "sims/simple_adder.py"
        )
    return spec


def is_sim(name: str) -> bool:
    """Whether ``name`` is one of ours (as opposed to a plain Gymnasium environment)."""
    try:
        spec_for(name)
    except SimError:
        return False
    return True


def make_env(name: str, **kwargs: Any) -> gym.Env:
    """An environment for ``name``: one of our simulators, or any registered Gymnasium id."""
    try:
        spec_for(name)
    except SimError:
        if _module_name(name) is None and name in gym.registry:
            return gym.make(name, **kwargs)
        raise
    from sims.adapter import SimEnv

    return SimEnv(sim=name, **kwargs)
