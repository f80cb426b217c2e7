"""Train and assess any simulator by name: a user's Gymnasium env by module:Id or module:Class,
with Dict, Tuple and discrete spaces, run from the user's own folder as they would run it."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from jobs.assess import assess
from jobs.rundir import read_checkpoint_meta
from jobs.trajectories import read_trajectories, trajectory_files, trajectory_units
from tests.conftest import sim_config

# name -> state and action columns its trajectories must have
MATRIX = {
    "aml_rl/SimpleAdder-v0": ({"state_value"}, {"action_addend"}),
    "plato_adder:PlatoAdder-v0": ({"state_value"}, {"action_addend"}),
    "plato_adder:SimpleAdder": ({"state_value"}, {"action_addend"}),
    "valve_zoo:ValvePlant": (
        {"state_level", "state_valves_0", "state_valves_1", "state_pump_0", "state_pump_1"},
        {"action_pump", "action_valves_0", "action_valves_1"},
    ),
}


@pytest.mark.parametrize("sim", MATRIX)
def test_smoke_training_and_assessment_of_any_simulator(smoke_of, user_project, tmp_path, sim):
    run, _ = smoke_of(config=sim_config(sim), cwd=user_project)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["sim"] == sim
    assert summary["env_step_failures"] == 0
    states, actions = MATRIX[sim]
    frame = read_trajectories(str(run))  # a str path, as a notebook would pass it
    assert states <= set(frame.columns) and actions <= set(frame.columns), sorted(frame.columns)
    assert set(frame["phase"]) == {"train", "assess"}
    assert frame.loc[frame["phase"] == "train", "episode_id"].nunique() >= 2

    # The checkpoint assesses again, in this process, to the same KPIs as at the end of training.
    checkpoint = run / summary["checkpoint"]
    assert read_checkpoint_meta(checkpoint)["sim"] == sim
    again = assess(checkpoint, out=tmp_path / "again").to_json()["kpis"]
    assert set(again) == set(summary["assessment"])
    for controller, kpis in again.items():
        assert kpis == pytest.approx(summary["assessment"][controller]), controller


def test_plato_adder_actions_reach_the_env_as_integers_in_range(smoke_of, user_project):
    run, _ = smoke_of(config=sim_config("plato_adder:SimpleAdder"), cwd=user_project)
    frame = read_trajectories(run, phase="train")
    addends = frame["action_addend"].dropna()
    assert len(addends) > 100
    assert addends.between(-10, 10).all() and (addends == addends.round()).all()
    # each step's value is the previous value plus the integer added
    for _, episode in frame.groupby("episode_id"):
        values = episode.sort_values("step")["state_value"].to_numpy()
        added = episode.sort_values("step")["action_addend"].to_numpy()[1:]
        assert (values[1:] - values[:-1] == added).all()


def test_units_reach_trajectories_kpi_tables_and_the_summary(smoke_of):
    run, out = smoke_of(config=sim_config("cstr"))
    units = trajectory_units(run)
    assert units["state_Ca"] == "kmol/m3" and units["state_T"] == "K"
    assert units["action_dTc"] == "K"
    schema = pq.read_schema(trajectory_files(run / "trajectories")[0])
    assert schema.field("state_Ca").metadata == {b"unit": b"kmol/m3"}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["units"]["kpis"]["ca_rms"] == "kmol/m3"
    assert summary["units"]["trajectories"]["state_Tc"] == "K"
    kpis = json.loads((run / "assessment" / "kpis.json").read_text())
    assert kpis["units"]["max_T"] == "K"
    assert "ca_rms [kmol/m3]" in out  # the printed KPI table's header
