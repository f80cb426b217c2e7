"""The search space: a small YAML file of experiment-config keys and their distributions."""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune

from jobs.assess import ScenarioError
from jobs.config import ConfigError, ExperimentConfig, check_key, load_config
from jobs.train import check_before_start
from sims.contract import SimError
from sims.lessons import read_yaml

# name -> (how many arguments, what they are), for messages
DISTRIBUTIONS = {
    "uniform": "[low, high]",
    "loguniform": "[low, high], both > 0",
    "randint": "[low, high), whole numbers",
    "choice": "[value, value, ...]",
    "grid": "[value, value, ...], every one tried",
}


class SpaceError(ConfigError):
    """A bad search-space file; the message names the file and the key."""


@dataclass(frozen=True)
class Param:
    key: str
    distribution: str
    args: tuple[Any, ...]

    def domain(self) -> Any:

        if self.distribution == "grid":
            return tune.grid_search(list(self.args))
        if self.distribution == "choice":
            return tune.choice(list(self.args))
        return getattr(tune, self.distribution)(*self.args)

    def corners(self) -> list[Any]:
        """The values to check against the config model: every choice, or both bounds."""
        if self.distribution in ("choice", "grid"):
            return list(self.args)
        low, high = self.args
        return [low, high - 1] if self.distribution == "randint" else [low, high]


def load_space(path: Path, config: Path) -> list[Param]:
    """Read and check a search space against the experiment config it will vary: each key
    must be a config key, each distribution one of :data:`DISTRIBUTIONS` with fitting
    arguments, and each value one the config accepts."""
    try:
        data = read_yaml(path)
    except SimError as exc:
        raise SpaceError(str(exc)) from None
    if data is None or data == {}:
        raise SpaceError(
            f"{path}: the search space is empty; give at least one key, e.g.\n"
            "  training.lr: {loguniform: [1.0e-5, 1.0e-3]}"
        )
    if not isinstance(data, dict):
        raise SpaceError(
            f"{path}: expected a mapping of config keys to distributions, got {type(data).__name__}"
        )
    from jobs.algorithms import algorithm_config

    params = [_param(path, str(key), value) for key, value in data.items()]
    for param in params:
        for value in param.corners():
            try:  # the config's own checks, and RLlib's (training.extra: names and kinds)
                algorithm_config(load_config(config, [f"{param.key}={json.dumps(value)}"]), None)
            except ConfigError as exc:
                detail = str(exc).split(": ", 2)[-1]
                raise SpaceError(
                    f"{path}: {param.key}: the value {value!r} is refused by the config: {detail}"
                ) from None
    # the first trial's config, as a run checks it before Ray starts (simulator, lessons,
    # scenarios, env runners): a study whose every trial would fail is refused here
    first = [f"{param.key}={json.dumps(param.corners()[0])}" for param in params]
    try:
        check_before_start(load_config(config, first), f"{path} (its first trial)")
    except (ConfigError, SimError, ScenarioError) as exc:
        raise SpaceError(str(exc)) from None
    return params


def _param(path: Path, key: str, value: Any) -> Param:
    try:
        check_key(key, f"{path}: {key}")
    except ConfigError as exc:
        close = difflib.get_close_matches(key, _config_keys(), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise SpaceError(f"{exc}{hint}") from None
    example = f"e.g. {key}: {{choice: [...]}} or {{uniform: [low, high]}}"
    if not isinstance(value, dict) or len(value) != 1:
        raise SpaceError(f"{path}: {key}: expected one distribution, {example} (got {value!r})")
    ((name, args),) = value.items()
    if name not in DISTRIBUTIONS:
        close = difflib.get_close_matches(str(name), DISTRIBUTIONS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise SpaceError(
            f"{path}: {key}: unknown distribution {name!r}{hint}; "
            f"use one of {', '.join(DISTRIBUTIONS)}"
        )
    usage = f"{name} takes {DISTRIBUTIONS[name]}"
    if not isinstance(args, list) or not args:
        raise SpaceError(f"{path}: {key}: {usage} (got {args!r})")
    if name in ("choice", "grid"):
        return Param(key, name, tuple(args))
    numbers = all(isinstance(a, int | float) and not isinstance(a, bool) for a in args)
    if len(args) != 2 or not numbers or not all(math.isfinite(a) for a in args):
        raise SpaceError(f"{path}: {key}: {usage} (got {args!r})")
    low, high = args
    if not low < high:
        raise SpaceError(f"{path}: {key}: {usage}, low below high (got {args!r})")
    if name == "loguniform" and low <= 0:
        raise SpaceError(f"{path}: {key}: {usage} (got {args!r})")
    if name == "randint" and not all(isinstance(a, int) for a in args):
        raise SpaceError(f"{path}: {key}: {usage} (got {args!r})")
    return Param(key, name, (low, high))


def _config_keys(model: Any = ExperimentConfig, prefix: str = "") -> list[str]:
    from pydantic import BaseModel

    keys = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _config_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def given_values(params: list[Param], cfg: ExperimentConfig) -> dict[str, Any] | None:
    """The config's values of the space's keys, or None where one is unset."""
    data = cfg.model_dump(mode="json")
    values = {p.key: dig(data, p.key) for p in params}
    return None if any(v is None for v in values.values()) else values


def dig(data: Mapping[str, Any], dotted: str) -> Any:
    node: Any = data
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, Mapping) else None
    return node
