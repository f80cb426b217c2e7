"""Assessment: the trained policy and the baseline, deterministically, on the same scenarios."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobs.checkpoints import damage, restorable
from jobs.rundir import (
    RunDir,
    RunError,
    assessment_episode_id,
    column_units,
    read_checkpoint_meta,
    write_atomic,
    write_json,
)
from jobs.trajectories import Rows
from sims.contract import SimError, SimulatorFault
from sims.handle import SimHandle
from sims.lessons import format_validation_error, read_yaml
from sims.registry import resolve

MODULE_PATH = Path("learner_group", "learner", "rl_module", "default_policy")
PLAIN_SCENARIOS = 5  # seeds 0-4 for a plain Gymnasium env, which has no scenario set
ATTEMPTS = 20  # tries per episode when the simulator fails (same seed, so the same result);
# a 1%-per-step fault fails a 90-step episode 60% of the time: 20 tries leave 4e-5


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and the key."""


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    seed: int = 0
    parameters: dict[str, float] = Field(default_factory=dict)


class ScenarioSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sim: str | None = None
    """The simulator these scenarios are for; checked against the checkpoint when given."""
    scenarios: list[Scenario] = Field(min_length=1)


def load_scenarios(path: Path, handle: SimHandle) -> list[Scenario]:
    """Scenarios from YAML, checked against the simulator's parameters."""
    try:
        data = read_yaml(path)
        scenario_set = ScenarioSet.model_validate(data)
    except SimError as exc:
        raise ScenarioError(str(exc)) from None
    except ValidationError as exc:
        raise ScenarioError(format_validation_error(str(path), exc)) from None
    if scenario_set.sim is not None:
        try:
            named = resolve(scenario_set.sim)
        except SimError as exc:
            raise ScenarioError(f"{path}: sim: {exc}") from None
        if named.label != handle.label:
            raise ScenarioError(
                f"{path}: these scenarios are for simulator {scenario_set.sim!r}, but the "
                f"checkpoint was trained on {handle.label!r}; pass scenarios for {handle.label}"
            )
    known = handle.parameters
    for i, scenario in enumerate(scenario_set.scenarios):
        unknown = [key for key in scenario.parameters if key not in known]
        if unknown:
            raise ScenarioError(
                f"{path}: scenarios[{i}].parameters: {', '.join(unknown)} not parameters of "
                f"simulator {handle.label} (the checkpoint's); known: "
                f"{', '.join(known) or '(none: it has no scenario parameters)'}"
            )
    _check_values(path, handle, scenario_set.scenarios)
    return list(scenario_set.scenarios)


def _check_values(path: Path, handle: SimHandle, scenarios: list[Scenario]) -> None:
    """Reset the simulator once with each scenario's parameters: a value it refuses (a
    signal number it does not have) is named here, not after training."""
    if not handle.parameters or not any(s.parameters for s in scenarios):
        return
    env = handle.make_env()
    try:
        for i, scenario in enumerate(scenarios):
            if not scenario.parameters:
                continue
            try:
                env.reset(seed=scenario.seed, options={"scenario": scenario.parameters})
            except (SimError, SimulatorFault) as exc:
                raise ScenarioError(
                    f"{path}: scenarios[{i}] ({scenario.name}): the simulator refuses "
                    f"{scenario.parameters}: {exc}"
                ) from None
    finally:
        env.close()


def default_scenarios(handle: SimHandle) -> list[Scenario]:
    """The simulator's own scenario set, or seeds 0-4 when it has none."""
    if handle.scenarios is not None:
        return load_scenarios(handle.scenarios, handle)
    return [Scenario(name=f"seed_{seed}", seed=seed) for seed in range(PLAIN_SCENARIOS)]


class AgentPolicy:
    """A trained RLModule acting deterministically on observations; no env runners needed."""

    def __init__(self, checkpoint: Path) -> None:
        import torch
        from ray.rllib.core.rl_module.rl_module import RLModule

        self._torch = torch
        # Absolute: RLlib reads the path as a URI, and a relative one has no scheme.
        self.module = RLModule.from_checkpoint((checkpoint / MODULE_PATH).resolve())
        self.module.eval()
        self._dist = self.module.get_inference_action_dist_cls()

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        with self._torch.no_grad():
            batch = {"obs": self._torch.as_tensor(np.asarray(obs, dtype=np.float32)[None])}
            logits = self.module.forward_inference(batch)["action_dist_inputs"]
            action = self._dist.from_logits(logits).to_deterministic().sample()
        return action[0].numpy()


@dataclass
class Episode:
    scenario: dict[str, float]
    """The scenario the environment drew (parameters; empty for a plain environment)."""
    states: list[dict[str, float]]
    actions: list[dict[str, float]]
    rewards: list[float]
    terminated: bool
    truncated: bool

    @property
    def ret(self) -> float:
        return float(sum(self.rewards))


class Controller:
    """What assessment drives an env with: ``reset()`` per episode, ``act(obs, info)`` per step."""

    def __init__(
        self, act: Callable[[Any, dict], Any], reset: Callable[[], None] = lambda: None
    ) -> None:
        self.act, self.reset = act, reset


def run_episode(
    env: gym.Env, handle: SimHandle, scenario: Scenario, controller: Controller
) -> Episode:
    obs, info = env.reset(seed=scenario.seed, options=handle.reset_options(scenario.parameters))
    controller.reset()
    scenario_drawn = dict(info["scenario"])
    states = [info["states"]]
    actions, rewards = [], []
    done = terminated = truncated = False
    while not done:
        action = controller.act(obs, info)
        obs, reward, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        states.append(info["states"])
        actions.append(info["action"])
        rewards.append(float(reward))
    return Episode(scenario_drawn, states, actions, rewards, bool(terminated), bool(truncated))


def run_with_retries(
    env: gym.Env, handle: SimHandle, scenario: Scenario, controller: Controller
) -> tuple[Episode, list[str]]:
    """An episode, retried from its seed when the simulator fails; the failures are returned."""
    failures: list[str] = []
    for _ in range(ATTEMPTS):
        try:
            return run_episode(env, handle, scenario, controller), failures
        except SimulatorFault as exc:
            failures.append(str(exc))
    raise SimulatorFault(
        f"scenario {scenario.name!r} failed {ATTEMPTS} times; the last error: {failures[-1]}"
    )


def _aggregate(name: str, values: pd.Series) -> float:
    if name.endswith("_count"):
        return float(values.sum())
    if name.startswith("max_"):
        return float(values.max())
    return float(values.mean())


@dataclass
class AssessmentResult:
    per_scenario: pd.DataFrame
    table: pd.DataFrame  # one row per controller
    units: dict[str, str]
    """Units of the KPIs that have one, by KPI name."""
    action_spread: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per controller, each action's range over every assessed step, as a share of the
    action's range (0: the same output whatever the state; ``jobs.verdict`` reads it)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "action_spread": self.action_spread,
            "kpis": {
                row["controller"]: {k: v for k, v in row.items() if k != "controller"}
                for row in self.table.to_dict("records")
            },
            "units": self.units,
            "scenarios": self.per_scenario.to_dict("records"),
        }


def _use_runs_package(checkpoint: Path) -> None:
    """A process simulator's package, as the checkpoint's run was configured with it, unless
    this process has one already (training assesses with its own)."""
    from sims.package import use_package
    from sims.process import PACKAGE_VARIABLE

    config = Path(checkpoint).parent.parent / "config.yaml"
    if os.environ.get(PACKAGE_VARIABLE) or not config.is_file():
        return
    data = yaml.safe_load(config.read_text()) or {}
    if isinstance(data, dict) and data.get("sim_package"):
        use_package(data["sim_package"], data.get("sim_package_sha256"))


def assess(
    checkpoint: Path,
    *,
    scenarios: Path | None = None,
    out: Path,
    trajectories: Path | None = None,
    run_id: str = "",
) -> AssessmentResult:
    """Run agent and baseline on every scenario; write ``kpis.csv``/``kpis.json`` under ``out``
    and the episodes as trajectories (phase ``assess``) under ``trajectories``."""
    meta = read_checkpoint_meta(checkpoint)
    try:
        _use_runs_package(checkpoint)
        handle = resolve(meta["sim"])
        chosen = load_scenarios(scenarios, handle) if scenarios else default_scenarios(handle)
        env = handle.make_env(lessons=meta.get("lessons"), lesson=meta.get("lesson") or 0)
    except SimError as exc:
        raise ScenarioError(f"{checkpoint}: {exc}") from None
    agent = AgentPolicy(checkpoint)
    expected = meta.get("observation_shape")
    if expected is not None and list(env.observation_space.shape) != list(expected):
        raise RunError(
            f"{checkpoint}: trained on observations of shape {expected}, but simulator "
            f"{handle.name} now gives {list(env.observation_space.shape)}; retrain, or assess "
            "with the simulator version it was trained on"
        )
    try:
        result, rows = compare(
            handle, env, chosen, Controller(lambda obs, info: agent(obs)), run_id=run_id
        )
    finally:
        env.close()  # a process simulator's process ends here
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "kpis.csv", result.table.to_csv(index=False))
    write_atomic(out / "scenarios.csv", result.per_scenario.to_csv(index=False))
    write_json(out / "kpis.json", result.to_json())
    if trajectories is not None:
        rows.flush(
            trajectories / f"assess-{checkpoint.name}-{out.name}.parquet",
            units=column_units(handle),
        )
    return result


def with_baseline(handle: SimHandle, env: gym.Env, agent: Controller) -> dict[str, Controller]:
    """The agent, and the simulator's baseline (when it has one) acting on named states."""
    controllers = {"agent": agent}
    if handle.baseline is not None:
        baseline = handle.baseline()
        controllers["baseline"] = Controller(
            lambda obs, info: env.from_physical(baseline.act(info["states"])),
            baseline.reset,
        )
    return controllers


def compare(
    handle: SimHandle,
    env: gym.Env,
    scenarios: list[Scenario],
    agent: Controller,
    *,
    run_id: str = "",
) -> tuple[AssessmentResult, Rows]:
    """Agent and baseline, deterministically, on every scenario: the KPI tables and the
    episodes as trajectory rows. Any controller can be the agent (a benchmark's peer too)."""
    controllers = with_baseline(handle, env, agent)
    rows, records = Rows(), []
    taken: dict[str, list[dict[str, float]]] = {name: [] for name in controllers}
    for scenario in scenarios:
        for controller, driver in controllers.items():
            episode, failures = run_with_retries(env, handle, scenario, driver)
            taken[controller].extend(episode.actions)
            record = {"controller": controller, "scenario": scenario.name, "return": episode.ret}
            if handle.kpis is not None:
                record.update(handle.kpis(episode.states, episode.actions, episode.terminated))
            record["sim_failures_count"] = float(len(failures))
            records.append(record)
            rows.add_episode(
                base={
                    "run_id": run_id,
                    "phase": "assess",
                    "controller": controller,
                    "env_runner": None,
                    "episode_id": assessment_episode_id(scenario.name, controller),
                    "lesson": None,
                },
                scenario=episode.scenario,
                states=episode.states,
                actions=[None, *episode.actions],
                rewards=[None, *episode.rewards],
                terminated=episode.terminated,
                truncated=episode.truncated,
            )
    per_scenario = pd.DataFrame.from_records(records)
    kpi_names = [c for c in per_scenario.columns if c not in ("controller", "scenario")]
    table = pd.DataFrame.from_records(
        [
            {"controller": name, **{k: _aggregate(k, group[k]) for k in kpi_names}}
            for name, group in per_scenario.groupby("controller", sort=False)
        ]
    )
    spread = {name: _spread(handle, actions) for name, actions in taken.items()}
    return AssessmentResult(per_scenario, table, handle.kpi_units, spread), rows


def _spread(handle: SimHandle, actions: list[dict[str, float]]) -> dict[str, float]:
    """Each action's range over ``actions`` as a share of its own range (of the values seen
    where it has none)."""
    out: dict[str, float] = {}
    for name, rng in handle.actions.items():
        values = [a[name] for a in actions if name in a]
        if not values:
            continue
        width = (rng.high - rng.low) if rng is not None else max(np.ptp(values), 1e-12)
        out[name] = round(float(np.ptp(values)) / width, 6)
    return out


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint folder, or a run directory (its newest checkpoint)."""
    if not path.exists():
        raise RunError(
            f"{path}: no such directory; pass a run directory (runs/<experiment>/<run-id>) or a "
            "checkpoint folder under its checkpoints/"
        )
    if (path / "config.yaml").is_file():
        latest = RunDir.open(path).latest_checkpoint()
        if latest is None:
            raise RunError(f"{path}: this run has no checkpoint yet; train it further first")
        path = latest
    meta = read_checkpoint_meta(path)  # raises with a message when it is not a checkpoint
    broken = damage(path, meta)
    if broken is not None:
        run = RunDir(path.parent.parent) if path.parent.name == "checkpoints" else None
        whole = [c.path for c in restorable(run) if c.damage is None] if run else []
        hint = f"pass the newest whole one, {whole[0]}" if whole else "retrain it"
        raise RunError(f"{path}: the checkpoint is damaged ({broken}); {hint}")
    return path


def default_out(checkpoint: Path) -> Path:
    """``<run>/assessments/<checkpoint>-<UTC time>`` beside the run the checkpoint belongs to."""
    from datetime import UTC, datetime

    run = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else Path.cwd()
    return run / "assessments" / f"{checkpoint.name}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
