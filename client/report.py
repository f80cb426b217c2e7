"""A run's summary as Markdown, and whether its policy beat the baseline (for CI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobs.rundir import read_summary
from jobs.verdict import read_verdict


def _summary(run: Path) -> dict[str, Any]:
    return read_summary(run)


def beats_baseline(run: Path) -> bool:
    """The run's verdict (``jobs.verdict``): False where it has none or no baseline."""
    verdict = read_verdict(_summary(run))
    return verdict is not None and verdict.beats is True


def markdown(run: Path) -> str:
    s = _summary(run)
    lines = [
        f"### {s['experiment']} / {s['run_id']}: {s['status']}",
        "",
        f"{s['algorithm']} on `{s['sim']}`: {s['iterations']} iterations, "
        f"{s['env_steps_sampled']:,} env steps, {s['wall_time_s']:.0f} s; "
        f"stop: {s['stop_reason']}; final return "
        f"{_number(s.get('episode_return_mean'))}; simulator failures: "
        f"{_number(s.get('env_step_failures'))}",
        "",
    ]
    verdict = read_verdict(s)
    said = verdict.line() if verdict else "verdict: none (the run was not assessed)"
    lines += [f"**{said}**", ""]
    lines += [f"- {note}" for note in (verdict.diagnoses if verdict else [])]
    kpis = s.get("assessment") or {}
    if kpis:
        names = list(next(iter(kpis.values())))
        units = (s.get("units") or {}).get("kpis") or {}  # as printed KPI tables carry them
        header = [f"{n} [{units[n]}]" if units.get(n) else n for n in names]
        lines += ["| controller | " + " | ".join(header) + " |", "|---" * (len(names) + 1) + "|"]
        for controller, values in kpis.items():
            lines.append(
                f"| {controller} | " + " | ".join(_number(values.get(n)) for n in names) + " |"
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


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "not measured"
