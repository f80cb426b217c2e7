"""check-sim: built-ins pass; each broken simulator fails (or warns) with its reason."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sims.check import check_sim
from tests.conftest import ROOT


def findings(report):
    return {f.check: (f.status, f.detail) for f in report.findings}


@pytest.mark.parametrize("sim", ["cstr", "simple_adder", "CartPole-v1", "aml_rl/CSTR-v0"])
def test_built_in_and_gymnasium_simulators_pass(sim):
    report = check_sim(sim, episodes=5)
    assert report.ok, [(f.check, f.detail) for f in report.failures()]
    assert report.steps > 0 and report.steps_per_s > 0


def test_cstr_varies_both_lesson_parameters():
    status, detail = findings(check_sim("cstr", episodes=2))[
        "lesson parameters reach the simulator"
    ]
    assert (status, detail) == ("pass", "2 varied")


def test_the_scaffolded_simulator_passes_unmodified(variant_sim):
    report = check_sim(variant_sim("my_room"), episodes=5)
    assert report.ok, [(f.check, f.detail) for f in report.failures()]
    assert all(f.status == "pass" for f in report.findings), report.findings


def test_global_randomness_breaks_determinism(variant_sim):
    name = variant_sim(
        "random_room", {"self.np_random.uniform(0.0, 1.0)": "__import__('random').random()"}
    )
    status, detail = findings(check_sim(name, episodes=2))["seeded determinism"]
    assert status == "fail"
    assert "diverge at reset" in detail and "draw all randomness from self.np_random" in detail


def test_a_parameter_the_simulator_ignores_is_named(variant_sim):
    name = variant_sim("deaf_room", {'self.outside = config["outside"]': "self.outside = 5.0"})
    report = check_sim(name, episodes=2)
    status, detail = findings(report)["lesson parameters reach the simulator"]
    assert not report.ok and status == "fail"
    assert detail.startswith("outside (-10.0 and 15.0 give identical trajectories)")
    assert "read these from the config in DeafRoomSim.reset()" in detail


def test_nan_fails_naming_the_state(variant_sim):
    name = variant_sim(
        "nan_room",
        {
            "        self.steps += 1\n": "        self.steps += 1\n        if self.steps == 7:\n            self.temp = float('inf')\n"
        },
    )
    report = check_sim(name, episodes=2)
    assert not report.ok
    failed = " ".join(f.detail for f in report.failures())
    assert "returned inf for state 'temp'" in failed


def test_narrow_normalisation_range_warns_with_the_observed_range(variant_sim):
    name = variant_sim(
        "cramped_room", {'"temp": Range(-10.0, 40.0, "degC")': '"temp": Range(0.0, 12.0, "degC")'}
    )
    report = check_sim(name, episodes=5)
    status, detail = findings(report)["observations inside normalisation ranges"]
    assert report.ok, "a warning must not fail the check"
    assert status == "warn"
    assert (
        detail.startswith("temp: ")
        and "clipped, observed" in detail
        and "vs range [0, 12]" in detail
    )
    assert "widen these ranges (SPEC.observations, or the space's bounds)" in detail


def test_a_range_that_saturates_by_design_is_not_warned_about(variant_sim):
    name = variant_sim(
        "error_room",
        {'"temp": Range(-10.0, 40.0, "degC")': '"temp": Range(0.0, 12.0, "degC", saturates=True)'},
    )
    status, detail = findings(check_sim(name, episodes=5))[
        "observations inside normalisation ranges"
    ]
    assert status == "pass", detail


def test_an_unpicklable_env_fails(variant_sim):
    name = variant_sim(
        "lambda_room", {"    reward=reward,\n": "    reward=lambda states, action: 0.0,\n"}
    )
    status, detail = findings(check_sim(name, episodes=2))["pickles (Ray ships envs to workers)"]
    assert status == "fail" and "module-level functions" in detail


def test_a_bad_lessons_file_fails_construction_with_its_message(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "lessons:\n  - name: a\n    parameters:\n      noise_percentage: {min: 3, max: 1}\n"
    )
    report = check_sim("cstr", lessons=bad)
    assert findings(report)["construct"] == (
        "fail",
        f"{bad}: lessons[0].parameters.noise_percentage: min 3.0 > max 1.0; swap them (got {{'min': 3, 'max': 1}})",
    )


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_exits_zero_and_prints_the_step_rate():
    done = run_cli("check-sim", "--sim", "cstr", "--episodes", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "step rate:" in done.stdout and "steps/s" in done.stdout
    assert "cstr: PASS" in done.stdout


def test_cli_exits_non_zero_with_the_reasons():
    done = run_cli("check-sim", "--sim", "no_such_sim")
    assert done.returncode == 1
    assert (
        "check-sim: no_such_sim does not conform:\n- construct: unknown simulator 'no_such_sim'"
        in done.stderr
    )
