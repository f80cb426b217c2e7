#!/usr/bin/env python3
"""Pole balancing on a cart as a process simulator (aml-rl-sim protocol 1), standard library only.

The physics are Gymnasium's CartPole (Barto, Sutton and Anderson 1983), with a continuous
force and a moving position set point. Requests arrive on fd 3, answers go to fd 4, one JSON
line each; prints go to this process's logs. Run by sims/balance.py.
"""

import json
import math
import os
import random
import sys

GRAVITY = 9.8  # m/s2
CART, POLE = 1.0, 0.1  # kg
HALF_LENGTH = 0.5  # m, half the pole's length
F_MAX = 10.0  # N
DT = 0.02  # s per control step
STEPS = 250  # 5 s
FALL = 0.5  # rad: the pole has fallen
TRACK = 2.4  # m: the cart left the track


class Balance:
    def reset(self, config, seed):
        rng = random.Random(seed)
        self.x, self.x_dot = config.get("start", 0.0), 0.0
        self.theta = rng.uniform(-0.05, 0.05)
        self.theta_dot = rng.uniform(-0.05, 0.05)
        self.target_1 = config.get("target_1", 0.0)
        self.target_2 = config.get("target_2", 0.5)
        self.switch_step = config.get("switch_step", 100.0)
        self.steps = 0
        return self.answer()

    def target(self):
        return self.target_1 if self.steps < self.switch_step else self.target_2

    def step(self, action):
        force = max(-F_MAX, min(F_MAX, float(action.get("force", 0.0))))
        total = CART + POLE
        sin, cos = math.sin(self.theta), math.cos(self.theta)
        temp = (force + POLE * HALF_LENGTH * self.theta_dot**2 * sin) / total
        theta_acc = (GRAVITY * sin - cos * temp) / (
            HALF_LENGTH * (4.0 / 3.0 - POLE * cos**2 / total)
        )
        x_acc = temp - POLE * HALF_LENGTH * theta_acc * cos / total
        self.x += DT * self.x_dot
        self.x_dot += DT * x_acc
        self.theta += DT * self.theta_dot
        self.theta_dot += DT * theta_acc
        self.steps += 1
        return self.answer()

    def answer(self):
        fallen = abs(self.theta) > FALL or abs(self.x) > TRACK
        target = self.target()
        return {
            "states": {
                "x": self.x,
                "x_dot": self.x_dot,
                "theta": self.theta,
                "theta_dot": self.theta_dot,
                "target": target,
                "x_error": self.x - target,
                "fallen": float(fallen),
            },
            "terminated": fallen,
            "truncated": not fallen and self.steps >= STEPS,
        }


def main():
    try:
        requests = os.fdopen(3, "r")
        answers = os.fdopen(4, "w")
    except OSError:
        print("balance_sim: fds 3 and 4 are not open; run me from aml-rl", file=sys.stderr)
        return 2
    sim = Balance()

    def send(message):
        answers.write(json.dumps(message) + "\n")
        answers.flush()

    send({"protocol": 1, "name": "balance"})
    for line in requests:
        request = json.loads(line)
        if request["op"] == "reset":
            send(sim.reset(request.get("config", {}), request.get("seed")))
        elif request["op"] == "step":
            send(sim.step(request.get("action", {})))
        elif request["op"] == "close":
            break
        else:
            send({"error": f"unknown op {request['op']!r}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
