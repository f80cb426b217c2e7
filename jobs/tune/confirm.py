"""A study's lead, checked on seeds its trials did not use.

Trials train on one seed, and on a plant where the recipe's seeds spread widely (the CSTR's
need 160,000 to over 1,000,000 env steps to the verdict) the fastest trial is often the
luckiest. With ``--confirm-seeds``, the best trial's config and the config as given are
each trained on every confirming seed to the verdict (Ray Tune trials, spread over the
nodes like the study's), and the study's last word compares their medians."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ray import tune

from jobs.console import console
from jobs.rundir import write_atomic
from jobs.tune.rows import trial_rows
from jobs.verdict import median_or_never


@dataclass(frozen=True)
class Confirmation:
    seeds: list[int]
    best: str
    """The best trial's name."""
    given_steps: list[int | None]
    """Env steps to the verdict of the config as given, per seed (None: not within its cap)."""
    best_steps: list[int | None]
    """The same, for the best trial's config."""

    @property
    def confirmed(self) -> bool:
        best, given = median_or_never(self.best_steps), median_or_never(self.given_steps)
        return best is not None and (given is None or best < given)

    def words(self) -> str:
        """The confirmation in the verdict's terms, one line."""
        best, given = median_or_never(self.best_steps), median_or_never(self.given_steps)
        seeds = ", ".join(map(str, self.seeds))
        said = (
            f"on seeds {seeds}: {self.best} {_needs(best)} ({_each(self.best_steps)}), the "
            f"config as given {_needs(given)} ({_each(self.given_steps)})"
        )
        if self.confirmed:
            ratio = f": {given / best:.2f}x fewer env steps to the verdict" if given else ""
            return f"confirmed {said}{ratio}"
        return f"NOT confirmed {said}: its lead on the study's seed did not hold; keep the config"

    def to_json(self) -> dict[str, Any]:
        return {
            "seeds": self.seeds,
            "best": self.best,
            "given_steps": self.given_steps,
            "best_steps": self.best_steps,
            "confirmed": self.confirmed,
            "said": self.words(),
        }


def _needs(steps: float | None) -> str:
    if steps is None:
        return "never beats the baseline on most seeds"
    return f"needs a median of {steps:,.0f} env steps to the verdict"


def _each(steps: list[int | None]) -> str:
    return " / ".join("never" if s is None else f"{s:,}" for s in steps)


def confirm(folder: Path, study: Any, given: Any, best: Any, mlflow_uri: str) -> Confirmation:
    """Train ``given``'s and ``best``'s configs (trial rows of ``folder``) on every one of
    ``study.confirm_seeds``, each under ``folder/confirm-<trial>/``; a resumed study
    continues what a kill left."""
    found = {}
    for row in (given, best):
        where = folder / f"confirm-{row.trial}"
        where.mkdir(exist_ok=True)
        base = where / "base.yaml"
        if not base.is_file():  # the config the trial trained with, seed aside
            write_atomic(base, (folder / row.trial / "config.yaml").read_text())
        console.print(
            f"confirming {row.trial}{' (as given)' if row.given else ''} on seeds "
            f"{', '.join(map(str, study.confirm_seeds))}: {where}"
        )
        _run(where, study, mlflow_uri)
        seeds_only = replace(study, space={"seed": ["choice", [study.confirm_seeds]]}, given=None)
        by_seed = {r.params["seed"]: r.beaten_at for r in trial_rows(where, seeds_only)}
        found[row.trial] = [by_seed.get(seed) for seed in study.confirm_seeds]
    return Confirmation(
        seeds=list(study.confirm_seeds),
        best=best.trial,
        given_steps=found[given.trial],
        best_steps=found[best.trial],
    )


def _run(where: Path, study: Any, mlflow_uri: str) -> None:
    from ray.tune.schedulers import FIFOScheduler

    from jobs.config import load_config
    from jobs.tune.trial import Trial, trial_resources

    trainable = tune.with_resources(
        Trial, tune.PlacementGroupFactory(trial_resources(load_config(where / "base.yaml")))
    )
    if tune.Tuner.can_restore(str(where / "tune")):  # a resumed study: what a kill left
        tune.Tuner.restore(
            str(where / "tune"), trainable=trainable, resume_unfinished=True, resume_errored=True
        ).fit()
        return
    tune.Tuner(
        trainable,
        param_space={
            "seed": tune.grid_search(list(study.confirm_seeds)),
            "__study__": str(where),
            "__mlflow__": mlflow_uri,
        },
        tune_config=tune.TuneConfig(
            metric=study.metric,
            mode="min" if "loss" in study.metric else "max",
            max_concurrent_trials=study.max_concurrent or None,
            scheduler=FIFOScheduler(),
        ),
        run_config=tune.RunConfig(name="tune", storage_path=str(where), verbose=0),
    ).fit()
