"""A study's record (``study.yaml``): what it searches, how it stops and ranks trials."""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jobs.config import ExperimentConfig
from jobs.rundir import Metric, RunError, write_atomic
from jobs.train import METRIC_NAMES
from jobs.tune.space import Param, SpaceError, given_values
from sims.registry import resolve

SCHEDULERS = ("asha", "fifo")
METRICS = tuple(METRIC_NAMES)
DEFAULT_METRIC = Metric.RETURN
GRACE_ITERATIONS = 3
"""ASHA lets every trial sample this many of the base config's train batches before it may
stop one."""
STUDY_FILE = "study.yaml"
RESULTS_FILE = "study.json"
BEST_FILE = "best.yaml"


@dataclass
class Study:
    """What a study was asked to do, written to ``study.yaml`` so that ``--resume`` needs
    nothing else."""

    samples: int = 4
    scheduler: str = "asha"
    metric: str = DEFAULT_METRIC
    kpi: str = "return"
    max_concurrent: int = 0
    """0: as many as the CPUs hold."""
    time_budget_s: float | None = None
    """Stop the whole study after this long (the running trials stop as an early stop does)."""
    mlflow_run_id: str = ""
    seed: int = field(default_factory=lambda: secrets.randbelow(2**31))
    """The sampler's seed: a resume that finds no Tune state samples the same trials again."""
    space: dict[str, Any] = field(default_factory=dict)
    given: dict[str, Any] | None = None
    """The config's own values of the space's keys: the first trial trains them unchanged, so
    that the study says whether it found anything better than what it was given. None where
    the config leaves a key of the space unset (a ``training.extra`` name)."""
    confirm_seeds: list[int] = field(default_factory=list)
    """Seeds the trials did not train with: the best trial's config and the config as given
    are each trained on every one to the verdict, and the study's last word compares their
    medians (one seed's lead is often luck). Empty: no confirmation."""

    @classmethod
    def read(cls, folder: Path) -> Study:
        path = folder / STUDY_FILE
        if not path.is_file():
            raise RunError(
                f"{folder}: not a study (no {STUDY_FILE}); pass a folder made by `invoke tune`"
            )
        return cls(**yaml.safe_load(path.read_text()))

    def write(self, folder: Path) -> None:
        write_atomic(folder / STUDY_FILE, yaml.safe_dump(asdict(self), sort_keys=False))


def new_study(
    params: list[Param],
    samples: int,
    scheduler: str,
    metric: str,
    kpi: str,
    max_concurrent: int,
    cfg: ExperimentConfig,
    confirm_seeds: list[int] | None = None,
) -> Study:
    if samples < 1:
        raise SpaceError(f"--samples {samples}: give 1 or more")
    if scheduler not in SCHEDULERS:
        raise SpaceError(f"--scheduler {scheduler!r}: use one of {', '.join(SCHEDULERS)}")
    if metric not in METRICS:
        raise SpaceError(f"--metric {metric!r}: use one of {', '.join(sorted(set(METRICS)))}")
    if max_concurrent < 0:
        raise SpaceError(f"--max-concurrent {max_concurrent}: give 0 (as the CPUs hold) or more")
    if not cfg.assessment.enabled:
        raise SpaceError(
            "the config turns assessment off (assessment.enabled: false), and the study ranks "
            "trials by it; turn it on"
        )
    handle = resolve(cfg.sim)
    known = ["return", *handle.kpi_units]
    kpi = kpi or handle.primary_kpi  # the verdict's KPI unless asked otherwise
    if kpi not in known:
        raise SpaceError(f"--kpi {kpi!r}: {cfg.sim} has KPIs {', '.join(dict.fromkeys(known))}")
    confirm_seeds = list(confirm_seeds or [])
    if cfg.seed in confirm_seeds:
        raise SpaceError(
            f"--confirm-seeds {','.join(map(str, confirm_seeds))}: {cfg.seed} is the seed the "
            "trials train with (the config's seed); confirm on others"
        )
    return Study(
        confirm_seeds=confirm_seeds,
        samples=samples,
        scheduler=scheduler,
        metric=metric,
        kpi=kpi,
        max_concurrent=max_concurrent,
        space={p.key: [p.distribution, list(p.args)] for p in params},
        given=given_values(params, cfg),
    )


def parse_seeds(text: str) -> list[int]:
    """``--confirm-seeds 1,2,3``: distinct whole numbers >= 0, in the order given."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not all(item.isdigit() for item in items) or len(set(items)) != len(items):
        raise SpaceError(
            f"--confirm-seeds {text!r}: give distinct whole numbers separated by commas, "
            "e.g. --confirm-seeds 1,2,3"
        )
    return [int(item) for item in items]
