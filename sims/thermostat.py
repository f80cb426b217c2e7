"""A room heated by an on/off radiator: a plain Gymnasium environment with Dict spaces (zoo).

Written the way a Gymnasium user writes one, with no aml-rl contract: train it as
``sim: sims.thermostat:Thermostat``. ``ASSESSMENT`` below adds the baseline (an on/off
thermostat with hysteresis) and the KPIs that assessment compares the agent with.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from sims.contract import GymAssessment

DT = 60.0  # s per control step
STEPS = 960  # 16 h
C_ROOM = 5.0e6  # J/K, air, walls and furniture
C_RADIATOR = 2.0e5  # J/K
K_RADIATOR = 500.0  # W/K, radiator to room
K_ENVELOPE = 250.0  # W/K, room to outdoors
POWER = 8000.0  # W, the boiler's output to the radiator when on
ENERGY_PRICE = 0.0005  # reward per minute of heating


class Thermostat(gym.Env):
    """Keep a room at its set point with a heater that is either on or off.

    Observation (``Dict``): ``room`` {``temperatures``: room and radiator, degC, unbounded;
    ``error``: set point - room, K, unbounded}, ``outdoor`` (degC, -40 to 40) and
    ``setpoint`` (degC, 10 to 30). Action: ``Discrete(2)``, heater off or on. Reward:
    ``-(error^2) / 1000 - 0.0005`` per minute of heating; an episode (960 minutes) returns
    about -1. The outdoor temperature follows a daily sine whose mean, amplitude and phase
    the seed draws. The radiator lags the boiler by ~7 minutes, so waiting for the room to
    cross a threshold overshoots.
    """

    metadata = {"render_modes": []}  # noqa: RUF012 - Gymnasium's convention

    def __init__(self) -> None:
        unbounded = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.observation_space = gym.spaces.Dict(
            {
                "room": gym.spaces.Dict(
                    {
                        "temperatures": unbounded,
                        "error": gym.spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32),
                    }
                ),
                "outdoor": gym.spaces.Box(-40.0, 40.0, shape=(1,), dtype=np.float32),
                "setpoint": gym.spaces.Box(10.0, 30.0, shape=(1,), dtype=np.float32),
            }
        )
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        self.mean_out = rng.uniform(-5.0, 10.0)
        self.amplitude = rng.uniform(2.0, 6.0)
        self.phase = rng.uniform(0.0, 2.0 * math.pi)
        self.setpoint = rng.uniform(19.0, 23.0)
        self.room = self.setpoint + rng.uniform(-1.5, 1.5)
        self.radiator = self.room + rng.uniform(0.0, 10.0)
        self.minute = 0
        return self._obs(), {}

    def _outdoor(self) -> float:
        return self.mean_out + self.amplitude * math.sin(
            2.0 * math.pi * self.minute / 1440.0 + self.phase
        )

    def step(self, action: Any):
        on = int(action) == 1
        to_room = K_RADIATOR * (self.radiator - self.room)
        self.radiator += (POWER * on - to_room) * DT / C_RADIATOR
        self.room += (to_room - K_ENVELOPE * (self.room - self._outdoor())) * DT / C_ROOM
        self.minute += 1
        error = self.setpoint - self.room
        reward = -(error**2) / 1000.0 - ENERGY_PRICE * on
        return self._obs(), reward, False, self.minute >= STEPS, {}

    def _obs(self) -> dict[str, Any]:
        return {
            "room": {
                "temperatures": np.array([self.room, self.radiator], dtype=np.float32),
                "error": np.array([self.setpoint - self.room], dtype=np.float32),
            },
            "outdoor": np.array([self._outdoor()], dtype=np.float32),
            "setpoint": np.array([self.setpoint], dtype=np.float32),
        }


ROOM, ERROR, RADIATOR = "room_temperatures_0", "room_error", "room_temperatures_1"


class Hysteresis:
    """The thermostat on the wall: on below set point - 0.5 K, off above set point + 0.5 K."""

    BAND = 0.5  # K

    def __init__(self) -> None:
        self.on = False

    def reset(self) -> None:
        self.on = False

    def act(self, states: Mapping[str, float]) -> dict[str, float]:
        error = states[ERROR]
        if error > self.BAND:
            self.on = True
        elif error < -self.BAND:
            self.on = False
        return {"a0": float(self.on)}


def kpis(
    states: Sequence[Mapping[str, float]], actions: Sequence[Mapping[str, float]], terminated: bool
) -> dict[str, float]:
    after = states[1:]
    return {
        "temp_rms": math.sqrt(sum(s[ERROR] ** 2 for s in after) / len(after)),
        "heating_hours": sum(a["a0"] for a in actions) / 60.0,
        "switches": float(sum(a["a0"] != b["a0"] for a, b in itertools.pairwise(actions))),
    }


ASSESSMENT = GymAssessment(
    baseline=Hysteresis,
    kpis=kpis,
    kpi_units={"temp_rms": "K", "heating_hours": "h", "switches": "switches"},
    primary_kpi="temp_rms",
)
