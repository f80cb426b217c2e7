"""Trajectory logs: one row per env step, Parquet files written whole (temp file + rename)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.rundir import ACTION, SCENARIO, STATE, RunError, write_atomic

# Fixed columns; then scenario_<param>, state_<name>, action_<name> as the simulator defines.
COLUMNS = ("run_id", "phase", "controller", "env_runner", "episode_id", "lesson", "step",
           "reward", "terminated", "truncated", "error")  # fmt: skip
UNITS_KEY = "aml_rl.units"  # schema metadata: JSON of {column: unit}


class Rows:
    """Column buffers for whole episodes, flushed to one Parquet file per batch."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {}
        self.count = 0

    def add(self, row: Mapping[str, Any]) -> None:
        for key in row:
            if key not in self.columns:  # first seen now: earlier rows lack it
                self.columns[key] = [None] * self.count
        for key, column in self.columns.items():
            column.append(row.get(key))
        self.count += 1

    def add_episode(
        self,
        *,
        base: Mapping[str, Any],
        scenario: Mapping[str, float],
        states: Iterable[Mapping[str, float]],
        actions: Iterable[Mapping[str, float] | None],
        rewards: Iterable[float | None],
        terminated: bool,
        truncated: bool,
    ) -> None:
        """Step 0 is the reset (no action, no reward); step t holds the states after action t."""
        fixed = {**base, **{f"{SCENARIO}{k}": float(v) for k, v in scenario.items()}}
        states, actions, rewards = list(states), list(actions), list(rewards)
        last = len(states) - 1
        for step, (state, action, reward) in enumerate(zip(states, actions, rewards, strict=True)):
            row = {
                **fixed,
                "step": step,
                "reward": reward,
                "error": None,
                "terminated": terminated and step == last,
                "truncated": truncated and step == last,
            }
            row.update({f"{STATE}{k}": float(v) for k, v in state.items()})
            if action is not None:
                row.update({f"{ACTION}{k}": float(v) for k, v in action.items()})
            self.add(row)

    def flush(self, path: Path, units: Mapping[str, str] | None = None) -> Path | None:
        """Write the buffered rows to ``path`` (temp file + rename) and clear the buffer.

        ``units`` (by column) go into the file's schema: each column's field metadata
        ``unit``, and all of them as JSON under the schema's ``aml_rl.units`` key."""
        if not self.count:
            return None
        table = pa.table(self.columns)
        if units:
            fields = [
                field.with_metadata({"unit": units[field.name]}) if field.name in units else field
                for field in table.schema
            ]
            present = {k: v for k, v in units.items() if k in self.columns}
            schema = pa.schema(fields, metadata={UNITS_KEY: json.dumps(present)})
            table = table.cast(schema)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")  # readers skip dot-files
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk leaves no half-written file
            raise
        self.columns, self.count = {}, 0
        return path


def trajectory_units(run_or_folder: Path | str) -> dict[str, str]:
    """Units by column, from the schema metadata of a run's trajectory files."""
    units: dict[str, str] = {}
    for path in trajectory_files(_folder(Path(run_or_folder))):
        metadata = read_schema(path).metadata or {}
        units.update(json.loads(metadata.get(UNITS_KEY.encode(), b"{}")))
    return units


def _folder(run_or_folder: Path) -> Path:
    nested = run_or_folder / "trajectories"
    return nested if nested.is_dir() else run_or_folder


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    """One trajectory file; a file that is not whole Parquet (cut short by a copy or a
    kill) is named in a :class:`RunError`, with what to do."""
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise _not_parquet(path, exc) from None


def read_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise _not_parquet(path, exc) from None


def _not_parquet(path: Path, exc: BaseException) -> RunError:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return RunError(
        f"{path}: not a whole Parquet file ({type(exc).__name__}: {first}); move it out of "
        f"{path.parent.name}/ (a copy or a kill cut it short) and try again"
    )


def trajectory_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


def read_trajectories(run_or_folder: Path | str, phase: str | None = None) -> pd.DataFrame:
    """Every trajectory row of a run (or a trajectories folder) as one DataFrame."""
    folder = _folder(Path(run_or_folder))
    files = trajectory_files(folder)
    if not files:
        raise RunError(
            f"{folder}: no trajectory files (*.parquet); was trajectory logging enabled?"
        )
    tables = [read_table(path) for path in files]
    frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    prefixes = (SCENARIO, STATE, ACTION)
    ordered = [c for c in COLUMNS if c in frame] + sorted(
        (c for c in frame if c.startswith(prefixes)),
        key=lambda c: (prefixes.index(c.split("_")[0] + "_"), c),
    )
    frame = frame[ordered + [c for c in frame if c not in ordered]]
    if phase is not None:
        frame = frame[frame["phase"] == phase].reset_index(drop=True)
    return frame


def export_csv(run: Path, out: Path | None = None) -> Path:
    """Write a run's trajectories as one CSV (atomically); returns its path."""
    frame = read_trajectories(run)
    out = out or run / "trajectories.csv"
    write_atomic(out, frame.to_csv(index=False))
    return out
