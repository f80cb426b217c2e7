"""The CSTR: agreement with an independent scipy reference, steady states, baseline, runaway."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from sims import cstr
from sims.registry import make_env


def reference_rhs(t: float, y: list[float], Tc: float) -> list[float]:
    """The published model written out again from its parameters, independent of sims.cstr."""
    Ca, T = y
    k = 34930800.0 * math.exp(-11843.0 / (1.98588 * T))  # 1/h
    dCa = 1.0 / 1.0 * (10.0 - Ca) - k * Ca
    dT = 1.0 / 1.0 * (298.2 - T) + 5960.0 / 500.0 * k * Ca - 150.0 / (1.0 * 500.0) * (T - Tc)
    return [dCa, dT]


def worst_relative_error(coolant: list[float]) -> float:
    """Step the simulator and the reference through the same coolant temperatures."""
    sim = cstr.CSTR()
    sim.reset({"Cref_signal": 5, "noise_percentage": 0})
    y = [sim.Ca, sim.T]
    worst = 0.0
    for Tc in coolant:
        sim.step({"dTc": Tc - sim.Tc})
        assert sim.Tc == pytest.approx(Tc)
        y = solve_ivp(
            reference_rhs, (0.0, 0.5), y, args=(Tc,), method="Radau", rtol=1e-11, atol=1e-11
        ).y[:, -1]
        worst = max(worst, abs(sim.Ca - y[0]) / abs(y[0]), abs(sim.T - y[1]) / abs(y[1]))
        if y[1] > cstr.RUNAWAY_T:
            break
    return worst


def pi_coolant(signal: int) -> list[float]:
    sim, pi = cstr.CSTR(), cstr.PIController()
    states = sim.reset({"Cref_signal": signal, "noise_percentage": 0})
    coolant = []
    while not sim.truncated:
        states = sim.step(pi.act(states))
        coolant.append(sim.Tc)
    return coolant


@pytest.mark.parametrize("signal", [1, 2, 3, 4])
def test_integrator_agrees_with_solve_ivp_over_a_controlled_transition(signal):
    assert worst_relative_error(pi_coolant(signal)) <= 1e-4


def test_integrator_agrees_with_solve_ivp_under_random_coolant_up_to_runaway():
    rng = np.random.default_rng(7)
    for _ in range(5):
        Tc, coolant = cstr.steady_state(cstr.CREF_HIGH)[1], []
        for _ in range(cstr.EPISODE_STEPS):
            Tc = min(cstr.TC_LIMITS[1], max(cstr.TC_LIMITS[0], Tc + rng.uniform(-10, 10)))
            coolant.append(Tc)
        assert worst_relative_error(coolant) <= 1e-4


def test_published_steady_states_are_reproduced():
    assert cstr.steady_state(8.57) == pytest.approx((311.2612, 297.98), abs=0.01)
    assert cstr.steady_state(2.0) == pytest.approx((373.1311, 305.04), abs=0.01)


@pytest.mark.parametrize("Ca", [8.57, 2.0])
def test_steady_states_hold_for_a_whole_episode(Ca):
    sim = cstr.CSTR()
    sim.reset({"Cref_signal": 5, "noise_percentage": 0})
    T, Tc = cstr.steady_state(Ca)
    sim.Ca, sim.T, sim.Tc = Ca, T, Tc
    for _ in range(cstr.EPISODE_STEPS):
        sim.step({"dTc": 0.0})
    assert sim.Ca == pytest.approx(Ca, rel=1e-6)
    assert pytest.approx(T, rel=1e-6) == sim.T
    assert sim.truncated


@pytest.mark.parametrize("signal", [1, 2])
def test_pi_baseline_completes_the_transition_without_runaway(signal):
    env = make_env("cstr")
    pi = env.spec_.baseline()
    _, info = env.reset(seed=0, options={"scenario": {"Cref_signal": signal}})
    temperatures, errors = [], []
    terminated = truncated = False
    while not (terminated or truncated):
        _, _, terminated, truncated, info = env.step(env.from_physical(pi.act(info["states"])))
        temperatures.append(info["states"]["T"])
        errors.append(info["states"]["Ca"] - info["states"]["Cref"])
    assert truncated and not terminated
    assert max(temperatures) < cstr.RUNAWAY_T
    assert info["states"]["Cref"] == pytest.approx(2.0)
    assert info["states"]["Ca"] == pytest.approx(2.0, abs=0.05)
    assert math.sqrt(np.mean(np.square(errors))) < 0.2


def test_signal_2_holds_for_ten_hours_then_ramps():
    assert [cstr.cref_at(h, 2) for h in (0.0, 10.0)] == [8.57, 8.57]
    assert cstr.cref_at(23.0, 2) == pytest.approx((8.57 + 2.0) / 2)
    assert cstr.cref_at(36.0, 2) == pytest.approx(2.0)
    assert cstr.cref_at(45.0, 5) == 8.57


def test_thermal_runaway_terminates_with_the_penalty():
    env = make_env("cstr")
    env.reset(seed=0, options={"scenario": {"Cref_signal": 5}})
    for _ in range(cstr.EPISODE_STEPS):
        _, reward, terminated, truncated, info = env.step(np.array([1.0], dtype=np.float32))
        if terminated:
            break
    assert terminated and not truncated, "no runaway after a whole episode of full heating"
    assert info["states"]["T"] > cstr.RUNAWAY_T
    assert reward == -10.0


def test_sensor_noise_moves_measurements_not_the_plant():
    env = make_env("cstr")
    _, quiet = env.reset(seed=3, options={"scenario": {"Cref_signal": 5, "noise_percentage": 0}})
    _, noisy = env.reset(seed=3, options={"scenario": {"Cref_signal": 5, "noise_percentage": 2}})
    assert noisy["states"]["Ca"] != quiet["states"]["Ca"]
    assert noisy["states"]["Tc"] == quiet["states"]["Tc"]
    assert env.simulator.Ca == pytest.approx(8.57)


def test_out_of_range_cref_signal_is_rejected_by_the_simulator():
    with pytest.raises(ValueError, match="Cref_signal must be one of 1-5, got 7"):
        cstr.CSTR().reset({"Cref_signal": 7, "noise_percentage": 0})


def test_error_observations_and_their_integral_follow_the_measurements():
    sim = cstr.CSTR()
    states = sim.reset({"Cref_signal": 5, "noise_percentage": 0})
    # On the steady state every error is zero.
    assert states["T_error"] == pytest.approx(0.0, abs=1e-9)
    assert states["Tc_error"] == pytest.approx(0.0, abs=1e-9)
    integral = 0.0
    for _ in range(4):  # 20 K hotter coolant: the reactor warms; the integral sums T_error * DT
        states = sim.step({"dTc": 5.0})
        integral += states["T_error"] * cstr.DT
        assert states["T_error"] == pytest.approx(states["T"] - states["Tref"])
        assert states["T_error_integral"] == pytest.approx(integral)
    assert states["Tc_error"] == pytest.approx(20.0)
    assert states["T_error"] > 0.0
    # Reset starts the integral again, and it is held within its limit.
    assert sim.reset({"Cref_signal": 5, "noise_percentage": 0})["T_error_integral"] == 0.0
    sim.integral = 1e6  # as if it had wound up: the next step holds it at the limit
    assert sim.step({"dTc": 0.0})["T_error_integral"] == cstr.INTEGRAL_LIMIT


def test_reward_is_sharp_near_the_set_point_and_keeps_a_gradient_far_off():
    at = {"Cref": 5.0, "T": 350.0}
    values = [cstr.reward({**at, "Ca": 5.0 + e}, {"dTc": 0.0}) for e in (0.0, 0.1, 0.2, 1.0, 3.0)]
    assert values[0] == 1.0
    assert values[1] == pytest.approx(0.5 * (math.exp(-0.01) + math.exp(-0.25)))
    assert values == sorted(values, reverse=True)  # strictly worse the further off
    assert values[1] - values[2] > 0.2  # 0.1 kmol/m3 matters (the published reward: 0.03)
    assert values[4] > 0.0
