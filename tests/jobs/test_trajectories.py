"""Trajectory files: what is written reads back; partial files are never read."""

from __future__ import annotations

import pandas as pd
import pytest

from jobs.rundir import RunError
from jobs.trajectories import Rows, export_csv, read_trajectories


def episode(rows: Rows, episode_id: str, n: int) -> None:
    rows.add_episode(
        base={
            "run_id": "r1",
            "phase": "train",
            "controller": "agent",
            "env_runner": 1,
            "episode_id": episode_id,
            "lesson": "a",
        },
        scenario={"Cref_signal": 2},
        states=[{"Ca": 8.0 + i, "T": 300.0 + i} for i in range(n + 1)],
        actions=[None, *({"dTc": float(i)} for i in range(n))],
        rewards=[None, *(0.5 * i for i in range(n))],
        terminated=False,
        truncated=True,
    )


def test_rows_round_trip_through_parquet(tmp_path):
    rows = Rows()
    episode(rows, "e1", 3)
    episode(rows, "e2", 2)
    rows.flush(tmp_path / "trajectories" / "train-0.parquet")
    frame = read_trajectories(tmp_path)
    assert list(frame.columns) == [
        "run_id", "phase", "controller", "env_runner", "episode_id", "lesson", "step", "reward",
        "terminated", "truncated", "error", "scenario_Cref_signal", "state_Ca", "state_T", "action_dTc",
    ]  # fmt: skip
    assert frame["episode_id"].tolist() == ["e1"] * 4 + ["e2"] * 3
    assert frame["step"].tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert frame["state_T"].tolist() == [300.0, 301.0, 302.0, 303.0, 300.0, 301.0, 302.0]
    assert pd.isna(frame["action_dTc"][0]) and frame["action_dTc"][1:4].tolist() == [0.0, 1.0, 2.0]
    assert frame["truncated"].tolist() == [False, False, False, True, False, False, True]
    assert rows.count == 0, "flush clears the buffer"


def test_partial_files_are_skipped_and_no_temp_file_is_left(tmp_path):
    folder = tmp_path / "trajectories"
    rows = Rows()
    episode(rows, "e1", 1)
    rows.flush(folder / "a.parquet")
    (folder / ".b.parquet.tmp").write_bytes(b"PAR1 half a file")  # what a kill mid-write leaves
    assert sorted(p.name for p in folder.iterdir()) == [".b.parquet.tmp", "a.parquet"]
    assert len(read_trajectories(tmp_path)) == 2


def test_export_csv_writes_every_row(tmp_path):
    rows = Rows()
    episode(rows, "e1", 4)
    rows.flush(tmp_path / "trajectories" / "x.parquet")
    path = export_csv(tmp_path)
    back = pd.read_csv(path)
    assert len(back) == 5 and back["state_Ca"].tolist() == [8.0, 9.0, 10.0, 11.0, 12.0]


def test_reading_a_run_without_trajectories_says_so(tmp_path):
    (tmp_path / "trajectories").mkdir()
    with pytest.raises(
        RunError,
        match=r"trajectories: no trajectory files \(\*\.parquet\); was trajectory logging enabled\?",
    ):
        read_trajectories(tmp_path)
