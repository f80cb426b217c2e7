"""`invoke view RUN`: one self-contained HTML page of a run, to open offline from a file.

The page holds: training curves (metrics.jsonl), the KPI table and every assessment scenario
with the agent's and the baseline's trajectories overlaid, and an episode player (filters,
a time slider moving one cursor across all plots, the step's values, the simulator's
drawing or gauges). Plotly's JavaScript is inlined; nothing is fetched.

A run may hold millions of logged steps; the page holds a bounded selection: every
assessment episode, and up to ``episodes`` training episodes per lesson, spread evenly over
training. What it leaves out is said on the page.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pyarrow as pa
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from jobs.console import kpi_header
from jobs.rundir import (
    ACTION,
    CHECKPOINT_PREFIX,
    SCENARIO,
    STATE,
    Metric,
    RunDir,
    RunError,
    assessment_scenario,
    read_summary,
    write_atomic,
)
from jobs.snapshot import SimSnapshot, read_snapshot
from jobs.trajectories import read_schema, read_table, trajectory_files, trajectory_units
from jobs.verdict import read_verdict

TEMPLATE = Path(__file__).with_name("template.html")
PLAYER = Path(__file__).with_name("player.js")
DEFAULT_EPISODES = 12  # training episodes per lesson on the page
INDEX_COLUMNS = [
    "phase",
    "controller",
    "episode_id",
    "lesson",
    "step",
    "reward",
    "error",
    "terminated",
    "truncated",
]
TRAINING_CURVES = [
    (Metric.RETURN, "episode return (mean)"),
    (Metric.LENGTH, "episode length (mean) [steps]"),
    (Metric.TOTAL_LOSS, "total loss"),
    (Metric.POLICY_LOSS, "policy loss"),
    (Metric.VF_LOSS, "value loss"),
    (Metric.ENTROPY, "entropy"),
    (Metric.STEPS_PER_S, "env steps/s"),
    (Metric.STEP_FAILURES, "simulator failures"),
]


@dataclass
class Selection:
    """The episodes on the page, and what was left out."""

    rows: pd.DataFrame
    episodes: pd.DataFrame  # one row per episode: id, phase, controller, lesson, return, ...
    left_out: str


def build_page(run: Path, out: Path | None = None, episodes: int = DEFAULT_EPISODES) -> Path:
    """Write the page for ``run`` (default ``<run>/view.html``) atomically; returns its path."""
    run_dir = RunDir.open(Path(run))
    summary = read_summary(run_dir.path) if run_dir.summary.is_file() else {}
    config = _read_config(run_dir.config)
    handle = read_snapshot(run_dir)  # the run's own record: the simulator need not import
    units = {**handle.units, **_units_from_files(run_dir)}
    selection = select_episodes(run_dir, episodes)
    kpis = (
        _read_json(run_dir.assessment / "kpis.json")
        if (run_dir.assessment / "kpis.json").is_file()
        else None
    )

    data = {
        "run": str(run_dir.path),
        "sim": handle.name,
        "prefixes": {"state": STATE, "action": ACTION},  # the trajectory columns' (player.js)
        "states": [s for s in handle.log_states if f"{STATE}{s}" in selection.rows],
        "all_states": sorted(c.removeprefix(STATE) for c in selection.rows if c.startswith(STATE)),
        "actions": sorted(c.removeprefix(ACTION) for c in selection.rows if c.startswith(ACTION)),
        "units": units,
        "ranges": _ranges(handle),
        "targets": handle.targets,
        "limits": handle.limits,
        "time": dict(zip(("per_step", "title"), handle.time_axis(), strict=True)),
        "episodes": _episode_records(selection),
        "left_out": selection.left_out,
    }
    sections = {
        "title": html.escape(f"{config.get('experiment', '')} / {run_dir.run_id}: {handle.label}"),
        "verdict": _verdict_html(summary),
        "summary": _summary_html(summary, config.get("seed"), run_dir.config.read_text()),
        "training": _figure_html(
            training_figure(run_dir.metrics, assessed_checkpoints(run_dir, summary)), "training"
        ),
        "kpi_table": kpi_table_html(kpis, handle) if kpis else "<p>No assessment in this run.</p>",
        "scenarios": scenario_figures_html(
            selection, handle, data["states"], data["actions"], units
        ),
        "left_out": html.escape(" ".join(filter(None, [handle.missing, selection.left_out]))),
        "plotly": get_plotlyjs(),
        "player": PLAYER.read_text(),
        "drawing": handle.drawing or "",
        "data": json.dumps(data, default=_json_default).replace("</", "<\\/"),
    }
    # one pass: what is filled in (Plotly's 4 MB of JavaScript) is never searched again
    page = re.sub(r"\{\{(\w+)\}\}", lambda m: sections[m.group(1)], TEMPLATE.read_text())
    target = Path(out) if out else run_dir.path / "view.html"
    write_atomic(target, page)
    return target


# -- data ---------------------------------------------------------------------------------
def select_episodes(run: RunDir, per_lesson: int) -> Selection:
    """Every assessment episode and up to ``per_lesson`` training episodes per lesson,
    spread evenly across training; rows of those episodes only."""
    files = trajectory_files(run.trajectories)
    if not files:
        raise RunError(f"{run.path}: no trajectory files; train with trajectories.enabled")
    index_tables = []
    for order, path in enumerate(files):
        names = read_schema(path).names
        table = read_table(path, columns=[c for c in INDEX_COLUMNS if c in names])
        index_tables.append(table.append_column("file", pa.array([order] * table.num_rows)))
    index = pa.concat_tables(index_tables, promote_options="permissive").to_pandas()
    failures = int(index["error"].notna().sum()) if "error" in index else 0
    steps = index[index["episode_id"].notna()]
    per_episode = (
        steps.groupby("episode_id", sort=False)
        .agg(
            phase=("phase", "first"),
            controller=("controller", "first"),
            lesson=("lesson", "first"),
            ret=("reward", "sum"),
            length=("step", "max"),
            terminated=("terminated", "any"),
            truncated=("truncated", "any"),
            file=("file", "first"),
        )
        .reset_index()
    )
    assessed = per_episode[per_episode["phase"] == "assess"]
    training = per_episode[per_episode["phase"] != "assess"]
    chosen = [assessed]
    for _, group in training.groupby(training["lesson"].fillna(""), sort=False):
        if len(group) <= per_lesson:
            chosen.append(group)
        else:  # evenly spread over training, first and last included
            picks = np.linspace(0, len(group) - 1, per_lesson).round().astype(int)
            chosen.append(group.iloc[sorted(set(picks))])
    episodes = pd.concat(chosen, ignore_index=True)
    wanted = set(episodes["episode_id"])
    needed = sorted(set(episodes["file"]))
    tables = [read_table(files[i]) for i in needed]
    rows = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    rows = rows[rows["episode_id"].isin(wanted)].sort_values(["episode_id", "step"])
    shown_training = len(episodes) - len(assessed)
    left_out = (
        f"The page shows all {len(assessed)} assessment episodes and {shown_training} of "
        f"{len(training)} training episodes (up to {per_lesson} per lesson, spread evenly over "
        f"training; `invoke view --episodes N` for more) from {len(steps):,} logged steps. "
        f"Simulator failures logged: {failures} (rows without an episode, not shown)."
    )
    return Selection(rows=rows, episodes=episodes, left_out=left_out)


def _episode_records(selection: Selection) -> list[dict[str, Any]]:
    records = []
    rows_by_id = dict(tuple(selection.rows.groupby("episode_id", sort=False)))
    value_columns = [c for c in selection.rows if c.startswith((STATE, ACTION))]
    scenario_columns = [c for c in selection.rows if c.startswith(SCENARIO)]
    for episode in selection.episodes.itertuples(index=False):
        rows = rows_by_id[episode.episode_id]
        first = rows.iloc[0]
        record = {
            "id": episode.episode_id,
            "phase": episode.phase,
            "controller": episode.controller,
            "lesson": None if pd.isna(episode.lesson) else episode.lesson,
            "return": float(episode.ret),
            "length": int(episode.length),
            "terminated": bool(episode.terminated),
            "truncated": bool(episode.truncated),
            "assessed": assessment_scenario(episode.episode_id)
            if episode.phase == "assess"
            else None,
            "scenario": {
                c.removeprefix(SCENARIO): _num(first[c])
                for c in scenario_columns
                if not pd.isna(first[c])
            },
            "step": rows["step"].astype(int).tolist(),
            "reward": [_num(v) for v in rows["reward"]],
            "values": {
                c: [_num(v) for v in rows[c]] for c in value_columns if rows[c].notna().any()
            },
        }
        records.append(record)
    return records


def _num(value: Any) -> float | None:
    """A JSON number, or null for a missing value (NaN, None)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _ranges(handle: SimSnapshot) -> dict[str, list[float]]:
    out = {}
    for name, rng in {**handle.observations, **handle.actions}.items():
        if rng is not None:
            out[name] = [rng.low, rng.high]
    return out


def _units_from_files(run: RunDir) -> dict[str, str]:
    try:
        return trajectory_units(run.path)
    except (OSError, ValueError):  # no files yet, or a file without our metadata
        return {}


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _read_config(path: Path) -> dict[str, Any]:
    from sims.lessons import read_yaml

    return read_yaml(path) or {}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")


def label(column: str, units: Mapping[str, str]) -> str:
    """``Ca [kmol/m3]`` for ``state_Ca``: a column's name with its unit, where it has one."""
    name = column.split("_", 1)[1] if column.startswith((STATE, ACTION)) else column
    return f"{name} [{units[column]}]" if units.get(column) else name


# -- figures ------------------------------------------------------------------------------
def assessed_checkpoints(run: RunDir, summary: Mapping[str, Any]) -> dict[int, float]:
    """The agent's assessed return by checkpoint iteration: the end-of-training assessment
    and every ``invoke assess`` kept under ``assessments/<checkpoint>-<time>/``."""
    found: dict[int, float] = {}
    final = run.assessment / "kpis.json"
    checkpoint = str(summary.get("checkpoint") or "")
    if final.is_file() and CHECKPOINT_PREFIX in checkpoint:
        iteration = int(checkpoint.rsplit(CHECKPOINT_PREFIX, 1)[1])
        found[iteration] = _read_json(final)["kpis"]["agent"]["return"]
    for kpis in sorted((run.path / "assessments").glob(f"{CHECKPOINT_PREFIX}*/kpis.json")):
        iteration = int(kpis.parent.name.removeprefix(CHECKPOINT_PREFIX).split("-")[0])
        found[iteration] = _read_json(kpis)["kpis"]["agent"]["return"]
    return found


def training_figure(metrics: Path, assessed: Mapping[int, float] | None = None) -> go.Figure | None:
    """Training curves against env steps (a button switches to wall time); new sessions
    (resumes) are marked with a dotted line; assessed checkpoints (the agent's deterministic
    return on the assessment scenarios) are marked on the return curve."""
    if not metrics.is_file():
        return None
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not lines:
        return None
    frame = pd.DataFrame(lines)
    present = [(key, title) for key, title in TRAINING_CURVES if key in frame]
    cols = 2
    rows = math.ceil(len(present) / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[t for _, t in present],
        vertical_spacing=0.12 / max(1, rows - 1) + 0.04,
    )
    for i, (key, title) in enumerate(present):
        fig.add_trace(
            go.Scatter(
                x=frame["env_steps"], y=frame[key], mode="lines", name=title, showlegend=False
            ),
            row=i // cols + 1,
            col=i % cols + 1,
        )
        fig.update_xaxes(title_text="env steps", row=i // cols + 1, col=i % cols + 1)
    at = frame.drop_duplicates("iteration", keep="last").set_index("iteration")
    points = {i: r for i, r in (assessed or {}).items() if i in at.index}
    if points and present and present[0][0] == Metric.RETURN:
        fig.add_trace(
            go.Scatter(
                x=[at.loc[i, "env_steps"] for i in points],
                y=list(points.values()),
                mode="markers",
                marker={"symbol": "diamond", "size": 10, "color": "black"},
                name="assessed return (deterministic)",
                showlegend=False,
            ),
            row=1,
            col=1,
        )
    session = frame["session"] if "session" in frame else (frame["iteration"].diff() <= 0).cumsum()
    resumed = frame.loc[session.diff().fillna(0) != 0]
    titles = len(fig.layout.annotations)  # subplot titles come first among the annotations
    for step in resumed["env_steps"]:
        fig.add_vline(
            x=step,
            line_dash="dot",
            line_color="grey",
            annotation_text="resumed",
            annotation_position="top",
        )
    wall = [frame["wall_time_s"]] * len(present)
    steps = [frame["env_steps"]] * len(present)
    if points and present and present[0][0] == Metric.RETURN:
        wall.append([at.loc[i, "wall_time_s"] for i in points])
        steps.append([at.loc[i, "env_steps"] for i in points])
    fig.update_layout(
        height=260 * rows,
        margin={"t": 60, "b": 40},
        updatemenus=[
            {
                "type": "buttons",
                "direction": "right",
                "x": 0,
                "y": 1.08,
                "xanchor": "left",
                "buttons": [
                    {
                        "label": "x: env steps",
                        "method": "update",
                        "args": [
                            {"x": steps},
                            {
                                **_axis_titles(len(present), "env steps"),
                                **_marks_at(resumed["env_steps"], titles),
                            },
                        ],
                    },
                    {
                        "label": "x: wall time [s]",
                        "method": "update",
                        "args": [
                            {"x": wall},
                            {
                                **_axis_titles(len(present), "wall time [s]"),
                                **_marks_at(resumed["wall_time_s"], titles),
                            },
                        ],
                    },
                ],
            }
        ],
    )
    return fig


def _marks_at(xs: pd.Series, first_annotation: int) -> dict[str, float]:
    """Layout updates that move the "resumed" lines and their labels to ``xs``."""
    out: dict[str, float] = {}
    for k, x in enumerate(xs):
        label = f"annotations[{first_annotation + k}].x"
        out |= {f"shapes[{k}].x0": x, f"shapes[{k}].x1": x, label: x}
    return out


def _axis_titles(count: int, title: str) -> dict[str, str]:
    """Plotly's layout keys for every x axis' title: xaxis, xaxis2, ..."""
    return {f"xaxis{'' if i == 1 else i}.title.text": title for i in range(1, count + 1)}


def scenario_figures_html(
    selection: Selection,
    handle: SimSnapshot,
    states: list[str],
    actions: list[str],
    units: Mapping[str, str],
) -> str:
    """For each assessment scenario: the agent's and the baseline's trajectories overlaid."""
    assessed = selection.rows[selection.rows["phase"] == "assess"]
    if assessed.empty:
        return "<p>No assessment episodes in this run.</p>"
    assessed = assessed.assign(scenario=assessed["episode_id"].map(assessment_scenario))
    colours = {"agent": "#1f77b4", "baseline": "#ff7f0e"}
    per_step, time_title = handle.time_axis()
    assessed = assessed.assign(time=assessed["step"] * per_step)
    parts = []
    for scenario, rows in assessed.groupby("scenario", sort=False):
        columns = [f"{STATE}{s}" for s in states] + [f"{ACTION}{a}" for a in actions] + ["reward"]
        fig = make_subplots(rows=len(columns), cols=1, shared_xaxes=True, vertical_spacing=0.02)
        for controller, episode in rows.groupby("controller", sort=False):
            episode = episode.sort_values("step")
            for i, column in enumerate(columns, start=1):
                fig.add_trace(
                    go.Scatter(
                        x=episode["time"],
                        y=episode[column],
                        mode="lines",
                        name=controller,
                        legendgroup=controller,
                        showlegend=i == 1,
                        line={"color": colours.get(controller)},
                    ),
                    row=i,
                    col=1,
                )
        for i, column in enumerate(columns, start=1):
            name = column.split("_", 1)[1] if "_" in column else column
            target = handle.targets.get(name)
            if target and f"{STATE}{target}" in rows:
                first = rows[rows["controller"] == rows["controller"].iloc[0]].sort_values("step")
                fig.add_trace(
                    go.Scatter(
                        x=first["time"],
                        y=first[f"{STATE}{target}"],
                        mode="lines",
                        name=f"set point ({target})",
                        showlegend=False,
                        line={"color": "black", "dash": "dash"},
                    ),
                    row=i,
                    col=1,
                )
            limits = handle.actions.get(name) if column.startswith(ACTION) else None
            if limits is not None:
                for edge in (limits.low, limits.high):
                    fig.add_hline(y=edge, line_dash="dot", line_color="grey", row=i, col=1)
            constraint = handle.limits.get(name) if column.startswith(STATE) else None
            for edge in constraint or ():
                if edge is not None:  # a constraint: the runaway temperature
                    fig.add_hline(
                        y=edge, line_dash="dash", line_color="#c00", row=i, col=1,
                        annotation_text=f"limit {edge:g}", annotation_font_color="#c00",
                    )  # fmt: skip
            fig.update_yaxes(title_text=label(column, units), row=i, col=1)
        fig.update_xaxes(title_text=time_title, row=len(columns), col=1)
        fig.update_layout(
            height=140 * len(columns) + 80,
            margin={"t": 40, "b": 40},
            title_text=f"scenario {scenario}",
        )
        parts.append(_lazy_figure_html(fig, f"scenario-{scenario}"))
    return "\n".join(parts)


def _lazy_figure_html(fig: go.Figure, div_id: str) -> str:
    """A figure drawn when it scrolls near the window, or after the page has loaded
    (player.js), so that a run with many scenarios still opens quickly; its JSON waits in
    the page."""
    height = fig.layout.height or 450
    spec = fig.to_json().replace("</", "<\\/")  # script text: only "</" needs escaping
    return (
        f"<div id='{div_id}' class='lazy-figure' style='min-height:{height}px'></div>"
        f"<script type='application/json' data-figure-for='{div_id}'>{spec}</script>"
    )


def _verdict_html(summary: Mapping[str, Any]) -> str:
    """The run's verdict (``jobs.verdict``), first on the page, with its diagnoses."""
    verdict = read_verdict(summary)
    if verdict is None:
        return (
            "<p class='run-verdict none' id='run-verdict'>No verdict: this run was not "
            "assessed.</p>"
        )
    kind = {True: "beats", False: "loses", None: "none"}[verdict.beats]
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in verdict.diagnoses)
    return f"<p class='run-verdict {kind}' id='run-verdict'>{html.escape(verdict.line())}</p>" + (
        f"<ul class='diagnoses'>{notes}</ul>" if notes else ""
    )


def kpi_table_html(kpis: Mapping[str, Any], handle: SimSnapshot) -> str:
    """Per controller, then per scenario; where the agent is worse than the baseline, it
    says so."""
    units = {**handle.kpi_units, **(kpis.get("units") or {})}
    totals = kpis["kpis"]
    names = list(next(iter(totals.values())))
    head = "".join(f"<th>{html.escape(kpi_header(n, units))}</th>" for n in names)
    out = [
        f"<table class='kpis' id='kpi-table'><tr><th>controller</th><th>scenario</th>{head}</tr>"
    ]
    per_scenario = kpis.get("scenarios") or []
    baseline_by_scenario = {r["scenario"]: r for r in per_scenario if r["controller"] == "baseline"}
    rows = [("all scenarios", c, v, totals.get("baseline")) for c, v in totals.items()]
    rows += [
        (r["scenario"], r["controller"], r, baseline_by_scenario.get(r["scenario"]))
        for r in per_scenario
    ]
    worse_count = 0
    for scenario, controller, values, baseline in rows:
        cells = []
        for name in names:
            value = values.get(name)
            worse = (
                controller == "agent"
                and baseline is not None
                and value is not None
                and worse_than_baseline(handle, name, value, baseline.get(name))
            )
            worse_count += worse
            text = "" if value is None else f"{value:.4g}"
            cells.append(f"<td class='worse'>{text} (worse)</td>" if worse else f"<td>{text}</td>")
        out.append(
            f"<tr><td>{html.escape(controller)}</td><td>{html.escape(str(scenario))}</td>"
            f"{''.join(cells)}</tr>"
        )
    out.append("</table>")
    verdict = (
        f"<p class='verdict'>The agent is worse than the baseline in {worse_count} cell(s), "
        "marked (worse).</p>"
        if worse_count
        else "<p class='verdict'>The agent is nowhere worse than the baseline.</p>"
    )
    return "\n".join(out) + verdict


def worse_than_baseline(
    handle: SimSnapshot, name: str, value: float | None, baseline: float | None
) -> bool:
    """Whether ``value`` of KPI ``name`` is worse than the baseline's, in the KPI's direction."""
    if value is None or baseline is None:
        return False
    if handle.higher_is_better(name):
        return value < baseline - 1e-12
    return value > baseline + 1e-12


def _figure_html(fig: go.Figure | None, div_id: str) -> str:
    if fig is None:
        return "<p>No metrics.jsonl in this run.</p>"
    return fig.to_html(
        full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False}
    )


def _summary_html(summary: Mapping[str, Any], seed: Any, config_text: str) -> str:
    """The run at a glance, rounded and with units; then, folded, what it was trained with."""
    details = _details_html(summary, seed, config_text)
    if not summary:
        return "<p>No summary.json: the run has not finished.</p>" + details
    rows = [
        ("status", summary.get("status")),
        ("stopped by", summary.get("stop_reason")),
        ("algorithm", summary.get("algorithm")),
        ("iterations", _count(summary.get("iterations"))),
        ("env steps", _count(summary.get("env_steps_sampled"))),
        ("episodes", _count(summary.get("episodes_total"))),
        ("training time", _duration(summary.get("wall_time_s"))),
        ("sessions", _count(summary.get("sessions"))),
        ("final training return", _round(summary.get("episode_return_mean"))),
        ("simulator failures", _count(summary.get("env_step_failures"))),
    ]
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in rows)
    return f"<dl class='summary'>{items}</dl>" + details


def _details_html(summary: Mapping[str, Any], seed: Any, config_text: str) -> str:
    trained = summary.get("environment") or {}
    versions = trained.get("versions") or {}
    rows = [
        ("seed", seed),
        ("git revision", trained.get("git_revision")),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or None),
        ("host", trained.get("host")),
        ("machine", trained.get("machine")),
        ("config digest", summary.get("config_digest")),
    ]
    items = "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape('not recorded' if v is None else str(v))}</dd>"
        for k, v in rows
    )
    return (
        "<details id='run-details'><summary>Config, seed, revision, versions, machine</summary>"
        f"<dl class='summary'>{items}</dl><pre>{html.escape(config_text)}</pre></details>"
    )


def _count(value: Any) -> str:
    return f"{value:,.0f}" if isinstance(value, int | float) and math.isfinite(value) else "-"


def _round(value: Any) -> str:
    if isinstance(value, int | float) and math.isfinite(value):
        return f"{value:.4g}"
    return "not measured"


def _duration(seconds: Any) -> str:
    """``95 s``, ``2 min 23 s``, ``1 h 04 min``."""
    if not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
