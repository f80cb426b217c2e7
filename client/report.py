"""A run's summary as Markdown, and whether its policy beat the baseline (for CI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobs.rundir import read_summary


def _summary(run: Path) -> dict[str, Any]:
    return read_summary(run)


def beats_baseline(run: Path) -> bool:
    """The agent's mean return exceeds the baseline's, with no more runaways or failures."""
    kpis = _summary(run).get("assessment") or {}
    agent, baseline = kpis.get("agent"), kpis.get("baseline")
    if agent is None or baseline is None:
        return False
    worse_counts = any(
        agent.get(k, 0) > baseline.get(k, 0)
        for k in agent
        if k.endswith("_count") and "limit" not in k
    )
    return agent["return"] > baseline["return"] and not worse_counts


def markdown(run: Path) -> str:
    s = _summary(run)
    lines = [
        f"### {s['experiment']} / {s['run_id']}: {s['status']}",
        "",
        f"{s['algorithm']} on `{s['sim']}`: {s['iterations']} iterations, "
        f"{s['env_steps_sampled']:,} env steps, {s['wall_time_s']:.0f} s; "
        f"stop: {s['stop_reason']}; final return "
        f"{s['episode_return_mean']:.4g}; simulator failures: {s['env_step_failures']:.0f}",
        "",
    ]
    kpis = s.get("assessment") or {}
    if kpis:
        names = list(next(iter(kpis.values())))
        lines += ["| controller | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for controller, values in kpis.items():
            lines.append(
                f"| {controller} | " + " | ".join(f"{values[n]:.4g}" for n in names) + " |"
            )
        lines += ["", f"Beats the baseline: {'yes' if beats_baseline(run) else 'no'}"]
    if (run / "view.html").is_file():
        lines += [
            "",
            "The run's page, `view.html` (curves, agent against baseline, episode "
            "player), is in the run directory: open it in a browser.",
        ]
    else:
        lines += ["", f"See the run in a browser: `invoke view {run}` writes its page."]
    return "\n".join(lines)
