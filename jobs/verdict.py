"""Whether the agent beats the baseline: decided here, once, from an assessment.

Every place that says so (``invoke train``'s last line, ``summary.json``, the stop criterion,
``invoke report``, the run page, export, register and deploy, the workflow) reads a
:class:`Verdict`; none decides again. The rule: the agent is better than the baseline on the
simulator's primary KPI by at least ``margin`` (relative, in the KPI's own direction), and has
no more of any constraint KPI (runaways, limits crossed) than the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from jobs.rundir import Metric
from sims.handle import SimHandle

CONSTANT_SPREAD = 0.02
"""An action whose spread over every assessed step is below this share of its range, where the
baseline's is above it, is a constant policy: the output does not vary with the state."""


class LosingPolicy(ValueError):
    """A policy that does not beat its baseline, offered to export, register or deploy."""


@dataclass(frozen=True)
class Verdict:
    kpi: str
    """The primary KPI it was decided on."""
    agent: float
    baseline: float | None
    """None where the simulator has no baseline: nothing to beat, nothing decided."""
    higher_is_better: bool
    margin: float
    """The relative improvement asked for (0.05: 5% better than the baseline)."""
    unit: str = ""
    violations: dict[str, list[float]] = field(default_factory=dict)
    """Constraint KPIs where the agent has more than the baseline: name -> [agent, baseline]."""
    diagnoses: list[str] = field(default_factory=list)
    """Why it may not be learning (a constant policy), in words."""

    @property
    def improvement(self) -> float | None:
        """Relative improvement on the primary KPI, positive where the agent is better."""
        if self.baseline is None:
            return None
        better = self.agent - self.baseline if self.higher_is_better else self.baseline - self.agent
        return better / max(abs(self.baseline), 1e-12)

    @property
    def beats(self) -> bool | None:
        """True, False, or None where there is no baseline to beat. An agent whose KPI was
        not measured (every assessment episode failed) does not beat it."""
        if self.improvement is None:
            return None
        return (
            math.isfinite(self.agent)
            and math.isfinite(self.improvement)
            and self.improvement >= self.margin
            and not self.violations
        )

    def _values(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        text = f"{self.kpi} {_measured(self.agent, unit)}"
        if self.baseline is not None:
            text += f" vs baseline {_measured(self.baseline, unit)}"
        return text

    def line(self) -> str:
        """One line that says it all: ``verdict: beats the baseline (ca_rms 0.085 vs ...)``."""
        if self.beats is None:
            return f"verdict: no baseline to compare with ({self._values()})"
        improvement = self.improvement or 0.0
        if not math.isfinite(improvement):
            return f"verdict: does NOT beat the baseline ({self._values()}: nothing to compare)"
        asked = f", {self.margin:.0%} asked" if self.margin else ""
        change = f"{abs(improvement):.1%} {'better' if improvement >= 0 else 'worse'}{asked}"
        if self.beats:
            return f"verdict: beats the baseline ({self._values()}, {change})"
        reasons = [f"{self._values()}, {change}"]
        reasons += [f"{name} {a:g} vs baseline {b:g}" for name, (a, b) in self.violations.items()]
        text = f"verdict: does NOT beat the baseline ({'; '.join(reasons)})"
        if self.diagnoses:
            text += ". " + " ".join(self.diagnoses)
        return text

    def distance(self) -> str:
        """How far the agent is from the verdict, for the stop criterion's progress lines."""
        if self.improvement is None or not math.isfinite(self.improvement):
            return self._values()
        needed = f"; needs {self.margin:.0%} better" if self.margin else ""
        violated = "".join(f"; {name} {a:g} > {b:g}" for name, (a, b) in self.violations.items())
        where = "better" if self.improvement >= 0 else "worse"
        return f"{self._values()} ({abs(self.improvement):.1%} {where}{needed}{violated})"

    def to_json(self) -> dict[str, Any]:
        """As ``summary.json`` keeps it: a KPI not measured is null (JSON has no NaN)."""
        data = {**asdict(self), "beats": self.beats, "improvement": self.improvement}
        for key in ("agent", "baseline", "improvement"):
            if isinstance(data[key], float) and not math.isfinite(data[key]):
                data[key] = None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Verdict:
        names = {f for f in cls.__dataclass_fields__}
        found = {k: v for k, v in data.items() if k in names}
        found["agent"] = _number(found.get("agent"))
        return cls(**found)


def decide(assessment: Mapping[str, Any], handle: SimHandle, margin: float = 0.0) -> Verdict:
    """The verdict of an assessment (``AssessmentResult.to_json()``) of ``handle``'s simulator."""
    kpis = assessment["kpis"]
    agent, baseline = kpis["agent"], kpis.get("baseline")
    kpi = handle.primary_kpi if handle.primary_kpi in agent else "return"
    violations = {}
    if baseline is not None:
        for name in handle.constraint_kpis:
            if name in agent and agent[name] > baseline.get(name, 0.0):
                violations[name] = [agent[name], baseline.get(name, 0.0)]
    verdict = Verdict(
        kpi=kpi,
        agent=_number(agent.get(kpi)),
        baseline=None if baseline is None else _number(baseline.get(kpi)),
        higher_is_better=handle.higher_is_better(kpi),
        margin=margin,
        unit=handle.kpi_units.get(kpi, ""),
        violations=violations,
    )
    notes = constant_policy(assessment.get("action_spread", {}))
    if baseline is not None:
        notes += reward_disagrees(verdict, _number(agent.get("return")), baseline.get("return"))
    return replace(verdict, diagnoses=notes)


def reward_disagrees(verdict: Verdict, agent_return: float, baseline_return: Any) -> list[str]:
    """Name a reward that does not rank the two controllers as the primary KPI does: the
    agent's return as good as the baseline's (within ``RETURN_TIE``) while the KPI misses.
    PPO climbs the return; where the return cannot tell the KPI's winner from its loser, it
    has nothing to climb toward the verdict."""
    improvement = verdict.improvement
    if (
        verdict.kpi == "return"
        or improvement is None
        or not math.isfinite(improvement)
        or improvement >= verdict.margin
        or not isinstance(baseline_return, int | float)
        or not math.isfinite(agent_return)
    ):
        return []
    gap = (agent_return - baseline_return) / max(abs(baseline_return), 1e-12)
    if gap < -RETURN_TIE:
        return []
    return [
        f"Reward and KPI disagree: the agent's return is {agent_return:.4g} against the "
        f"baseline's {baseline_return:.4g} ({gap:+.1%}), yet its {verdict.kpi} is "
        f"{abs(improvement):.1%} {'worse' if improvement < 0 else 'better'} where "
        f"{verdict.margin:.0%} better is asked: the reward hardly tells the two apart, so "
        f"training has little to climb toward the verdict. Make the reward penalise what "
        f"{verdict.kpi} measures, or name the KPI the reward pursues as primary. See the "
        "README, 'When it does not learn'."
    ]


def _number(value: Any) -> float:
    """A KPI as the assessment wrote it; NaN where it was not measured (null in JSON)."""
    return float(value) if isinstance(value, int | float) else math.nan


def _measured(value: float, unit: str) -> str:
    return f"{value:.4g}{unit}" if math.isfinite(value) else "not measured"


def constant_policy(spread: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Name the actions the agent holds still whatever the state (``action_spread`` of an
    assessment: each controller's range of each action over every step, as a share of the
    action's range)."""
    agent, baseline = spread.get("agent", {}), spread.get("baseline", {})
    still = [
        name
        for name, share in agent.items()
        if share < CONSTANT_SPREAD and baseline.get(name, 1.0) >= CONSTANT_SPREAD
    ]
    if not still:
        return []
    verb = "changes" if len(still) == 1 else "change"
    return [
        f"Constant policy: the agent's {', '.join(still)} hardly {verb} "
        f"with the state (under {CONSTANT_SPREAD:.0%} of the range over every assessed step, "
        "where the baseline moves them): it has learned one output, not a controller. See the "
        "README, 'When it does not learn'."
    ]


def read_verdict(summary: Mapping[str, Any]) -> Verdict | None:
    """The verdict a run's ``summary.json`` holds (None: the run was not assessed)."""
    data = summary.get("verdict")
    return Verdict.from_json(data) if isinstance(data, Mapping) else None


def beaten_at(summary: Mapping[str, Any]) -> int | None:
    """Env steps at which a run first beat its baseline: its stop criterion's assessments,
    else its final verdict; None where it never did."""
    for verdict in summary.get("verdicts") or []:
        if verdict.get("beats"):
            return int(verdict["env_steps"])
    if (summary.get("verdict") or {}).get("beats"):
        return int(summary["env_steps_sampled"])
    return None


def training_seconds_to_verdict(summary: Mapping[str, Any]) -> float | None:
    """Seconds of training (this session's wall time, less the stop criterion's own
    assessments before it) until the first assessment that beat the baseline; None where
    none did."""
    assessing = 0.0
    for verdict in summary.get("verdicts") or []:
        if verdict.get("beats"):
            return float(verdict["wall_time_s"]) - assessing
        assessing += float(verdict.get("assess_s") or 0.0)
    return None


def median_or_never(steps: list[float | None]) -> float | None:
    """The median of runs' env steps (or seconds) to the verdict, a run that never got there
    counting as never: None where the middle run never did."""
    ordered = sorted(steps, key=lambda v: math.inf if v is None else v)
    if not ordered:
        return None
    middle = len(ordered) // 2
    if len(ordered) % 2 or ordered[middle] is None:
        return None if ordered[middle] is None else float(ordered[middle])
    low = ordered[middle - 1]
    return None if low is None else (float(low) + float(ordered[middle])) / 2


def refuse_losing(summary: Mapping[str, Any], what: str, where: str, flag: str) -> str | None:
    """Raise :class:`LosingPolicy` unless the run's policy beats its baseline; returns a note
    to print where it passes for want of a verdict or a baseline."""
    verdict = read_verdict(summary)
    if verdict is None:
        return f"note: {where} has no verdict (it was not assessed); {what} it unjudged"
    if verdict.beats is None:
        return f"note: {where}: {verdict.line().removeprefix('verdict: ')}"
    if not verdict.beats:
        raise LosingPolicy(
            f"{where}: the policy does not beat its baseline ({verdict.line()}); refusing to "
            f"{what} it. Train it further (invoke train --resume), or pass {flag} to {what} it "
            "anyway"
        )
    return None


VALUE_AT_CLIP = 0.5
"""A mean value loss above this share of the value clip: the critic is far off its targets."""
RETURN_TIE = 0.01
"""An agent whose return is within this share of the baseline's (or above it) while its primary
KPI misses: the reward does not tell the two controllers apart as the KPI does."""
LARGE_RETURN = 100.0
"""Episode returns beyond this, with reward normalisation off, are outside the recipe's scale."""


def diagnose(cfg: Any, verdict: Verdict, metrics: list[Mapping[str, Any]]) -> list[str]:
    """Why a run whose agent does not beat its baseline may not be learning, from its
    metrics lines (``metrics.jsonl``): a value loss at its clip or drowning the policy's, and
    returns far outside the scale the recipe expects. Empty where the agent wins."""
    if verdict.beats is not False or not metrics:
        return []
    recent = metrics[-5:]
    t = cfg.training

    def mean(key: str) -> float | None:
        values = [line[key] for line in recent if isinstance(line.get(key), int | float)]
        return sum(values) / len(values) if values else None

    notes = []
    ret = mean(Metric.RETURN)
    if not t.normalize_rewards and ret is not None and abs(ret) > LARGE_RETURN:
        notes.append(
            f"Reward scale: episode returns of {ret:.4g} with training.normalize_rewards off; "
            f"the recipe expects returns within +-{LARGE_RETURN:g} unless it normalises them: "
            "set training.normalize_rewards: true."
        )
    vf_loss, policy_loss = mean(Metric.VF_LOSS), mean(Metric.POLICY_LOSS)
    clip = float(t.extra.get("vf_clip_param", 10.0))
    if cfg.algorithm == "PPO" and vf_loss is not None and vf_loss >= VALUE_AT_CLIP * clip:
        notes.append(
            f"Value loss {vf_loss:.3g} is at its clip ({clip:g}): the value function is far "
            "from its targets, so advantages are noise. Keep training.normalize_rewards on and "
            "RLlib's default vf_clip_param."
        )
    if (
        t.share_layers
        and vf_loss is not None
        and policy_loss is not None
        and vf_loss > 100 * max(abs(policy_loss), 1e-3)
    ):
        notes.append(
            f"Value loss {vf_loss:.3g} dominates the policy loss {policy_loss:.3g} in one shared "
            "network (training.share_layers: true): set training.share_layers: false."
        )
    return notes
