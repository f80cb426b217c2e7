"""Simple Adder: the "hello world" simulator — move a number to 50 by adding integers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from sims.contract import Range, SimSpec, Simulator, States

GOAL = 50.0
MAX_ADDEND = 10  # largest integer added (or subtracted) per step
MAX_STEPS = 10


class SimpleAdder(Simulator):
    """Add integers to a number until it equals 50.

    ## Description
    The smallest useful simulator, for checking that the whole pipeline works: a number
    starts uniform in [0, 100] and the agent adds an integer in [-10, 10] each step.

    ## Observation
    | name  | unit | min | max | notes                             |
    |-------|------|-----|-----|-----------------------------------|
    | value | -    | -100 | 200 | start +- 10 steps of 10          |

    ## Action
    | name   | unit | min | max | notes                             |
    |--------|------|-----|-----|-----------------------------------|
    | addend | -    | -10 | 10  | rounded to the nearest integer    |

    ## Reward
    ``1 - |value - 50| / 50`` per step: 1 at the goal, 0 at either end of [0, 100].

    ## Episode end
    Terminated when value == 50; truncated after 10 steps.

    ## Config (scenario parameters)
    - ``initial_value``: the starting number (lessons draw it uniform in [0, 100]).

    ## Version history
    - v0: first version.
    """

    PARAMETERS = {"initial_value": 25.0}  # noqa: RUF012

    def __init__(self) -> None:
        super().__init__()
        self.value = 0.0
        self.steps = 0

    def reset(self, config: Mapping[str, float]) -> States:
        # Starting values are whole numbers so that the goal can be hit exactly.
        self.value = float(round(config["initial_value"]))
        self.steps = 0
        self.terminated = self.truncated = False
        return {"value": self.value}

    def step(self, action: Mapping[str, float]) -> States:
        addend = max(-MAX_ADDEND, min(MAX_ADDEND, round(action["addend"])))
        self.value += addend
        self.steps += 1
        self.terminated = self.value == GOAL
        self.truncated = self.steps >= MAX_STEPS and not self.terminated
        return {"value": self.value}


def reward(states: Mapping[str, float], action: Mapping[str, float]) -> float:
    return 1.0 - abs(states["value"] - GOAL) / GOAL


def kpis(
    states: Sequence[Mapping[str, float]], actions: Sequence[Mapping[str, float]], terminated: bool
) -> dict[str, float]:
    """Whether and how fast the goal was reached."""
    return {
        "reached_count": float(terminated),
        "steps": float(len(actions)),
        "final_error": abs(states[-1]["value"] - GOAL),
    }


class StepTowardGoal:
    """The optimum: add the difference to 50, as far as one step allows."""

    def reset(self) -> None:
        pass

    def act(self, states: Mapping[str, float]) -> dict[str, float]:
        return {"addend": float(max(-MAX_ADDEND, min(MAX_ADDEND, GOAL - states["value"])))}


_HERE = Path(__file__).parent

SPEC = SimSpec(
    name="simple_adder",
    env_id="aml_rl/SimpleAdder-v0",
    simulator=SimpleAdder,
    observations={"value": Range(-100.0, 200.0)},  # every value 10 steps can reach
    actions={"addend": Range(-float(MAX_ADDEND), float(MAX_ADDEND))},
    reward=reward,
    log_states=("value",),
    lessons=_HERE / "lessons" / "simple_adder.yaml",
    baseline=StepTowardGoal,
    scenarios=_HERE / "lessons" / "simple_adder_scenarios.yaml",
    kpis=kpis,
    kpi_units={"reached_count": "episodes", "steps": "steps"},
    kpi_higher_better=frozenset({"reached_count"}),
    # not the return: an episode that reaches 50 ends, and so collects fewer rewards than one
    # that wanders near it for 10 steps (random actions out-return the optimal baseline)
    primary_kpi="reached_count",
    source=__file__,
)
