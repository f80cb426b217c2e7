"""A study's trials as their run folders hold them: one row each."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from jobs.rundir import RunError, read_summary
from jobs.tune.space import dig
from jobs.tune.study import Study
from jobs.verdict import beaten_at


@dataclass
class TrialRow:
    trial: str
    status: str
    params: dict[str, Any]
    iterations: int | None
    env_steps: int | None
    metric: float | None
    kpi: float | None
    baseline_kpi: float | None
    stop_reason: str | None
    beats: bool | None = None
    """The trial's verdict (``jobs.verdict``): None where it was not assessed."""
    beaten_at: int | None = None
    """Env steps at the first assessment that beat the baseline."""
    given: bool = False
    """The trial trained the config's own values (``Study.given``)."""


def trial_rows(folder: Path, study: Study) -> list[TrialRow]:
    """Every trial's run folder, read back from its files (config, summary, metrics)."""
    rows = []
    for run in sorted(folder.glob("trial-*")):
        if not (run / "config.yaml").is_file():
            continue
        config = yaml.safe_load((run / "config.yaml").read_text())
        params = {key: dig(config, key) for key in study.space}
        try:
            summary = read_summary(run)
        except RunError:
            summary = {}
        lines = _metrics(run)
        last = lines[-1] if lines else {}
        assessment = summary.get("assessment") or {}
        rows.append(
            TrialRow(
                trial=run.name,
                status=summary.get("status", "running"),
                params=params,
                iterations=summary.get("iterations", last.get("iteration")),
                env_steps=summary.get("env_steps_sampled", last.get("env_steps")),
                metric=last.get(study.metric),
                kpi=(assessment.get("agent") or {}).get(study.kpi),
                baseline_kpi=(assessment.get("baseline") or {}).get(study.kpi),
                stop_reason=summary.get("stop_reason"),
                beats=(summary.get("verdict") or {}).get("beats"),
                beaten_at=beaten_at(summary),
                given=study.given is not None and params == study.given,
            )
        )
    return rows


def _metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
