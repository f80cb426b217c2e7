"""A run taken where its simulator is not: view, report and export read the run's own record
(``sim.json``), in a process that cannot import the simulator; a run from before that file
still opens and says what it lacks."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, train_smoke

# A team's heater model in their own folder, not in sims/: set point, KPI, a constraint
# count, a baseline and a drawing, as the README's contract describes them.
HEATER = '''
"""The team's heater model (kept in their own folder)."""
from pathlib import Path

from sims.contract import Range, SimSpec, Simulator


class Heater(Simulator):
    PARAMETERS = {"setpoint": 21.0}

    def reset(self, config):
        self.setpoint, self.temp, self.steps = config["setpoint"], 15.0, 0
        self.terminated = self.truncated = False
        return self._states()

    def step(self, action):
        self.temp += 0.05 * (5.0 - self.temp) + action["heat"]
        self.steps += 1
        self.truncated = self.steps >= 20
        return self._states()

    def _states(self):
        return {"temp": self.temp, "setpoint": self.setpoint}


def reward(states, action):
    return -abs(states["temp"] - states["setpoint"])


class OnOff:
    def reset(self):
        pass

    def act(self, states):
        return {"heat": 2.0 if states["temp"] < states["setpoint"] else 0.0}


def kpis(states, actions, terminated):
    return {
        "temp_error": sum(abs(s["temp"] - s["setpoint"]) for s in states) / len(states),
        "overheat_count": float(sum(s["temp"] > 30.0 for s in states)),
    }


SPEC = SimSpec(
    name="heater", env_id="team/Heater-v0", simulator=Heater,
    observations={"temp": Range(-20.0, 50.0, "degC"), "setpoint": Range(15.0, 25.0, "degC")},
    actions={"heat": Range(0.0, 3.0, "kW")}, reward=reward,
    lessons=Path(__file__).with_name("heater_lessons.yaml"),
    baseline=OnOff, kpis=kpis, kpi_units={"temp_error": "K"}, targets={"temp": "setpoint"},
    primary_kpi="temp_error", constraint_kpis=frozenset({"overheat_count"}),
    drawing=Path(__file__).with_name("heater.js"), source=__file__,
)
'''
DRAWING = (
    "function draw(states, ranges) { return `<svg><text>heater ${states.temp}</text></svg>`; }"
)


@pytest.fixture(scope="module")
def taken_run(tmp_path_factory) -> Path:
    """A heater run trained in the team's folder, then copied elsewhere and the folder gone."""
    team = tmp_path_factory.mktemp("team")
    (team / "heater_model.py").write_text(HEATER)
    (team / "heater_lessons.yaml").write_text(
        "lessons:\n  - name: any\n    parameters:\n      setpoint: {min: 19, max: 23}\n"
    )
    (team / "heater.js").write_text(DRAWING)
    runs = tmp_path_factory.mktemp("runs")
    config = runs / "heater.yaml"
    config.write_text("experiment: heater\nsim: heater_model\n")
    run, _ = train_smoke(runs, "--config", str(config), cwd=team)
    taken = tmp_path_factory.mktemp("laptop") / run.name
    shutil.copytree(run, taken)
    shutil.rmtree(team)
    shutil.rmtree(runs)
    return taken


def invoke(*args: str) -> subprocess.CompletedProcess:
    """An invoke task in its own process, where ``heater_model`` cannot be imported."""
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT, env=environ, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_run_records_its_simulator_as_it_saw_it(taken_run):
    record = json.loads((taken_run / "sim.json").read_text())
    assert record["name"] == "heater_model" and record["label"] == "heater"
    assert record["observations"]["temp"] == {"low": -20.0, "high": 50.0, "unit": "degC"}
    assert record["actions"] == {"heat": {"low": 0.0, "high": 3.0, "unit": "kW"}}
    assert record["targets"] == {"temp": "setpoint"}
    assert record["primary_kpi"] == "temp_error"
    assert record["constraint_kpis"] == ["overheat_count"]
    assert record["kpi_units"] == {"temp_error": "K"}
    assert record["drawing"] == DRAWING
    assert record["missing"] == ""


def test_view_report_and_export_work_where_the_simulator_is_absent(taken_run, tmp_path):
    gone = subprocess.run(
        [sys.executable, "-c", "import heater_model"], cwd=ROOT, capture_output=True, timeout=60
    )
    assert gone.returncode != 0  # the simulator really cannot be imported there

    viewed = invoke("view", str(taken_run), "--out", str(tmp_path / "page.html"))
    assert viewed.returncode == 0, viewed.stdout + viewed.stderr
    page = (tmp_path / "page.html").read_text()
    assert "heater" in page and DRAWING in page
    data = json.loads(
        page.split('id="run-data" type="application/json">', 1)[1].split("</script>")[0]
    )
    assert data["targets"] == {"temp": "setpoint"}
    assert data["ranges"]["heat"] == [0.0, 3.0] and data["units"]["action_heat"] == "kW"

    # at a glance, rounded and with units; what it was trained with, folded
    summary = json.loads((taken_run / "summary.json").read_text())
    assert f"<dt>env steps</dt><dd>{summary['env_steps_sampled']:,}</dd>" in page
    assert re.search(r"<dt>training time</dt><dd>\d+ s</dd>", page)
    details = page.split("<details id='run-details'>", 1)[1].split("</details>", 1)[0]
    trained = summary["environment"]
    assert re.fullmatch(r"[0-9a-f]{40}", trained["git_revision"])
    assert f"<dd>{trained['git_revision']}</dd>" in details and "<dt>seed</dt><dd>0</dd>" in details
    assert f"ray {trained['versions']['ray']}" in details and "sim: heater_model" in details

    reported = invoke("report", "--run", str(taken_run))
    assert reported.returncode == 0, reported.stdout + reported.stderr
    assert "temp_error [K]" in reported.stdout

    exported = invoke("export", str(taken_run), "--out", str(tmp_path / "bundle"), "--allow-losing")
    assert exported.returncode == 0, exported.stdout + exported.stderr
    metadata = json.loads((tmp_path / "bundle" / "policy.json").read_text())
    assert [(o["name"], o["unit"], o["low"], o["high"]) for o in metadata["observations"]] == [
        ("temp", "degC", -20.0, 50.0),
        ("setpoint", "degC", 15.0, 25.0),
    ]
    assert [(a["name"], a["unit"], a["scaling"]) for a in metadata["actions"]] == [
        ("heat", "kW", "range")
    ]


def test_a_run_from_before_the_record_opens_and_says_what_it_lacks(taken_run, tmp_path):
    old = tmp_path / taken_run.name
    shutil.copytree(taken_run, old)
    (old / "sim.json").unlink()  # the layout of runs made before sim.json
    (old / "view.html").unlink(missing_ok=True)

    viewed = invoke("view", str(old))
    assert viewed.returncode == 0, viewed.stdout + viewed.stderr
    page = (old / "view.html").read_text()
    assert "no sim.json (a run from before it), and heater_model cannot be imported here" in page
    assert "ranges, set points, limits and the drawing are not shown" in page

    exported = invoke("export", str(old), "--allow-losing")
    assert exported.returncode != 0 and not (old / "bundle").exists()
    assert "the run has no sim.json" in exported.stderr + exported.stdout
    assert "export it where heater_model imports" in exported.stderr + exported.stdout
    assert "Traceback" not in exported.stderr
