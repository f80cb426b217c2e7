"""The simulator as a run saw it: ``RUN/sim.json``, written once when training starts.

The run's readers (the page, the report, the export) read this file, not the simulator, so
that a run downloaded from Azure ML or shared with a colleague opens where the simulator's
code is absent. A run from before this file existed is read from what it has: the simulator
if it can be imported here, else its trajectory files, with what is then missing said.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from jobs.rundir import ACTION, STATE, RunDir, RunError, column_units, write_atomic

SNAPSHOT_FILE = "sim.json"
SCHEMA = 1
REVISION_VARIABLE = "AML_RL_REVISION"
"""The commit a job's code was staged from (``invoke submit`` sets it: a code snapshot has
no ``.git``)."""
ROOT = Path(__file__).resolve().parents[1]
VERSIONS = ("ray", "torch", "gymnasium", "numpy")


class Signal(BaseModel):
    """A state's or action's range in the simulator's units; no bounds where it has none."""

    model_config = ConfigDict(extra="ignore")

    low: float
    high: float
    unit: str = ""


class SimSnapshot(BaseModel):
    """What the run's readers ask of its simulator, answered as :class:`sims.handle.SimHandle`
    answers it (the same attribute names), from the file."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = SCHEMA
    name: str
    label: str
    kind: Literal["simulator", "gymnasium", "unknown"]
    observations: dict[str, Signal | None]
    actions: dict[str, Signal | None]
    units: dict[str, str] = {}
    """Units of trajectory columns (``state_<name>``, ``action_<name>``)."""
    log_states: list[str] = []
    targets: dict[str, str] = {}
    kpi_units: dict[str, str] = {}
    primary_kpi: str = "return"
    constraint_kpis: list[str] = []
    higher_better_kpis: list[str] = []
    drawing: str | None = None
    """The JavaScript of the simulator's drawing."""
    step_time: float | None = None
    """Model time per control step, in ``time_unit``; None: time is counted in steps."""
    time_unit: str = ""
    limits: dict[str, tuple[float | None, float | None]] = {}
    """Constraint limits by state, (low, high)."""
    observation_space: str = ""
    """The environment's own observation space as Gymnasium prints it."""
    action_space: str = ""
    """The policy's action space as Gymnasium prints it."""
    action_kind: Literal["simulator", "discrete", "box", "other"] = "simulator"
    discrete_start: int = 0
    flattens_observation: bool = False
    missing: str = ""
    """Empty for a snapshot written by training; else what a run from before sim.json lacks."""

    def higher_is_better(self, kpi: str) -> bool:
        return kpi == "return" or kpi in self.higher_better_kpis

    def time_axis(self) -> tuple[float, str]:
        """(model time per step, axis title): ``(0.5, "time [h]")``, or ``(1, "step")``."""
        if self.step_time is None:
            return 1.0, "step"
        return self.step_time, f"time [{self.time_unit}]" if self.time_unit else "time"

    @classmethod
    def from_handle(cls, handle: Any) -> SimSnapshot:
        """The snapshot of a resolved simulator (a :class:`sims.handle.SimHandle`)."""
        import gymnasium as gym

        space = handle.action_space
        if handle.spec is not None:
            kind, start = "simulator", 0
        elif isinstance(space, gym.spaces.Discrete):
            kind, start = "discrete", int(space.start)
        elif isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
            kind, start = "box", 0
        else:
            kind, start = "other", 0
        assessed = handle.kpi_units
        return cls(
            name=handle.name,
            label=handle.label,
            kind=handle.kind,
            observations={k: _signal(r) for k, r in handle.observations.items()},
            actions={k: _signal(r) for k, r in handle.actions.items()},
            units=column_units(handle),
            log_states=handle.log_states,
            targets=handle.targets,
            kpi_units=assessed,
            primary_kpi=handle.primary_kpi,
            constraint_kpis=handle.constraint_kpis,
            higher_better_kpis=[k for k in assessed if handle.higher_is_better(k)],
            drawing=handle.drawing,
            step_time=(handle.step_time or (None, ""))[0],
            time_unit=(handle.step_time or (None, ""))[1],
            limits=handle.limits,
            observation_space=str(handle.own_observation_space),
            action_space=str(space),
            action_kind=kind,
            discrete_start=start,
            flattens_observation=handle.flattens_observation,
        )

    def write(self, run: RunDir) -> None:
        write_atomic(run.path / SNAPSHOT_FILE, self.model_dump_json(indent=2) + "\n")


def _signal(rng: Any) -> Signal | None:
    return None if rng is None else Signal(low=rng.low, high=rng.high, unit=rng.unit)


def read_snapshot(run: RunDir) -> SimSnapshot:
    """The run's ``sim.json``; for a run from before it, the simulator if it imports here, else
    what the trajectory files say (names and units; ``missing`` says what is not known)."""
    path = run.path / SNAPSHOT_FILE
    if path.is_file():
        try:
            return SimSnapshot.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValidationError) as exc:
            raise RunError(
                f"{path}: not the run's simulator snapshot ({type(exc).__name__}); restore it "
                f"from the run's copy, or delete it to read the run as one from before {path.name}"
            ) from None
    return _from_old_run(run)


def _from_old_run(run: RunDir) -> SimSnapshot:
    import yaml

    from sims.contract import SimError
    from sims.registry import resolve

    config = yaml.safe_load(run.config.read_text()) or {}
    name = str(config.get("sim", ""))
    try:
        return SimSnapshot.from_handle(resolve(name))
    except (SimError, ImportError, OSError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return _from_files(run, name, why)


def _from_files(run: RunDir, name: str, why: str) -> SimSnapshot:
    from jobs.trajectories import read_schema, trajectory_files, trajectory_units

    columns: list[str] = []
    for path in trajectory_files(run.trajectories):
        columns += [c for c in read_schema(path).names if c not in columns]
    states = [c.removeprefix(STATE) for c in columns if c.startswith(STATE)]
    actions = [c.removeprefix(ACTION) for c in columns if c.startswith(ACTION)]
    try:
        units = trajectory_units(run.path)
    except (OSError, ValueError):
        units = {}
    kpis = run.assessment / "kpis.json"
    kpi_units = json.loads(kpis.read_text()).get("units") or {} if kpis.is_file() else {}
    return SimSnapshot(
        name=name,
        label=name,
        kind="unknown",
        observations=dict.fromkeys(states),
        actions=dict.fromkeys(actions),
        units=units,
        log_states=states,
        kpi_units=kpi_units,
        missing=(
            f"no {SNAPSHOT_FILE} (a run from before it), and {name} cannot be imported here "
            f"({why}): ranges, set points, limits and the drawing are not shown"
        ),
    )


def git_revision() -> str:
    """The repository's HEAD commit, else ``$AML_RL_REVISION``, else ``unknown``."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        done = None
    if done is not None and done.returncode == 0:
        return done.stdout.strip()
    return os.environ.get(REVISION_VARIABLE) or "unknown"


def environment() -> dict[str, Any]:
    """Where and with what a run trained, for its page and summary."""
    versions = {"python": platform.python_version()}
    for name in VERSIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "git_revision": git_revision(),
        "versions": versions,
        "host": socket.gethostname(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
    }
