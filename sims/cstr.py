"""Exothermic A -> B continuous stirred tank reactor (CSTR): the embedded industrial example."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from sims.contract import BatchSimulator, Range, SimSpec, Simulator, States

# Published parameters (Seborg et al.; the Bonsai CSTR sample). Rates are per HOUR.
F = 1.0  # m3/h, feed flow
V = 1.0  # m3, reactor volume (so the residence time V/F is 1 h)
K0 = 34930800.0  # 1/h, Arrhenius pre-exponential factor
E = 11843.0  # kcal/kmol, activation energy
R = 1.98588  # kcal/(kmol K), gas constant
DH = -5960.0  # kcal/kmol, heat of reaction (exothermic)
RHO_CP = 500.0  # kcal/(m3 K), volumetric heat capacity
UA = 150.0  # kcal/(K h), heat transfer coefficient x area
CAF = 10.0  # kmol/m3, feed concentration
TF = 298.2  # K, feed temperature

DT = 0.5  # h of model time per control step (see "Units" in the class docstring)
MIN_SUBSTEPS = 8  # RK4 substeps per control step in normal operation
MAX_STIFF_STEP = 0.3  # largest h * |J| per substep: more substeps as the model stiffens
EPISODE_STEPS = 90  # control steps: 45 h of model time
DTC_MAX = 10.0  # K, largest coolant temperature change per step
TC_LIMITS = (273.15, 373.15)  # K, liquid cooling water (0-100 degC); runaway needs > ~340 K
RUNAWAY_T = 400.0  # K, thermal runaway
CREF_HIGH, CREF_LOW = 8.57, 2.0  # kmol/m3, the two operating points of the transition
RAMP_HOURS = 26.0  # h, length of the Cref ramp (the published 10 -> 36 ramp)
INTEGRAL_LIMIT = 50.0  # K h, the integral of the temperature error is held within +-this
FINE_SCALE = 0.2  # kmol/m3, width of the reward's sharp term


def reaction_rate(T: float) -> float:
    """Arrhenius rate constant k(T), 1/h."""
    return K0 * math.exp(-E / (R * T))


def steady_state(Ca: float) -> tuple[float, float]:
    """Temperatures (T, Tc) that hold the reactor at concentration ``Ca`` (exact)."""
    k = F / V * (CAF - Ca) / Ca  # mass balance at rest: F/V (Caf - Ca) = k(T) Ca
    T = -E / (R * math.log(k / K0))
    heat = F / V * (TF - T) - DH / RHO_CP * k * Ca  # energy balance at rest, solved for Tc
    Tc = T - heat * V * RHO_CP / UA
    return T, Tc


def derivatives(Ca: float, T: float, Tc: float) -> tuple[float, float]:
    """dCa/dt (kmol/(m3 h)) and dT/dt (K/h)."""
    rate = reaction_rate(T) * Ca
    dCa = F / V * (CAF - Ca) - rate
    dT = F / V * (TF - T) - DH / RHO_CP * rate - UA / (V * RHO_CP) * (T - Tc)
    return dCa, dT


def substeps_for(Ca: float, T: float, dt: float) -> int:
    """RK4 substeps for a step from (Ca, T): the Jacobian's scale sets the substep.

    The reaction term ``1 + k(T)`` and the thermal feedback ``-dH/rhoCp k Ca E/(R T^2)``
    grow fast near runaway, where fixed substeps lose accuracy (8 give 2e-4 there).
    """
    k = reaction_rate(T)
    thermal = -DH / RHO_CP * k * Ca * E / (R * T * T) - (F / V + UA / (V * RHO_CP))
    scale = 1.0 + k + abs(thermal)
    return max(MIN_SUBSTEPS, math.ceil(scale * dt / MAX_STIFF_STEP))


def rk4(
    Ca: float, T: float, Tc: float, dt: float, substeps: int | None = None
) -> tuple[float, float]:
    """Advance (Ca, T) by ``dt`` hours with Tc held, by classic fourth-order Runge-Kutta."""
    substeps = substeps or substeps_for(Ca, T, dt)
    h = dt / substeps
    for _ in range(substeps):
        a1, b1 = derivatives(Ca, T, Tc)
        a2, b2 = derivatives(Ca + 0.5 * h * a1, T + 0.5 * h * b1, Tc)
        a3, b3 = derivatives(Ca + 0.5 * h * a2, T + 0.5 * h * b2, Tc)
        a4, b4 = derivatives(Ca + h * a3, T + h * b3, Tc)
        Ca += h / 6.0 * (a1 + 2.0 * a2 + 2.0 * a3 + a4)
        T += h / 6.0 * (b1 + 2.0 * b2 + 2.0 * b3 + b4)
    return Ca, T


def cref_at(hours: float, signal: int) -> float:
    """Concentration set point at model time ``hours`` for ``Cref_signal``."""
    if signal == 5:
        return CREF_HIGH
    start = 10.0 * (signal - 1)  # signal 1 ramps at once; 2-4 after 10, 20, 30 h
    progress = min(1.0, max(0.0, (hours - start) / RAMP_HOURS))
    return CREF_HIGH + progress * (CREF_LOW - CREF_HIGH)


class CSTR(Simulator):
    """Exothermic A -> B reaction in a cooled continuous stirred tank reactor.

    ## Description
    The classic Seborg CSTR as used in Microsoft's Bonsai sample: the operator moves the
    reactor from low conversion (Ca = 8.57 kmol/m3, T = 311.26 K) to high conversion
    (Ca = 2.0 kmol/m3, T = 373.13 K) by changing the coolant temperature Tc. The middle of
    the transition is open-loop unstable, and too hot a reactor runs away.

    ## Units
    The published rates are per hour (residence time V/F = 1 h). The published sample
    advances the model by 0.5 of those units per control step while calling it "0.5 min";
    with a literal 0.5 min the transition could not happen within an episode. Here one
    control step advances the model **0.5 h**, so an episode of 90 steps is 45 h, and the
    sample's "minutes" in its scenario descriptions are these hours.

    ## Observation (all states, physical units)
    | name             | unit    | min    | max    | notes                                   |
    |------------------|---------|--------|--------|-----------------------------------------|
    | Ca               | kmol/m3 | 0      | 10     | concentration of A (measured)           |
    | T                | K       | 270    | 430    | reactor temperature (measured)          |
    | Tc               | K       | 273.15 | 373.15 | coolant temperature                     |
    | Cref             | kmol/m3 | 0      | 10     | concentration set point                 |
    | Tref             | K       | 290    | 390    | steady-state temperature for Cref       |
    | T_error          | K       | -20    | 20     | T - Tref                                |
    | Tc_error         | K       | -30    | 30     | Tc - the steady-state coolant for Cref  |
    | T_error_integral | K h     | -50    | 50     | running integral of T_error (held +-50) |

    The last three are what an operator's PI loop computes. On the wide physical ranges a
    1 K error is 0.01 of the normalised scale, and a policy that sees only the present has
    nothing to remove a steady offset with: without them PPO settled ~2 K off Tref even when
    started on the steady state.

    ## Action
    | name | unit | min | max | notes                                       |
    |------|------|-----|-----|---------------------------------------------|
    | dTc  | K    | -10 | 10  | change of coolant temperature this step     |
    Tc is then held within liquid cooling water's range, 273.15-373.15 K.

    ## Reward
    ``(exp(-e^2) + exp(-(e/0.2)^2)) / 2`` per step with ``e = Ca - Cref`` (1 on the set point,
    0.88 at 0.1 kmol/m3 off, 0.18 at 1 kmol/m3), and -10 on thermal runaway. The first term
    is the published sample's reward; alone it is flat near the set point (0.99 at 0.1 off),
    and PPO stopped at ~0.15 kmol/m3 RMS; the sharp second term rewards the last 0.1.

    ## Episode end
    Terminated on thermal runaway (T > 400 K); truncated after 90 steps.

    ## Config (scenario parameters)
    - ``Cref_signal``: 1 ramps Cref 8.57 -> 2.0 over 26 h from the start; 2, 3, 4 start the
      same ramp after 10, 20, 30 h (3 and 4 end mid-ramp); 5 holds the steady state at 8.57.
    - ``noise_percentage``: sensor noise on Ca and T, a Gaussian whose standard deviation is
      this percentage of the span between the two operating points (6.57 kmol/m3, 61.87 K),
      as in the published sample.

    ## Version history
    - v0: first version.
    - v1: observes T_error, Tc_error and T_error_integral; the reward's sharp term. Still
      ``aml_rl/CSTR-v0``; checkpoints trained on v0 (5 observations) are refused by shape.
    """

    PARAMETERS = {"Cref_signal": 1.0, "noise_percentage": 0.0}  # noqa: RUF012

    def __init__(self) -> None:
        super().__init__()
        self.Ca, self.T, self.Tc = CREF_HIGH, *steady_state(CREF_HIGH)
        self.hours = 0.0
        self.signal = 1
        self.noise = 0.0
        self.integral = 0.0

    def reset(self, config: Mapping[str, float]) -> States:
        signal = round(config["Cref_signal"])
        if signal not in (1, 2, 3, 4, 5):
            raise ValueError(f"Cref_signal must be one of 1-5, got {config['Cref_signal']}")
        self.signal = signal
        self.noise = float(config["noise_percentage"]) / 100.0
        self.Ca, self.T, self.Tc = CREF_HIGH, *steady_state(CREF_HIGH)
        self.hours = 0.0
        self.terminated = self.truncated = False
        self._steps = 0
        self.integral = 0.0
        return self._states()

    def step(self, action: Mapping[str, float]) -> States:
        dTc = min(DTC_MAX, max(-DTC_MAX, action["dTc"]))
        self.Tc = min(TC_LIMITS[1], max(TC_LIMITS[0], self.Tc + dTc))
        self.Ca, self.T = rk4(self.Ca, self.T, self.Tc, DT)
        self.hours += DT
        self._steps += 1
        self.truncated = self._steps >= EPISODE_STEPS
        return self._states()

    def _states(self) -> States:
        states, self.integral = measure(
            self.Ca, self.T, self.Tc, self.hours, self.signal, self.noise, self.integral,
            self.np_random,
        )  # fmt: skip
        return states


def measure(
    Ca: float,
    T: float,
    Tc: float,
    hours: float,
    signal: int,
    noise: float,
    integral: float,
    rng: np.random.Generator,
) -> tuple[States, float]:
    """The states an operator sees, and the integral with this step's measured temperature
    error added (held within +-INTEGRAL_LIMIT)."""
    Cref = cref_at(hours, signal)
    Tref, Tc_ref = steady_state(Cref)
    if noise > 0.0:
        Ca += rng.normal(0.0, noise * (CREF_HIGH - CREF_LOW))
        T += rng.normal(0.0, noise * (_T_HIGH - _T_LOW))
    integral += (T - Tref) * DT
    integral = min(INTEGRAL_LIMIT, max(-INTEGRAL_LIMIT, integral))
    states = {
        "Ca": Ca,
        "T": T,
        "Tc": Tc,
        "Cref": Cref,
        "Tref": Tref,
        "T_error": T - Tref,
        "Tc_error": Tc - Tc_ref,
        "T_error_integral": integral,
    }
    return states, integral


def _exp(x: np.ndarray) -> np.ndarray:
    """``math.exp`` of each element: NumPy's exp differs from it in the last bit for ~5% of
    arguments, and the batch must give the scalar model's states to the bit."""
    return np.fromiter(map(math.exp, x.tolist()), dtype=np.float64, count=x.shape[0])


def _derivatives(Ca: np.ndarray, T: np.ndarray, Tc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`derivatives` over arrays, the same operations in the same order."""
    rate = K0 * _exp(-E / (R * T)) * Ca
    dCa = F / V * (CAF - Ca) - rate
    dT = F / V * (TF - T) - DH / RHO_CP * rate - UA / (V * RHO_CP) * (T - Tc)
    return dCa, dT


def _substeps(Ca: np.ndarray, T: np.ndarray, dt: float) -> np.ndarray:
    """:func:`substeps_for` over arrays."""
    k = K0 * _exp(-E / (R * T))
    thermal = -DH / RHO_CP * k * Ca * E / (R * T * T) - (F / V + UA / (V * RHO_CP))
    scale = 1.0 + k + np.abs(thermal)
    return np.maximum(MIN_SUBSTEPS, np.ceil(scale * dt / MAX_STIFF_STEP)).astype(np.int64)


def _rk4(Ca: np.ndarray, T: np.ndarray, Tc: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rk4` over arrays, each element with its own number of substeps."""
    Ca, T = Ca.copy(), T.copy()
    substeps = _substeps(Ca, T, dt)
    h = dt / substeps
    for step in range(int(substeps.max(initial=0))):
        i = np.flatnonzero(step < substeps)
        ca, t, tc, hi = Ca[i], T[i], Tc[i], h[i]
        a1, b1 = _derivatives(ca, t, tc)
        a2, b2 = _derivatives(ca + 0.5 * hi * a1, t + 0.5 * hi * b1, tc)
        a3, b3 = _derivatives(ca + 0.5 * hi * a2, t + 0.5 * hi * b2, tc)
        a4, b4 = _derivatives(ca + hi * a3, t + hi * b3, tc)
        Ca[i] = ca + hi / 6.0 * (a1 + 2.0 * a2 + 2.0 * a3 + a4)
        T[i] = t + hi / 6.0 * (b1 + 2.0 * b2 + 2.0 * b3 + b4)
    return Ca, T


class BatchCSTR(BatchSimulator):
    """:class:`CSTR` over ``n`` scenarios at once: the integration over arrays, identical to
    the scalar model step for step (``tests/sims/test_batch.py``)."""

    PARAMETERS = CSTR.PARAMETERS

    def __init__(self, n: int) -> None:
        super().__init__(n)
        T, Tc = steady_state(CREF_HIGH)
        self.Ca = np.full(n, CREF_HIGH)
        self.T = np.full(n, T)
        self.Tc = np.full(n, Tc)
        self.hours = np.zeros(n)
        self.steps = np.zeros(n, dtype=np.int64)
        self.signal = np.ones(n, dtype=np.int64)
        self.noise = np.zeros(n)
        self.integral = np.zeros(n)

    def reset(self, index: int, config: Mapping[str, float]) -> States:
        one = CSTR()  # the scalar model's own checks and initial state
        one.np_random = self.np_random[index]
        states = one.reset(config)
        self.Ca[index], self.T[index], self.Tc[index] = one.Ca, one.T, one.Tc
        self.hours[index], self.steps[index] = 0.0, 0
        self.signal[index], self.noise[index] = one.signal, one.noise
        self.integral[index] = one.integral
        self.terminated[index] = self.truncated[index] = False
        return states

    def step(self, action: Mapping[str, np.ndarray], active: np.ndarray) -> dict[str, np.ndarray]:
        i = np.flatnonzero(active)
        dTc = np.minimum(DTC_MAX, np.maximum(-DTC_MAX, action["dTc"][i]))
        self.Tc[i] = np.minimum(TC_LIMITS[1], np.maximum(TC_LIMITS[0], self.Tc[i] + dTc))
        self.Ca[i], self.T[i] = _rk4(self.Ca[i], self.T[i], self.Tc[i], DT)
        self.hours[i] += DT
        self.steps[i] += 1
        self.truncated[i] = self.steps[i] >= EPISODE_STEPS
        out: dict[str, np.ndarray] = {}
        for j in i.tolist():
            states, self.integral[j] = measure(
                float(self.Ca[j]), float(self.T[j]), float(self.Tc[j]), float(self.hours[j]),
                int(self.signal[j]), float(self.noise[j]), float(self.integral[j]),
                self.np_random[j],
            )  # fmt: skip
            for name, value in states.items():
                out.setdefault(name, np.zeros(self.n))[j] = value
        return out


_T_HIGH, _T_LOW = steady_state(CREF_LOW)[0], steady_state(CREF_HIGH)[0]


def reward(states: Mapping[str, float], action: Mapping[str, float]) -> float:
    if runaway(states):
        return -10.0
    error = states["Ca"] - states["Cref"]
    return 0.5 * (math.exp(-(error**2)) + math.exp(-((error / FINE_SCALE) ** 2)))


def runaway(states: Mapping[str, float]) -> bool:
    return states["T"] > RUNAWAY_T


def kpis(
    states: Sequence[Mapping[str, float]], actions: Sequence[Mapping[str, float]], terminated: bool
) -> dict[str, float]:
    """Tracking errors, peak temperature, runaways and steps spent at the dTc limit."""
    after = states[1:]  # the states each action led to
    return {
        "ca_rms": math.sqrt(sum((s["Ca"] - s["Cref"]) ** 2 for s in after) / len(after)),
        "t_rms": math.sqrt(sum((s["T"] - s["Tref"]) ** 2 for s in after) / len(after)),
        "max_T": max(s["T"] for s in states),
        "runaway_count": float(terminated and runaway(states[-1])),
        "dtc_limit_count": float(sum(abs(a["dTc"]) >= DTC_MAX - 1e-9 for a in actions)),
    }


class PIController:
    """PI control of the reactor temperature onto Tref, with steady-state feedforward.

    ``Tc = Tc_ss(Cref) + Kp (Tref - T) + Ki * integral(Tref - T) dt``, moved at most 10 K
    per step. The temperature loop stabilises the open-loop unstable middle of the
    transition, and holding T on Tref = T_ss(Cref) brings Ca onto Cref.

    Gains: Kp = 3.0, Ki = 1.6 1/h, from a grid search (Kp 0.5-6, Ki 0-1.6) for the lowest
    worst-case Ca RMS over Cref_signal 1-4 without noise (0.111 kmol/m3, no runaway, max T
    374.5 K); at 2% sensor noise it stays at 0.13, where Kp = 6 degrades to 0.37.
    """

    KP = 3.0  # K of coolant per K of reactor temperature error
    KI = 1.6  # 1/h, integral gain

    def __init__(self) -> None:
        self.integral = 0.0

    def reset(self) -> None:
        self.integral = 0.0

    def act(self, states: Mapping[str, float]) -> dict[str, float]:
        error = states["Tref"] - states["T"]
        self.integral += error * DT
        target = steady_state(states["Cref"])[1] + self.KP * error + self.KI * self.integral
        return {"dTc": min(DTC_MAX, max(-DTC_MAX, target - states["Tc"]))}


_HERE = Path(__file__).parent

SPEC = SimSpec(
    name="cstr",
    env_id="aml_rl/CSTR-v0",
    simulator=CSTR,
    batch_simulator=BatchCSTR,
    observations={
        "Ca": Range(0.0, 10.0, "kmol/m3"),
        "T": Range(270.0, 430.0, "K"),
        "Tc": Range(*TC_LIMITS, "K"),
        "Cref": Range(0.0, 10.0, "kmol/m3"),
        "Tref": Range(290.0, 390.0, "K"),
        "T_error": Range(-20.0, 20.0, "K", saturates=True),
        "Tc_error": Range(-30.0, 30.0, "K", saturates=True),
        "T_error_integral": Range(-INTEGRAL_LIMIT, INTEGRAL_LIMIT, "K h"),
    },
    actions={"dTc": Range(-DTC_MAX, DTC_MAX, "K")},
    reward=reward,
    terminal=runaway,
    log_states=("Ca", "T", "Tc", "Cref", "Tref"),
    lessons=_HERE / "lessons" / "cstr.yaml",
    baseline=PIController,
    scenarios=_HERE / "lessons" / "cstr_scenarios.yaml",
    kpis=kpis,
    targets={"Ca": "Cref", "T": "Tref"},
    primary_kpi="ca_rms",
    constraint_kpis=frozenset({"runaway_count"}),
    drawing=_HERE / "drawings" / "cstr.js",
    step_time=DT,
    time_unit="h",
    limits={"T": (None, RUNAWAY_T)},
    kpi_units={
        "ca_rms": "kmol/m3",
        "t_rms": "K",
        "max_T": "K",
        "runaway_count": "episodes",
        "dtc_limit_count": "steps",
    },
    source=__file__,
)
