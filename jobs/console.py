"""What training prints: a line per iteration with rate and ETA, and KPI tables with units."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console

from jobs.checkpoints import Progress
from jobs.config import ExperimentConfig
from jobs.rundir import Metric

console = Console(highlight=False, soft_wrap=True)


def eta_s(cfg: ExperimentConfig, progress: Progress, steps_per_s: float) -> float | None:
    """Seconds left under the tightest budget (ignoring target_return, which cannot be foreseen)."""
    left = []
    if cfg.stop.max_env_steps is not None and steps_per_s > 0:
        left.append(max(0.0, (cfg.stop.max_env_steps - progress.env_steps) / steps_per_s))
    if cfg.stop.max_wall_s is not None:
        left.append(max(0.0, cfg.stop.max_wall_s - progress.wall_time_s))
    return min(left) if left else None


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress_line(cfg: ExperimentConfig, progress: Progress, metrics: Mapping[str, float]) -> str:
    ret = metrics.get(Metric.RETURN)
    rate = metrics.get(Metric.STEPS_PER_S, 0.0)
    budget = f"/{cfg.stop.max_env_steps:,}" if cfg.stop.max_env_steps else ""
    failures = metrics.get(Metric.STEP_FAILURES, 0)
    return (
        f"iter {progress.iteration:4d} | return {ret:9.3f} | "
        if ret is not None
        else f"iter {progress.iteration:4d} | return       n/a | "
    ) + (
        f"env steps {progress.env_steps:,}{budget} | {rate:,.0f} steps/s | "
        f"elapsed {_clock(progress.wall_time_s)} | ETA {_clock(eta_s(cfg, progress, rate))}"
        + (f" | sim failures {failures:.0f}" if failures else "")
    )


def kpi_header(name: str, units: Mapping[str, str]) -> str:
    """``ca_rms [kmol/m3]``: a KPI's name with its unit, where it has one."""
    return f"{name} [{units[name]}]" if units.get(name) else name


def print_kpis(table: Any, title: str, units: Mapping[str, str] | None = None) -> None:
    from rich.markup import escape
    from rich.table import Table

    view = Table(title=title)
    for column in table.columns:
        justify = "left" if column == "controller" else "right"
        # escaped: rich would read "[kmol/m3]" as a style and drop it
        view.add_column(escape(kpi_header(str(column), units or {})), justify=justify)
    for row in table.itertuples(index=False):
        view.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    # Off a terminal (a log file, CI) rich assumes 80 columns and would cut the KPI names.
    (console if console.is_terminal else Console(width=160, highlight=False)).print(view)
