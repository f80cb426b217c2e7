"""A heated buffer tank: level by an inlet valve, temperature by an electric heater (zoo)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from sims.contract import Range, SimSpec, Simulator, States

AREA = 2.0  # m2, tank cross-section
HEIGHT = 3.0  # m, overflow at the top
Q_MAX = 0.01  # m3/s, inlet flow with the valve fully open
P_MAX = 1000.0  # kW, heater
RHO_CP = 4186.0  # kJ/(m3 K), water
UA = 2.0  # kW/K, losses through the wall to 15 degC surroundings
T_AMBIENT = 15.0  # degC
DT = 30.0  # s per control step
STEPS = 60  # control steps: 30 min
LOW_LEVEL = 0.2  # m, below this the heater runs dry (counted as a violation)


class Tank(Simulator):
    """A well-mixed tank of water drawn by a pump downstream and refilled through a valve.

    ## Description
    The outflow is set by the consumer (a pump: the same flow whatever the level), so the
    level integrates the difference between inflow and outflow: without control it drains or
    overflows. Cold feed water enters through the valve; a heater warms the content. The
    consumer's demand steps during the episode and is measured.

    ## Observation
    | name        | unit  | min  | max  | notes                                  |
    |-------------|-------|------|------|----------------------------------------|
    | level       | m     | 0    | 3    |                                        |
    | temperature | degC  | 10   | 90   |                                        |
    | level_ref   | m     | 0    | 3    | level set point                        |
    | temp_ref    | degC  | 10   | 90   | temperature set point                  |
    | level_error | m     | -0.5 | 0.5  | level - level_ref (saturates)          |
    | temp_error  | K     | -10  | 10   | temperature - temp_ref (saturates)     |
    | demand      | m3/s  | 0    | 0.01 | the consumer's draw (measured)         |
    | feed_temp   | degC  | 5    | 25   | the feed water's temperature           |

    ## Action
    | name   | unit | min | max  |
    |--------|------|-----|------|
    | valve  | -    | 0   | 1    |
    | heater | kW   | 0   | 1000 |

    ## Reward
    ``exp(-(level_error / 0.05)^2) + exp(-(temp_error / 1)^2)`` per step: up to 2, so an
    episode returns up to 120.

    ## Episode end
    Truncated after 60 steps of 30 s.

    ## Config (scenario parameters)
    - ``demand_before``, ``demand_after`` (m3/s): the draw before and after step
      ``demand_step``.
    - ``level_ref``, ``temp_ref``: set points; ``feed_temp``: feed water temperature.

    ## Version history
    - v0: first version.
    """

    PARAMETERS = {  # noqa: RUF012
        "demand_before": 0.004,
        "demand_after": 0.006,
        "demand_step": 20.0,
        "level_ref": 1.5,
        "temp_ref": 40.0,
        "feed_temp": 15.0,
    }

    def reset(self, config: Mapping[str, float]) -> States:
        self.config = dict(config)
        self.level = self.config["level_ref"] + self.np_random.uniform(-0.2, 0.2)
        self.temperature = self.config["temp_ref"] + self.np_random.uniform(-3.0, 3.0)
        self.steps = 0
        self.terminated = self.truncated = False
        return self._states()

    def _demand(self) -> float:
        before = self.steps < self.config["demand_step"]
        return self.config["demand_before" if before else "demand_after"]

    def step(self, action: Mapping[str, float]) -> States:
        inflow = min(1.0, max(0.0, action["valve"])) * Q_MAX
        power = min(P_MAX, max(0.0, action["heater"]))
        outflow = self._demand() if self.level > 0.0 else 0.0
        volume = max(self.level, 0.05) * AREA
        heat = (
            inflow * RHO_CP * (self.config["feed_temp"] - self.temperature)
            + power
            - UA * (self.temperature - T_AMBIENT)
        )  # kW
        self.temperature += heat * DT / (RHO_CP * volume)
        self.level = min(HEIGHT, max(0.0, self.level + (inflow - outflow) * DT / AREA))
        self.steps += 1
        self.truncated = self.steps >= STEPS
        return self._states()

    def _states(self) -> States:
        return {
            "level": self.level,
            "temperature": self.temperature,
            "level_ref": self.config["level_ref"],
            "temp_ref": self.config["temp_ref"],
            "level_error": self.level - self.config["level_ref"],
            "temp_error": self.temperature - self.config["temp_ref"],
            "demand": self._demand(),
            "feed_temp": self.config["feed_temp"],
        }


def reward(states: Mapping[str, float], action: Mapping[str, float]) -> float:
    return math.exp(-((states["level_error"] / 0.05) ** 2)) + math.exp(
        -((states["temp_error"] / 1.0) ** 2)
    )


def kpis(
    states: Sequence[Mapping[str, float]], actions: Sequence[Mapping[str, float]], terminated: bool
) -> dict[str, float]:
    after = states[1:]
    return {
        "level_rms": math.sqrt(sum(s["level_error"] ** 2 for s in after) / len(after)),
        "temp_rms": math.sqrt(sum(s["temp_error"] ** 2 for s in after) / len(after)),
        "energy": sum(a["heater"] for a in actions) * DT / 3600.0,
        "overflow_count": float(sum(s["level"] >= HEIGHT for s in after)),
        "dry_count": float(sum(s["level"] <= LOW_LEVEL for s in after)),
    }


class TwoPI:
    """Two independent PI loops, as commissioned on site: level -> valve, temperature ->
    heater, each with a bias at its mid-range; no feedforward of the measured demand.

    Level: Kp 1.0 /m, Ti 300 s; temperature: Kp 100 kW/K, Ti 600 s; anti-windup by
    clamping the integral while the output saturates.
    """

    def __init__(self) -> None:
        self.level_i = self.temp_i = 0.0

    def reset(self) -> None:
        self.level_i = self.temp_i = 0.0

    def act(self, states: Mapping[str, float]) -> dict[str, float]:
        e_level = states["level_ref"] - states["level"]
        e_temp = states["temp_ref"] - states["temperature"]
        valve = 0.5 + 1.0 * (e_level + self.level_i / 300.0)
        heater = 500.0 + 100.0 * (e_temp + self.temp_i / 600.0)
        if 0.0 < valve < 1.0:
            self.level_i += e_level * DT
        if 0.0 < heater < P_MAX:
            self.temp_i += e_temp * DT
        return {"valve": min(1.0, max(0.0, valve)), "heater": min(P_MAX, max(0.0, heater))}


_HERE = Path(__file__).parent

SPEC = SimSpec(
    name="tank",
    env_id="aml_rl/Tank-v0",
    simulator=Tank,
    observations={
        "level": Range(0.0, HEIGHT, "m"),
        "temperature": Range(10.0, 90.0, "degC"),
        "level_ref": Range(0.0, HEIGHT, "m"),
        "temp_ref": Range(10.0, 90.0, "degC"),
        "level_error": Range(-0.5, 0.5, "m", saturates=True),
        "temp_error": Range(-10.0, 10.0, "K", saturates=True),
        "demand": Range(0.0, Q_MAX, "m3/s"),
        "feed_temp": Range(5.0, 25.0, "degC"),
    },
    actions={"valve": Range(0.0, 1.0), "heater": Range(0.0, P_MAX, "kW")},
    reward=reward,
    log_states=("level", "level_ref", "temperature", "temp_ref", "demand"),
    lessons=_HERE / "lessons" / "tank.yaml",
    baseline=TwoPI,
    scenarios=_HERE / "lessons" / "tank_scenarios.yaml",
    kpis=kpis,
    kpi_units={
        "level_rms": "m",
        "temp_rms": "K",
        "energy": "kWh",
        "overflow_count": "steps",
        "dry_count": "steps",
    },
    targets={"level": "level_ref", "temperature": "temp_ref"},
    constraint_kpis=frozenset({"overflow_count", "dry_count"}),
    source=__file__,
)
