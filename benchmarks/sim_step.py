"""`invoke bench --only sim_step`: the CSTR's step rate against per-step scipy, with the
error."""

from __future__ import annotations

import statistics
import time

import numpy as np

from benchmarks.harness import (
    Benchmark,
)


# -- 1. simulator step -------------------------------------------------------------------
def _sample_model(y: np.ndarray, t: float, Tc: float) -> list[float]:
    """The right-hand side as the published Bonsai CSTR sample writes it: NumPy on the state."""
    Ca, T = y
    k = 34930800.0 * np.exp(-11843.0 / (1.98588 * T))
    return [
        1.0 * (10.0 - Ca) - k * Ca,
        1.0 * (298.2 - T) + 5960.0 / 500.0 * k * Ca - 0.3 * (T - Tc),
    ]


def bench_sim_step(quick: bool) -> Benchmark:
    """Our RK4 vs per-step scipy calls on the same coolant sequence, interleaved."""
    from scipy.integrate import odeint, solve_ivp

    from sims import cstr

    rng = np.random.default_rng(0)
    steps = 300 if quick else 3000
    start_y = [cstr.CREF_HIGH, cstr.steady_state(cstr.CREF_HIGH)[0]]
    Tc0 = cstr.steady_state(cstr.CREF_HIGH)[1]
    coolant = list(np.clip(Tc0 + np.cumsum(rng.uniform(-3, 3, steps)), 280, 330))

    def ours() -> list[tuple[float, float]]:
        (Ca, T), out = start_y, []
        for Tc in coolant:
            Ca, T = cstr.rk4(Ca, T, Tc, cstr.DT)
            out.append((Ca, T))
        return out

    def sample_odeint(rtol: float | None = None) -> list[tuple[float, float]]:
        y, out = start_y, []
        tolerances = {"rtol": rtol, "atol": rtol} if rtol else {}
        for Tc in coolant:
            y = odeint(_sample_model, y, [0.0, cstr.DT], args=(Tc,), **tolerances)[-1]
            out.append((y[0], y[1]))
        return out

    def per_step_solve_ivp() -> list[tuple[float, float]]:
        y, out = start_y, []
        for Tc in coolant:
            y = solve_ivp(lambda t, v, Tc=Tc: _sample_model(v, t, Tc), (0.0, cstr.DT), y).y[:, -1]
            out.append((y[0], y[1]))
        return out

    candidates = {"ours": ours, "odeint": sample_odeint, "solve_ivp": per_step_solve_ivp}
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(3 if quick else 5):  # interleaved repeats: the machine is shared and noisy
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    exact = sample_odeint(rtol=1e-11)
    error = max(
        max(abs(x[0] - y[0]) / abs(y[0]), abs(x[1] - y[1]) / abs(y[1]))
        for x, y in zip(ours(), exact, strict=True)
    )
    rate = {name: steps / statistics.median(t) for name, t in times.items()}
    result = Benchmark(
        "sim_step",
        conditions=(
            f"{steps} control steps of 0.5 h on one random coolant walk; medians of interleaved "
            "repeats; scipy with the sample's NumPy right-hand side"
        ),
    )
    result.add(
        "CSTR steps/s, project integrator (RK4, Jacobian-sized substeps)",
        rate["ours"],
        "steps/s",
        "-",
    )
    result.add(
        "CSTR steps/s, odeint per step (the published sample's way)", rate["odeint"], "steps/s", "-"
    )
    result.add("CSTR steps/s, solve_ivp per step (RK45)", rate["solve_ivp"], "steps/s", "-")
    ratio = rate["ours"] / rate["odeint"]
    result.add("speed ratio vs odeint per step", ratio, "x", "odeint per step")
    result.add(
        "speed ratio vs solve_ivp per step",
        rate["ours"] / rate["solve_ivp"],
        "x",
        "solve_ivp per step",
    )
    result.add("max relative error", error, "", "odeint, rtol 1e-11", "<= 1e-4", error <= 1e-4)
    return result
