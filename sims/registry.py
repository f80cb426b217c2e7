"""Resolve a simulator name to its :class:`SimHandle`: the one place that knows the kinds.

Names, tried in this order:

- ``module:Attr``: import ``module`` (a user's own, outside sims/ too), then ``Attr`` is a
  Gymnasium id the module registers, a ``gymnasium.Env`` subclass, a ``Simulator`` subclass
  (with a ``SimSpec`` in the module) or a ``SimSpec``;
- a registered Gymnasium id: ours (``aml_rl/CSTR-v0``) or any other (``CartPole-v1``);
- a module under sims/ (``cstr``), or else a module of that name (``room_sim``,
  ``mypkg.reactor``), defining ``SPEC``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import pkgutil
import traceback
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import gymnasium as gym
import numpy as np

import sims
from sims import ENTRY_POINT, external
from sims.contract import GymAssessment, SimError, SimSpec, Simulator
from sims.handle import SimHandle
from sims.package import use_package


def resolve(name: str) -> SimHandle:
    """The handle of simulator ``name``; :class:`SimError` saying why when there is none."""
    external.install()
    if ":" in name:
        return _from_attribute(name)
    if name in gym.registry:
        return _from_gym_registry(name, name)
    if all(part.isidentifier() for part in name.split(".")):
        # sims/<name>.py first, then the module itself (yours, on sys.path)
        candidates = [f"sims.{name}", name] if name.isidentifier() else [name]
        for module_name in candidates:
            module = _import(module_name, name)
            if module is not None:
                return SimHandle(name=name, spec=_spec_of(module, name))
    raise _unknown(name)


def make_env(sim: str, **kwargs: Any) -> gym.Env:
    """The environment for ``sim`` (``resolve(sim).make_env(**kwargs)``); also Gymnasium's
    entry point for the ids our simulators register (``aml_rl/CSTR-v0``)."""
    return resolve(sim).make_env(**kwargs)


class RLlibEnv(gym.Wrapper):
    """What RLlib builds on every env runner: the simulator named in ``env_config["sim"]``,
    resolved in that process (so a user's module is imported there too)."""

    def __new__(cls, config: Mapping[str, Any] | None = None, *args: Any, **kwargs: Any) -> Any:
        """Asked for ``num_envs`` of them (RLlib's vector entry point, which every env
        runner uses, jobs.algorithms): a vector whose simulators step together, handing each
        sub-env's info on whole (sims.vector)."""
        if config is not None and "num_envs" in config:
            from sims.batch import BatchVectorEnv
            from sims.process import PipelinedVectorEnv

            options = {k: v for k, v in config.items() if k != "num_envs"}
            vector = BatchVectorEnv if options.get("batched") else PipelinedVectorEnv
            return vector([functools.partial(cls, options)] * config["num_envs"])
        return super().__new__(cls)

    def __init__(self, config: Mapping[str, Any]) -> None:
        options = dict(config)
        package, sha256 = options.pop("sim_package", None), options.pop("sim_package_sha256", None)
        if package:  # extracted once per machine, before this env's simulator starts
            use_package(package, sha256)
        handle = resolve(options.pop("sim"))
        gamma = options.pop("normalize_rewards_gamma", None)
        options.pop("batched", None)  # read by __new__
        env = handle.make_env(**{k: v for k, v in options.items() if v is not None})
        if gamma is not None:
            env = gym.wrappers.NormalizeReward(RewardInUnits(env), gamma=gamma)
            env.return_rms = ScalarMeanStd()
        super().__init__(env)


class ScalarMeanStd:
    """Gymnasium's ``RunningMeanStd`` for the one value ``NormalizeReward`` adds each step: the
    same arithmetic in the same order on Python floats, so every scaled reward is identical
    to the bit, without NumPy's mean and variance of a one-element array (a third of a CSTR
    env step in the profile, BENCHMARKS.md)."""

    def __init__(self, epsilon: float = 1e-4) -> None:
        self.mean = 0.0
        self.var = 1.0
        self.count = epsilon

    def update(self, x: Any) -> None:
        delta = (x.item() if isinstance(x, np.ndarray) else float(x)) - self.mean
        total = self.count + 1
        m_a = self.var * self.count
        self.mean = self.mean + delta * 1 / total
        self.var = (m_a + 0.0 + delta * delta * self.count * 1 / total) / total
        self.count = total


class RewardInUnits(gym.Wrapper):
    """Keeps the simulator's own reward in ``info`` (``reward`` every step, ``episode_return``
    at the episode's end) under Gymnasium's ``NormalizeReward``, which divides what the
    learner sees by the running spread of the discounted return (as Stable-Baselines3's
    VecNormalize does): trajectories, metrics and every reported return use these."""

    def reset(self, **kwargs: Any) -> Any:
        self._return = 0.0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._return += float(reward)
        info = {**info, "reward": float(reward)}
        if terminated or truncated:
            info["episode_return"] = self._return
        return obs, reward, terminated, truncated, info


def available() -> list[str]:
    """Names of the simulators under sims/ (modules that define ``SPEC``)."""
    names = []
    for info in pkgutil.iter_modules(sims.__path__):
        if info.ispkg or info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"sims.{info.name}")
        except Exception:
            continue
        if isinstance(getattr(module, "SPEC", None), SimSpec):
            names.append(info.name)
    return sorted(names)


def _unknown(name: str) -> SimError:
    registered_by_you = (
        f" (an id your module registers is found as module:{name})" if "-v" in name else ""
    )
    return SimError(
        f"unknown simulator {name!r}{registered_by_you}; use one of {', '.join(available())}, "
        "a Gymnasium id such as CartPole-v1, module:EnvId or module:ClassName for your own "
        "environment, or scaffold one with `invoke new-sim NAME`"
    )


def _import(module_name: str, name: str) -> ModuleType | None:
    """The module, None if it does not exist, or one message naming the file that failed."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(f"{exc.name}.")):
            return None
        raise _import_failed(module_name, name, exc) from exc
    except Exception as exc:  # a user's module may raise anything while importing
        raise _import_failed(module_name, name, exc) from exc


def _import_failed(module_name: str, name: str, exc: BaseException) -> SimError:
    try:
        origin = importlib.util.find_spec(module_name).origin  # type: ignore[union-attr]
    except (ImportError, ValueError, AttributeError):
        origin = module_name
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == origin]
    where = f"{origin}, line {frames[-1].lineno}" if frames else origin
    hint = "fix the module"
    if isinstance(exc, ModuleNotFoundError):
        hint = (
            f"install {exc.name!r}, or if it is your own code outside sims/, declare it in "
            "sims/external.yaml (README: 'A model package outside sims/')"
        )
    return SimError(
        f"{where}: importing {module_name} for simulator {name!r} failed with "
        f"{type(exc).__name__}: {exc}; {hint}"
    )


def _spec_of(module: ModuleType, name: str) -> SimSpec:
    spec = getattr(module, "SPEC", None)
    if not isinstance(spec, SimSpec):
        raise SimError(
            f"{module.__file__}: defines no SPEC (a sims.contract.SimSpec), so {name!r} is not a "
            "simulator; add one, as in sims/simple_adder.py"
        )
    return spec


def _from_gym_registry(env_id: str, name: str) -> SimHandle:
    entry = gym.registry[env_id]
    if entry.entry_point == ENTRY_POINT:
        inner = resolve(entry.kwargs["sim"])
        return SimHandle(name=name, spec=inner.spec)
    return SimHandle(name=name, gym_factory=lambda: gym.make(env_id))


def _constructor(cls: type[gym.Env], name: str) -> Callable[[], gym.Env]:
    """``cls()``, or ``cls({})`` for a class that takes RLlib's ``env_config`` dict (as Plato's
    samples do); refuses a class that needs more."""
    required = [
        p
        for p in inspect.signature(cls).parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if not required:
        return cls
    if len(required) == 1:
        return functools.partial(cls, {})
    raise SimError(
        f"simulator {name!r}: {cls.__name__}() needs arguments {[p.name for p in required]}; "
        "give them defaults, or register a Gymnasium id with kwargs and name module:EnvId"
    )


def _from_attribute(name: str) -> SimHandle:
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise SimError(f"simulator {name!r}: write module:EnvId or module:ClassName")
    module = _import(module_name, name)
    if module is None:
        raise SimError(
            f"simulator {name!r}: no module {module_name!r} on sys.path (the current folder, "
            "PYTHONPATH, installed packages, and the python_path of sims/external.yaml); "
            "run from the folder that holds it or declare it in sims/external.yaml"
        )
    if attr in gym.registry:
        return _from_gym_registry(attr, name)
    obj = getattr(module, attr, None)
    if isinstance(obj, SimSpec):
        return SimHandle(name=name, spec=obj)
    if isinstance(obj, type) and issubclass(obj, Simulator):
        specs = [v for v in vars(module).values() if isinstance(v, SimSpec) and v.simulator is obj]
        if len(specs) != 1:
            raise SimError(
                f"{module.__file__}: {attr} is a Simulator, but the module defines "
                f"{len(specs)} SimSpec for it; define exactly one (SPEC = SimSpec(...))"
            )
        return SimHandle(name=name, spec=specs[0])
    if isinstance(obj, type) and issubclass(obj, gym.Env):
        extras = getattr(module, "ASSESSMENT", None)
        if extras is not None and not isinstance(extras, GymAssessment):
            raise SimError(
                f"{module.__file__}: ASSESSMENT is a {type(extras).__name__}; make it a "
                "sims.contract.GymAssessment(baseline=..., kpis=...) or remove it"
            )
        return SimHandle(name=name, gym_factory=_constructor(obj, name), extras=extras)
    registered = sorted(
        env_id
        for env_id, entry in gym.registry.items()
        if isinstance(entry.entry_point, str) and entry.entry_point.startswith(f"{module_name}:")
    )
    found = f"; it registers {', '.join(registered)}" if registered else ""
    what = f"is a {type(obj).__name__}" if obj is not None else "is neither defined nor registered"
    raise SimError(
        f"simulator {name!r}: {attr!r} in {module.__file__} {what}; name a Gymnasium id the "
        f"module registers, a gymnasium.Env subclass, a Simulator subclass or a SimSpec{found}"
    )
