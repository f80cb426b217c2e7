"""Pole balancing on a cart, run as its own process: an open-loop unstable plant (zoo).

The simulator is ``sims/native/balance_sim.py``, a Python script that speaks the
``aml-rl-sim/1`` protocol (:mod:`sims.process`) with the standard library only: the shape of
a vendor's simulator in any language. Its physics are Gymnasium's CartPole with a continuous
force and a position set point that moves once.

## Observation
| name      | unit  | min  | max | notes                                   |
|-----------|-------|------|-----|-----------------------------------------|
| x         | m     | -2.4 | 2.4 | cart position                           |
| x_dot     | m/s   | -3   | 3   |                                         |
| theta     | rad   | -0.5 | 0.5 | pole angle, 0 upright (falls beyond)    |
| theta_dot | rad/s | -3   | 3   |                                         |
| target    | m     | -1.5 | 1.5 | position set point                      |
| x_error   | m     | -2   | 2   | x - target                              |

## Action
| name  | unit | min | max |
|-------|------|-----|-----|
| force | N    | -10 | 10  |

## Reward
``0.5 + 0.5 exp(-(x_error / 0.3)^2)`` per step while the pole stands: up to 250 an episode.

## Episode end
Terminated when the pole leans beyond 0.5 rad or the cart leaves the track (+-2.4 m);
truncated after 250 steps of 20 ms.

## KPIs
``position_rms`` over the whole 250 steps, a step after a fall counting as 2.4 m off (so a
dropped pole never looks like good tracking); ``fall_count``, a constraint.

## Config (scenario parameters)
``start``, ``target_1``, ``target_2`` (m) and ``switch_step``.

## Version history
- v0: first version.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from sims.contract import Range, SimSpec
from sims.process import ProcessSim

F_MAX = 10.0  # N
EPISODE_STEPS = 250  # as the simulator's STEPS
TRACK = 2.4  # m, half the track: the error counted for every step after a fall

PARAMETERS = {"start": 0.0, "target_1": 0.0, "target_2": 0.5, "switch_step": 100.0}


def reward(states: Mapping[str, float], action: Mapping[str, float]) -> float:
    if states["fallen"]:
        return 0.0
    return 0.5 + 0.5 * math.exp(-((states["x_error"] / 0.3) ** 2))


def kpis(
    states: Sequence[Mapping[str, float]], actions: Sequence[Mapping[str, float]], terminated: bool
) -> dict[str, float]:
    after = states[1:]
    # a fall ends the episode early: its remaining steps count as the largest error, so that
    # dropping the pole never looks like good tracking
    errors = [s["x_error"] ** 2 for s in after] + [TRACK**2] * (EPISODE_STEPS - len(after))
    return {
        "position_rms": math.sqrt(sum(errors) / len(errors)),
        "max_abs_angle": max(abs(s["theta"]) for s in after),
        "fall_count": float(terminated),
        "steps_up": float(len(after)),
    }


class StateFeedback:
    """Full-state feedback from an LQR design on the linearised cart-pole (Q = diag(1, 0.1,
    10, 1), R = 1), rounded: the position weight, small beside the angle's, keeps the pole
    safe at the price of a slow move to the set point. Force limited to +-10 N."""

    GAINS = {"x_error": 1.0, "x_dot": 2.05, "theta": 30.8, "theta_dot": 7.87}  # noqa: RUF012

    def reset(self) -> None:
        pass

    def act(self, states: Mapping[str, float]) -> dict[str, float]:
        force = sum(gain * states[name] for name, gain in self.GAINS.items())
        return {"force": min(F_MAX, max(-F_MAX, force))}


_HERE = Path(__file__).parent

SPEC = SimSpec(
    name="balance",
    env_id="aml_rl/Balance-v0",
    simulator=ProcessSim(
        name="balance",
        command=("python3", "{package}/balance_sim.py"),
        parameters=PARAMETERS,
        package=str(_HERE / "native"),
    ),
    observations={
        "x": Range(-2.4, 2.4, "m"),
        "x_dot": Range(-3.0, 3.0, "m/s"),
        "theta": Range(-0.5, 0.5, "rad"),
        "theta_dot": Range(-3.0, 3.0, "rad/s"),
        "target": Range(-1.5, 1.5, "m"),
        "x_error": Range(-2.0, 2.0, "m"),
    },
    actions={"force": Range(-F_MAX, F_MAX, "N")},
    reward=reward,
    log_states=("x", "target", "theta"),
    lessons=_HERE / "lessons" / "balance.yaml",
    baseline=StateFeedback,
    scenarios=_HERE / "lessons" / "balance_scenarios.yaml",
    kpis=kpis,
    kpi_units={
        "position_rms": "m",
        "max_abs_angle": "rad",
        "fall_count": "episodes",
        "steps_up": "steps",
    },
    kpi_higher_better=frozenset({"steps_up"}),
    targets={"x": "target"},
    primary_kpi="position_rms",
    constraint_kpis=frozenset({"fall_count"}),
    source=__file__,
)
