"""Conformance checker: does a simulator behave well enough to train on, before any cluster?"""

from __future__ import annotations

import pickle
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env

from sims.contract import SimError, SimulatorFault
from sims.handle import SimHandle
from sims.registry import resolve

Status = Literal["pass", "warn", "fail", "skip"]
POLICY_ACTIONS = (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete)
CLIP_WARN_FRACTION = 0.01  # warn when more than 1% of a state's observations are clipped
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Gymnasium colours its warnings


@dataclass
class Finding:
    check: str
    status: Status
    detail: str = ""


@dataclass
class Report:
    sim: str
    findings: list[Finding] = field(default_factory=list)
    mean_step_us: float | None = None
    steps: int = 0

    @property
    def ok(self) -> bool:
        return all(f.status != "fail" for f in self.findings)

    @property
    def steps_per_s(self) -> float | None:
        return 1e6 / self.mean_step_us if self.mean_step_us else None

    def add(self, check: str, status: Status, detail: str = "") -> None:
        self.findings.append(Finding(check, status, detail))

    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "fail"]


def _same(a: Any, b: Any) -> bool:
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def _rollout(env: gym.Env, seed: int, actions: list[Any], options: dict | None = None) -> list:
    """Observations, rewards and flags (and raw states for our sims) of one seeded episode;
    the scenario drawn is first, so that a trace can be compared with or without it."""
    obs, info = env.reset(seed=seed, options=options)
    trace = [(info.get("scenario"),), (obs, info.get("states"))]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        trace.append((obs, reward, terminated, truncated, info.get("states")))
        if terminated or truncated:
            break
    return trace


def _traces_equal(a: list, b: list) -> bool:
    if len(a) != len(b):
        return False
    return all(
        len(x) == len(y)
        and all(_same(u, v) if u is not None else v is None for u, v in zip(x, y, strict=True))
        for x, y in zip(a, b, strict=True)
    )


def _actions(space: gym.Space, seed: int, n: int) -> list[Any]:
    space.seed(seed)
    return [space.sample() for _ in range(n)]


def _check_gymnasium(report: Report, make: Any) -> None:
    env = make()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            check_env(env.unwrapped, skip_render_check=True)
        except Exception as exc:  # the checker raises AssertionError and others; report them all
            report.add("gymnasium env checker", "fail", f"{type(exc).__name__}: {exc}")
            return
    messages = sorted(
        {_ANSI.sub("", str(w.message)) for w in caught if "render" not in str(w.message)}
    )
    if messages:
        report.add("gymnasium env checker", "warn", "; ".join(messages))
    else:
        report.add("gymnasium env checker", "pass")


def _check_spaces(report: Report, env: gym.Env) -> None:
    """What the policy sees must be a Box observation and a Box/Discrete/MultiDiscrete action."""
    obs_space, action_space = env.observation_space, env.action_space
    problems = []
    if not isinstance(obs_space, gym.spaces.Box):
        problems.append(f"observation space is {obs_space}, expected a Box")
    if not isinstance(action_space, POLICY_ACTIONS):
        problems.append(
            f"action space is {action_space}, expected a Box, Discrete or MultiDiscrete"
        )
    obs, _ = env.reset(seed=0)
    step_obs = env.step(action_space.sample())[0]
    for where, value in (("reset", obs), ("step", step_obs)):
        if not obs_space.contains(value):
            dtype = getattr(value, "dtype", type(value).__name__)
            problems.append(f"{where}() observation {value!r} ({dtype}) is outside {obs_space}")
    detail = f"observation {obs_space}, action {action_space}"
    inner = env.unwrapped
    if (inner.observation_space, inner.action_space) != (obs_space, action_space):
        detail += f" (the environment's own: {inner.observation_space}, {inner.action_space})"
    report.add("spaces and dtypes", "fail" if problems else "pass", "; ".join(problems) or detail)


def _check_determinism(report: Report, make: Any, seed: int) -> None:
    first, second = make(), make()
    actions = _actions(first.action_space, seed, 200)
    for episode in range(3):
        a = _rollout(first, seed + episode, actions)
        b = _rollout(second, seed + episode, actions)
        if not _traces_equal(a, b):
            first_diff = next(
                (
                    i
                    for i, (x, y) in enumerate(zip(a, b, strict=False))
                    if not _traces_equal([x], [y])
                ),
                min(len(a), len(b)),
            )
            where = {0: "in the scenario drawn", 1: "at reset"}.get(
                first_diff, f"at step {first_diff - 1}"
            )
            report.add(
                "seeded determinism",
                "fail",
                f"two instances with seed {seed + episode} and the same actions diverge {where}; "
                "draw all randomness from self.np_random (set by the adapter), never "
                "from random or np.random",
            )
            return
    report.add("seeded determinism", "pass", "3 seeded episodes identical across two instances")


def _check_parameters(report: Report, handle: SimHandle, env: gym.Env, seed: int) -> None:
    if not handle.parameters:
        report.add(
            "lesson parameters reach the simulator",
            "skip",
            f"{handle.kind}: no scenario parameters",
        )
        return
    params: dict[str, set[float]] = {}
    for lesson in env.unwrapped.plan.lessons:
        for key, param in lesson.parameters.items():
            params.setdefault(key, set()).update(param.extremes())
    if not params:
        report.add("lesson parameters reach the simulator", "skip", "the lessons set no parameters")
        return
    actions = _actions(env.action_space, seed, 500)
    silent, single = [], []
    for key, values in params.items():
        if len(values) < 2:
            single.append(key)
            continue
        low, high = min(values), max(values)
        a = _rollout(env, seed, actions, {"scenario": {key: low}})
        b = _rollout(env, seed, actions, {"scenario": {key: high}})
        if _traces_equal(a[1:], b[1:]) and (  # what the simulator did, not what was asked
            # random actions may end the episode before a parameter acts (an unstable plant
            # falls, a switch comes later): the baseline keeps it going
            handle.baseline is None
            or _states_equal(
                _closed_loop(env, handle, seed, {key: low}),
                _closed_loop(env, handle, seed, {key: high}),
            )
        ):
            silent.append(f"{key} ({low} and {high} give identical trajectories)")
    if silent:
        report.add(
            "lesson parameters reach the simulator",
            "fail",
            f"{', '.join(silent)}; read these from the config in "
            f"{type(env.unwrapped.simulator).__name__}.reset()",
        )
    else:
        note = f"; only one value in the lessons, not varied: {', '.join(single)}" if single else ""
        report.add(
            "lesson parameters reach the simulator",
            "pass",
            f"{len(params) - len(single)} varied{note}",
        )


def _closed_loop(
    env: gym.Env, handle: SimHandle, seed: int, scenario: dict[str, float], steps: int = 500
) -> list[dict[str, float]]:
    """The states of one seeded episode under the baseline."""
    baseline = handle.baseline()
    baseline.reset()
    _, info = env.reset(seed=seed, options={"scenario": scenario})
    states = [info["states"]]
    for _ in range(steps):
        _, _, terminated, truncated, info = env.step(env.from_physical(baseline.act(states[-1])))
        states.append(info["states"])
        if terminated or truncated:
            break
    return states


def _states_equal(a: list[dict[str, float]], b: list[dict[str, float]]) -> bool:
    return len(a) == len(b) and all(x == y for x, y in zip(a, b, strict=True))


def _check_random_policy(
    report: Report, handle: SimHandle, env: gym.Env, seed: int, episodes: int, max_steps: int
) -> None:
    observed: dict[str, list[float]] = {}
    elapsed, steps = 0.0, 0
    env.action_space.seed(seed)
    try:
        for episode in range(episodes):
            env.reset(seed=seed + episode)
            done = False
            while not done and steps < max_steps:
                action = env.action_space.sample()
                start = time.perf_counter()
                _, _, terminated, truncated, info = env.step(action)
                elapsed += time.perf_counter() - start
                steps += 1
                done = terminated or truncated
                for name, value in info["states"].items():
                    if not np.isfinite(value):
                        raise SimulatorFault(
                            f"state {name!r} is {value} at step {steps} of episode {episode}"
                        )
                    observed.setdefault(name, []).append(value)
            if steps >= max_steps:
                break
    except SimulatorFault as exc:
        report.add("finite states (NaN/inf)", "fail", str(exc))
        return
    report.add("finite states (NaN/inf)", "pass", f"{steps} random-policy steps")
    report.steps = steps
    report.mean_step_us = elapsed / steps * 1e6 if steps else None
    ranged = {
        name: rng
        for name, rng in handle.observations.items()
        if rng is not None and not rng.saturates and name in observed
    }
    if not ranged:
        report.add("observations inside normalisation ranges", "skip", "no bounded observations")
        return
    wide = []
    for name, rng in ranged.items():
        values = np.asarray(observed[name])
        clipped = np.mean((values < rng.low) | (values > rng.high))
        if clipped > CLIP_WARN_FRACTION:
            wide.append(
                f"{name}: {clipped:.1%} clipped, observed {values.min():.4g} to {values.max():.4g} "
                f"vs range [{rng.low:.4g}, {rng.high:.4g}]"
            )
    if wide:
        report.add(
            "observations inside normalisation ranges",
            "warn",
            "; ".join(wide) + "; widen these ranges (SPEC.observations, or the space's bounds)",
        )
    else:
        report.add(
            "observations inside normalisation ranges", "pass", "<= 1% clipped for every state"
        )


SCALE_EPISODES = 5  # episodes of each controller for the return scale


def _returns(env: gym.Env, seed: int, act: Any, reset: Any, max_steps: int) -> list[float]:
    """Episode returns of a controller (``act(obs, info)``) from seeds ``seed, seed + 1...``."""
    returns = []
    for episode in range(SCALE_EPISODES):
        obs, info = env.reset(seed=seed + episode)
        reset()
        total, done, steps = 0.0, False, 0
        while not done and steps < max_steps:
            obs, reward, terminated, truncated, info = env.step(act(obs, info))
            total += float(reward)
            done, steps = terminated or truncated, steps + 1
        returns.append(total)
    return returns


def _check_return_scale(
    report: Report, handle: SimHandle, env: gym.Env, seed: int, max_steps: int
) -> None:
    """The scale of episode returns under random actions and under the baseline: what the
    recipe's reward normalisation will divide by, and whether the baseline does better than
    chance at all (a reward whose sign is wrong does not)."""
    env.action_space.seed(seed)
    randomly = _returns(env, seed, lambda obs, info: env.action_space.sample(), lambda: None,
                        max_steps)  # fmt: skip
    text = (
        f"random actions: mean {np.mean(randomly):.4g} ({min(randomly):.4g} to {max(randomly):.4g})"
    )
    if handle.baseline is None:
        report.add("return scale", "pass", f"{text} over {SCALE_EPISODES} episodes; no baseline")
        return
    baseline = handle.baseline()
    by_baseline = _returns(
        env, seed, lambda obs, info: env.from_physical(baseline.act(info["states"])),
        baseline.reset, max_steps,
    )  # fmt: skip
    text += f"; baseline: mean {np.mean(by_baseline):.4g} over {SCALE_EPISODES} episodes each"
    if np.mean(by_baseline) <= np.mean(randomly):
        report.add(
            "return scale",
            "warn",
            f"{text}: the baseline does no better than random actions; check the reward's "
            "sign and the baseline (the verdict compares the agent with it)",
        )
    else:
        report.add("return scale", "pass", text)


def _check_pickle(report: Report, make: Any, seed: int) -> None:
    env = make()
    try:
        copy = pickle.loads(pickle.dumps(env))
    except Exception as exc:  # pickle raises many types; all mean "Ray cannot ship this"
        report.add(
            "pickles (Ray ships envs to workers)",
            "fail",
            f"{type(exc).__name__}: {exc}; use module-level functions for reward/terminal and "
            "keep no open files, sockets or locks on the simulator",
        )
        return
    actions = _actions(env.action_space, seed, 50)
    same = _traces_equal(_rollout(env, seed, actions), _rollout(copy, seed, actions))
    report.add(
        "pickles (Ray ships envs to workers)",
        "pass" if same else "fail",
        "the unpickled copy replays identically"
        if same
        else "the unpickled copy behaves differently",
    )


def _check_batch(report: Report, handle: SimHandle, make: Any, seed: int) -> None:
    """A spec's batch simulator must give the simulator's states step for step; say
    whether it is faster, so the user knows whether ``env_runners.batched`` pays."""
    from sims.batch import compare

    check = "batch simulator matches the simulator"
    if handle.spec is None or handle.spec.batch_simulator is None:
        return  # the batch form is optional
    n = 8
    result = compare(make, n=n, seed=seed)
    if result.mismatch is not None:
        report.add(
            check,
            "fail",
            f"{result.mismatch}; the batch must compute what the scalar simulator does, step "
            "for step (the same operations in the same order; NumPy's exp and log differ from "
            "math's in the last bit)",
        )
        return
    ratio = result.scalar_s / result.batch_s if result.batch_s else float("inf")
    advice = (
        "set env_runners.batched: true to use it"
        if ratio > 1
        else "slower than the scalar simulator here: leave env_runners.batched off"
    )
    report.add(
        check,
        "pass",
        f"{n} sub-envs x {result.steps} steps identical through {result.episodes} episode "
        f"ends; {ratio:.2f}x the scalar simulator's speed over {n} envs ({advice})",
    )


def check_sim(
    name: str,
    *,
    lessons: Path | None = None,
    seed: int = 0,
    episodes: int = 30,
    max_steps: int = 3000,
) -> Report:
    """Run every conformance check on the simulator ``name``; never raises for sim problems."""
    report = Report(sim=name)
    try:
        handle = resolve(name)

        def make() -> gym.Env:
            return handle.make_env(lessons=lessons)

        env = make()
    except SimError as exc:
        report.add("construct", "fail", str(exc))
        return report
    report.add("construct", "pass", f"{handle.kind}: {type(env.unwrapped).__name__}")
    try:
        _check_gymnasium(report, make)
        _check_spaces(report, make())
        _check_determinism(report, make, seed)
        _check_parameters(report, handle, make(), seed)
        _check_random_policy(report, handle, make(), seed, episodes, max_steps)
        _check_return_scale(report, handle, make(), seed, max_steps)
        _check_pickle(report, make, seed)
        _check_batch(report, handle, make, seed)
    except (SimError, SimulatorFault) as exc:
        report.add("run", "fail", str(exc))
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m sims.check --sim NAME``: the same report as ``invoke check-sim``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sims.check", description=__doc__)
    parser.add_argument("--sim", default="cstr", help="simulator name or Gymnasium id")
    parser.add_argument("--lessons", type=Path, help="a lessons YAML to check instead")
    parser.add_argument("--episodes", type=int, default=30, help="random-policy episodes")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes {args.episodes}: give 1 or more random-policy episodes")
    report = check_sim(args.sim, lessons=args.lessons, episodes=args.episodes)
    render(report)
    return 0 if report.ok else 1


def render(report: Report) -> None:
    """Print the report as a table, then the step rate and the verdict."""
    from rich.console import Console
    from rich.table import Table

    colours = {"pass": "green", "warn": "yellow", "fail": "red", "skip": "dim"}
    table = Table(title=f"check-sim: {report.sim}", show_lines=False)
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for f in report.findings:
        table.add_row(f.check, f"[{colours[f.status]}]{f.status}[/]", f.detail)
    console = Console()
    console.print(table)
    if report.steps_per_s:
        console.print(
            f"step rate: {report.steps_per_s:,.0f} steps/s "
            f"({report.mean_step_us:.1f} µs/step over {report.steps} random-policy steps)"
        )
    verdict = "[green]PASS[/]" if report.ok else f"[red]FAIL[/] ({len(report.failures())} failing)"
    console.print(f"{report.sim}: {verdict}")


if __name__ == "__main__":
    raise SystemExit(main())
