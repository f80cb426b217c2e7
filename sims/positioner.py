"""A linear positioning stage: a carriage on a rail moved by a force to a target (zoo)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from sims.contract import Range, SimSpec, Simulator, States

MASS = 10.0  # kg, carriage and load
FRICTION = 5.0  # N s/m, viscous
F_MAX = 50.0  # N, actuator force limit
RAIL = 1.0  # m, end stops at +-RAIL
DT = 0.05  # s per control step
STEPS = 200  # control steps: 10 s


class Positioner(Simulator):
    """A carriage on a horizontal rail, pushed by a linear motor, carrying a load that pulls
    it with a constant force (a cable, a slope), which a load cell measures.

    ## Description
    Force in, position out: a double integrator with a little viscous friction, so the
    position does not settle by itself (an integrating plant). The target moves once during
    the episode.

    ## Observation
    | name     | unit | min  | max | notes                               |
    |----------|------|------|-----|-------------------------------------|
    | position | m    | -1   | 1   |                                     |
    | velocity | m/s  | -2   | 2   |                                     |
    | target   | m    | -1   | 1   |                                     |
    | error    | m    | -1   | 1   | position - target                   |
    | load     | N    | -20  | 20  | the load's pull (measured)          |

    ## Action
    | name  | unit | min | max |
    |-------|------|-----|-----|
    | force | N    | -50 | 50  |

    ## Reward
    ``-1000 |error|`` per step: minus the error in millimetres, so an episode that starts
    0.5 m off returns of the order of -10,000.

    ## Episode end
    Truncated after 200 steps of 50 ms. The end stops (+-1 m) stop the carriage dead.

    ## Config (scenario parameters)
    - ``start``, ``target_1``, ``target_2`` (m), ``switch_step``: the target is ``target_1``
      until ``switch_step``, then ``target_2``.
    - ``load`` (N): the load's constant pull.

    ## Version history
    - v0: first version.
    """

    PARAMETERS = {  # noqa: RUF012
        "start": 0.0,
        "target_1": 0.5,
        "target_2": -0.3,
        "switch_step": 100.0,
        "load": 5.0,
    }

    def reset(self, config: Mapping[str, float]) -> States:
        self.config = dict(config)
        self.position, self.velocity = self.config["start"], 0.0
        self.steps = 0
        self.hits = 0
        self.terminated = self.truncated = False
        return self._states()

    def _target(self) -> float:
        first = self.steps < self.config["switch_step"]
        return self.config["target_1" if first else "target_2"]

    def step(self, action: Mapping[str, float]) -> States:
        force = min(F_MAX, max(-F_MAX, action["force"]))
        accel = (force + self.config["load"] - FRICTION * self.velocity) / MASS
        self.velocity += accel * DT
        self.position += self.velocity * DT
        if abs(self.position) >= RAIL:
            self.position = math.copysign(RAIL, self.position)
            self.velocity = 0.0
            self.hits += 1
        self.steps += 1
        self.truncated = self.steps >= STEPS
        return self._states()

    def _states(self) -> States:
        target = self._target()
        return {
            "position": self.position,
            "velocity": self.velocity,
            "target": target,
            "error": self.position - target,
            "load": self.config["load"],
            "end_stop_hits": float(self.hits),
        }


def reward(states: Mapping[str, float], action: Mapping[str, float]) -> float:
    return -1000.0 * abs(states["error"])


def kpis(
    states: Sequence[Mapping[str, float]], actions: Sequence[Mapping[str, float]], terminated: bool
) -> dict[str, float]:
    after = states[1:]
    return {
        "position_rms": math.sqrt(sum(s["error"] ** 2 for s in after) / len(after)),
        "max_abs_velocity": max(abs(s["velocity"]) for s in after),
        "end_stop_count": states[-1]["end_stop_hits"],
    }


class PD:
    """The PD loop a drives engineer would commission: ``F = Kp e + Kd de/dt`` with
    Kp = 100 N/m and Kd = 60 N s/m (natural frequency 3.2 rad/s, damping 1.0 with the
    friction), on the measured position; the load is left to the loop, which holds a
    steady offset of load / Kp."""

    KP = 100.0  # N/m
    KD = 60.0  # N s/m

    def reset(self) -> None:
        pass

    def act(self, states: Mapping[str, float]) -> dict[str, float]:
        force = -self.KP * states["error"] - self.KD * states["velocity"]
        return {"force": min(F_MAX, max(-F_MAX, force))}


_HERE = Path(__file__).parent

SPEC = SimSpec(
    name="positioner",
    env_id="aml_rl/Positioner-v0",
    simulator=Positioner,
    observations={
        "position": Range(-RAIL, RAIL, "m"),
        "velocity": Range(-2.0, 2.0, "m/s"),
        "target": Range(-RAIL, RAIL, "m"),
        "error": Range(-1.0, 1.0, "m"),
        "load": Range(-20.0, 20.0, "N"),
    },
    actions={"force": Range(-F_MAX, F_MAX, "N")},
    reward=reward,
    log_states=("position", "target", "velocity"),
    lessons=_HERE / "lessons" / "positioner.yaml",
    baseline=PD,
    scenarios=_HERE / "lessons" / "positioner_scenarios.yaml",
    kpis=kpis,
    kpi_units={"position_rms": "m", "max_abs_velocity": "m/s", "end_stop_count": "hits"},
    targets={"position": "target"},
    primary_kpi="position_rms",
    constraint_kpis=frozenset({"end_stop_count"}),
    source=__file__,
)
