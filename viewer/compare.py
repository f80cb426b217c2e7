"""`invoke compare --run A --run B [...]`: runs side by side on one page.

Their training curves on one chart (in env steps, so runs on different machines compare),
their verdicts, and their KPIs per assessment scenario against the same baseline. A study
folder stands for its trials, in the study's ranking. Like the run page, it is one
self-contained HTML file read from the runs' own files (``sim.json``): no simulator needed.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from jobs.rundir import Metric, RunDir, RunError, write_atomic
from jobs.snapshot import SimSnapshot, read_snapshot
from jobs.verdict import read_verdict
from viewer.page import worse_than_baseline

ALL = "all scenarios"


@dataclass
class Compared:
    """One run on the page."""

    name: str
    path: Path
    sim: SimSnapshot
    summary: dict[str, Any]
    curve: list[tuple[int, float]]
    """(env steps, training return) of every iteration that measured one."""
    kpis: dict[str, dict[str, dict[str, float | None]]]
    """scenario (or ``all scenarios``) -> controller -> KPI -> value."""


def runs_of(paths: list[Path]) -> list[Path]:
    """The run folders meant: each path a run, or a study folder (``study.json``) standing
    for its trials in the study's ranking."""
    if not paths:
        raise RunError("give the runs to compare: --run RUN_A --run RUN_B (or a study folder)")
    found: list[Path] = []
    for path in paths:
        study = path / "study.json"
        if study.is_file():
            try:
                trials = [t["trial"] for t in json.loads(study.read_text())["trials"]]
            except (OSError, ValueError, KeyError, TypeError):
                raise RunError(
                    f"{study}: not a finished study's results; resume the study"
                ) from None
            found += [path / trial for trial in trials]
        else:
            found.append(path)
    return found


def read_run(path: Path) -> Compared:
    run = RunDir.open(path)
    summary = json.loads(run.summary.read_text()) if run.summary.is_file() else {}
    curve = []
    if run.metrics.is_file():
        for line in run.metrics.read_text().splitlines():
            row = json.loads(line) if line.strip() else {}
            value = row.get(Metric.RETURN)
            if isinstance(value, int | float) and math.isfinite(value):
                curve.append((int(row["env_steps"]), float(value)))
    kpis: dict[str, dict[str, dict[str, float | None]]] = {}
    assessed = run.assessment / "kpis.json"
    if assessed.is_file():
        data = json.loads(assessed.read_text())
        kpis[ALL] = data.get("kpis") or {}
        for row in data.get("scenarios") or []:
            values = {k: v for k, v in row.items() if k not in ("controller", "scenario")}
            kpis.setdefault(str(row["scenario"]), {})[str(row["controller"])] = values
    return Compared(_name(path), path, read_snapshot(run), summary, curve, kpis)


def _name(path: Path) -> str:
    parts = path.resolve().parts
    return "/".join(parts[-2:])


def build_comparison(paths: list[Path], out: Path) -> Path:
    """Write the comparison page of ``paths`` to ``out`` atomically; returns ``out``."""
    runs = [read_run(p) for p in runs_of(paths)]
    if len(runs) < 2:
        raise RunError(f"{paths[0]}: one run only; compare two or more (--run A --run B)")
    sims = {r.sim.name for r in runs}
    note = (
        f"These runs trained different simulators ({', '.join(sorted(sims))}): their KPIs are "
        "not comparable; the table shows each against its own baseline."
        if len(sims) > 1
        else ""
    )
    page = TEMPLATE.format(
        title=html.escape(" vs ".join(r.name for r in runs)),
        note=html.escape(note),
        verdicts=_verdicts_html(runs),
        curves=_curves(runs).to_json().replace("</", "<\\/"),
        kpis=kpi_comparison_html(runs),
        plotly=get_plotlyjs(),
    )
    write_atomic(out, page)
    return out


def _verdicts_html(runs: list[Compared]) -> str:
    rows = []
    for run in runs:
        verdict = read_verdict(run.summary)
        said = verdict.line() if verdict else "verdict: none (the run was not assessed)"
        kind = "none" if verdict is None or verdict.beats is None else (
            "beats" if verdict.beats else "loses"
        )  # fmt: skip
        steps = run.summary.get("env_steps_sampled")
        rows.append(
            f"<tr><td>{html.escape(run.name)}</td><td class='{kind}'>{html.escape(said)}</td>"
            f"<td>{'-' if steps is None else f'{steps:,}'}</td></tr>"
        )
    return (
        "<table id='verdicts'><tr><th>run</th><th>verdict</th><th>env steps</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _curves(runs: list[Compared]) -> go.Figure:
    fig = go.Figure()
    for run in runs:
        if run.curve:
            steps, values = zip(*run.curve, strict=True)
            fig.add_trace(go.Scatter(x=steps, y=values, mode="lines", name=run.name))
    fig.update_layout(
        height=420, margin={"t": 30}, xaxis_title="env steps",
        yaxis_title="episode return (mean, training)", legend={"orientation": "h"},
    )  # fmt: skip
    return fig


def kpi_comparison_html(runs: list[Compared]) -> str:
    """Per scenario and KPI: the baseline's value, then each run's agent; a cell worse than
    the baseline in the KPI's direction is marked."""
    first = runs[0]
    scenarios = list(dict.fromkeys(s for r in runs for s in r.kpis))
    if not scenarios:
        return "<p>None of these runs was assessed.</p>"
    header = "".join(f"<th>{html.escape(r.name)}</th>" for r in runs)
    rows = []
    for scenario in scenarios:
        names = list(dict.fromkeys(
            k for r in runs for k in (r.kpis.get(scenario, {}).get("agent") or {})
        ))  # fmt: skip
        for kpi in names:
            baseline = _value(first.kpis.get(scenario, {}).get("baseline"), kpi)
            unit = first.sim.kpi_units.get(kpi, "")
            label = f"{kpi} [{unit}]" if unit else kpi
            cells = []
            for run in runs:
                value = _value(run.kpis.get(scenario, {}).get("agent"), kpi)
                own = _value(run.kpis.get(scenario, {}).get("baseline"), kpi)
                worse = worse_than_baseline(run.sim, kpi, value, own)
                cells.append(f"<td{' class=worse' if worse else ''}>{_fmt(value)}</td>")
            rows.append(
                f"<tr><td>{html.escape(scenario)}</td><td>{html.escape(label)}</td>"
                f"<td>{_fmt(baseline)}</td>{''.join(cells)}</tr>"
            )
    return (
        "<table id='kpi-comparison'><tr><th>scenario</th><th>KPI</th><th>baseline</th>"
        f"{header}</tr>{''.join(rows)}</table>"
    )


def _value(values: Mapping[str, Any] | None, kpi: str) -> float | None:
    value = (values or {}).get(kpi)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.4g}"


TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>aml-rl: {title}</title>
<style>
  body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }}
  h1 {{ font-size: 1.4em; }} h2 {{ margin-top: 1.6em; border-bottom: 1px solid #ccc; }}
  table {{ border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }}
  th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
  th:first-child, td:first-child, td:nth-child(2) {{ text-align: left; }}
  td.worse, td.loses {{ background: #fde2e2; color: #900; font-weight: 600; }}
  td.beats {{ background: #e3f4e6; color: #145a26; }}
  .note {{ color: #555; font-size: 0.9em; }}
  #verdicts th, #verdicts td {{ text-align: left; }}
</style>
<script>{plotly}</script>
</head>
<body>
<h1>aml-rl: {title}</h1>
<p class="note">{note}</p>
<h2>Verdicts</h2>
{verdicts}
<h2>Training return against env steps</h2>
<div id="curves"></div>
<script type="application/json" id="curves-data">{curves}</script>
<script>
  const spec = JSON.parse(document.getElementById("curves-data").textContent);
  Plotly.newPlot("curves", spec.data, spec.layout, {{ displaylogo: false }});
</script>
<h2>KPIs per scenario against the baseline</h2>
<p class="note">Agent of each run; marked where it is worse than the baseline in the KPI's
direction.</p>
{kpis}
</body>
</html>
"""
