"""A study's results: its trials ranked by their assessment, the table, ``best.yaml``."""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ray import tune

from jobs.config import load_config
from jobs.console import console
from jobs.rundir import RunError, write_atomic, write_json
from jobs.tracking import use_tracking_uri
from jobs.tune.confirm import confirm
from jobs.tune.rows import TrialRow, trial_rows
from jobs.tune.space import Param
from jobs.tune.study import BEST_FILE, RESULTS_FILE, Study
from sims.registry import resolve


def rank(rows: list[TrialRow], study: Study, higher_kpi_better: bool) -> list[TrialRow]:
    """Trials that beat the baseline first, the fewest env steps to that verdict first; then
    the other assessed trials, by the KPI; then the rest (stopped early, failed) by the
    training metric."""
    metric_sign = 1 if "loss" in study.metric else -1
    kpi_sign = -1 if higher_kpi_better else 1

    def key(row: TrialRow) -> tuple[int, float]:
        if row.beaten_at is not None:
            return (0, float(row.beaten_at))
        if row.kpi is not None and math.isfinite(row.kpi):
            return (1, kpi_sign * row.kpi)
        if row.metric is not None and math.isfinite(row.metric):
            return (2, metric_sign * row.metric)
        return (3, 0.0)

    return sorted(rows, key=key)


def finish_study(
    folder: Path, study: Study, params: list[Param], mlflow_uri: str
) -> dict[str, Any]:
    cfg = load_config(folder / "base.yaml")
    handle = resolve(cfg.sim)
    rows = rank(trial_rows(folder, study), study, handle.higher_is_better(study.kpi))
    print_table(rows, params, study, title=f"study {folder.name}: final ranking")
    assessed = [r for r in rows if r.kpi is not None]
    if not assessed:
        raise RunError(
            f"{folder}: no trial finished with an assessment (see each trial's summary.json); "
            "give the trials a larger budget (stop.*) or fewer early stops (--scheduler fifo)"
        )
    best = assessed[0]
    text = (folder / best.trial / "config.yaml").read_text()
    verdict = _verdict_words(best)
    against = against_given(best, rows)
    given = next((r for r in rows if r.given), None)
    confirmed = None
    if study.confirm_seeds and given is not None and given is not best:
        confirmed = confirm(folder, study, given, best, mlflow_uri)
    header = (
        f"# The best trial of study {folder.name}: {best.trial}, {study.kpi} {best.kpi:.4g} "
        f"(baseline {best.baseline_kpi:.4g}); {verdict}\n"
        + (f"# {against}\n" if against else "")
        + (f"# {confirmed.words()}\n" if confirmed else "")
        + "".join(f"# {k}: {v}\n" for k, v in best.params.items())
        + f"# Train it: invoke train --config {folder / BEST_FILE}\n"
    )
    write_atomic(folder / BEST_FILE, header + text)
    result = {
        "study": folder.name,
        "metric": study.metric,
        "kpi": study.kpi,
        "best": {**asdict(best), "config": BEST_FILE},
        "against_given": against,
        "confirmation": confirmed.to_json() if confirmed else None,
        "trials": [asdict(r) for r in rows],
    }
    write_json(folder / RESULTS_FILE, result)
    _close_parent(mlflow_uri, study, best, folder)
    console.print(
        f"best: {best.trial} ({study.kpi} {best.kpi:.4g}; {verdict}); config {folder / BEST_FILE}"
    )
    if against:
        console.print(against)
    if confirmed:
        console.print(confirmed.words())
    return result


def _verdict_words(row: TrialRow) -> str:
    if row.beaten_at is not None:
        return f"beats the baseline after {row.beaten_at:,} env steps"
    if row.kpi is None:
        return f"stopped early at {_fmt(row.env_steps)} env steps, not assessed"
    return "does NOT beat the baseline"


def against_given(best: TrialRow, rows: list[TrialRow]) -> str:
    """The best trial against the config as given, in the verdict's terms; empty where the
    study had no such trial."""
    given = next((r for r in rows if r.given), None)
    if given is None:
        return ""
    if given is best:
        return (
            f"no sampled trial did better than the config as given ({given.trial}, which "
            f"{_verdict_words(given)})"
        )
    said = f"the config as given ({given.trial}) {_verdict_words(given)}"
    if best.beaten_at is None:
        return f"{said}; neither it nor any sampled trial beat the baseline"
    if given.beaten_at is None:
        return f"{said}; {best.trial} beats it after {best.beaten_at:,} env steps"
    return (
        f"{said}; {best.trial} after {best.beaten_at:,}: "
        f"{given.beaten_at / best.beaten_at:.2f}x fewer env steps to the verdict"
    )


def _close_parent(uri: str, study: Study, best: TrialRow, folder: Path) -> None:
    import mlflow

    use_tracking_uri(uri)
    client = mlflow.tracking.MlflowClient()
    run_id = study.mlflow_run_id
    client.log_metric(run_id, f"best/{study.kpi}", math.nan if best.kpi is None else best.kpi)
    client.set_tag(run_id, "best_trial", best.trial)
    for key, value in best.params.items():
        client.set_tag(run_id, f"best.{key}", str(value))
    client.log_artifact(run_id, str(folder / BEST_FILE))
    if run_id != os.environ.get("MLFLOW_RUN_ID"):  # Azure ML ends its job's run itself
        client.set_terminated(run_id, "FINISHED")


def print_table(rows: list[TrialRow], params: list[Param], study: Study, title: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    table.add_column("trial", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for p in params:  # the key's last part, unless two keys share it
        short = p.key.rsplit(".", 1)[-1]
        clash = sum(q.key.rsplit(".", 1)[-1] == short for q in params) > 1
        table.add_column(p.key if clash else short, justify="right")
    for column in ("iters", "env steps", f"{study.metric.rsplit('/', 1)[-1]} (training)"):
        table.add_column(column, justify="right")
    table.add_column(f"{study.kpi} (assessed)", justify="right")
    table.add_column("baseline", justify="right")
    table.add_column("beats it at (env steps)", justify="right")
    for row in rows:
        table.add_row(
            row.trial + (" (as given)" if row.given else ""),
            row.status,
            *(escape(_fmt(row.params.get(p.key))) for p in params),
            _fmt(row.iterations),
            _fmt(row.env_steps),
            _fmt(row.metric),
            _fmt(row.kpi),
            _fmt(row.baseline_kpi),
            _fmt(row.beaten_at)
            if row.beaten_at is not None
            else ("no" if row.beats is False else "-"),
        )
    wide = console if console.is_terminal else Console(highlight=False, width=160)
    wide.print(table)  # a log file (Azure ML's, CI's) has no terminal width: not 80 columns


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


class ResultsTable(tune.Callback):
    """Prints the results table while the study runs: when a trial ends, and at most every
    30 s otherwise."""

    def __init__(self, folder: Path, params: list[Param], study: Study) -> None:
        self.folder, self.params, self.study = folder, params, study
        self.printed = 0.0

    def _print(self) -> None:
        self.printed = time.monotonic()
        rows = trial_rows(self.folder, self.study)
        print_table(rows, self.params, self.study, title=f"study {self.folder.name}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        if time.monotonic() - self.printed > 30:
            self._print()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self._print()
