"""Experiment configs: one YAML file, one typed model, validated before Ray starts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WrapValidator,
    field_validator,
    model_validator,
)

from sims.contract import SimError
from sims.lessons import format_validation_error, load_yaml, read_yaml

CONFIGS = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIGS / "cstr_ppo.yaml"


class ConfigError(ValueError):
    """A bad experiment config or command-line override; the message names file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class Training(_Strict):
    """The default recipe: what practitioners rely on so that PPO works across plants.

    Separate policy and value networks, rewards scaled by a running estimate of the
    discounted return's spread (Gymnasium's ``NormalizeReward``; every reported return,
    metric and KPI stays in the simulator's units), RLlib's own value clipping on those
    normalised targets, GAE lambda 0.95 and a policy head initialised near zero mean with
    unit spread, so a continuous action explores its whole range from the first batch.
    Nothing in it is tuned to one simulator (see the zoo benchmark in BENCHMARKS.md).
    """

    lr: float = Field(3e-4, gt=0)
    """Learning rate."""
    gamma: float = Field(0.99, gt=0, le=1)
    """Discount factor."""
    train_batch_size: int = Field(4000, ge=32)
    """Env steps per learner update (RLlib's ``train_batch_size_per_learner``)."""
    minibatch_size: int = Field(128, ge=1)
    """SGD minibatch size (PPO, APPO and IMPALA): small minibatches give many updates per
    batch, as Stable-Baselines3's and CleanRL's PPO do."""
    num_epochs: int = Field(10, ge=1)
    """Passes over each train batch (PPO)."""
    entropy_coeff: float = Field(0.0, ge=0)
    """Entropy bonus weight."""
    grad_clip: float | None = Field(0.5, gt=0)
    """Gradient norm clip; null for none."""
    gae_lambda: float = Field(0.95, ge=0, le=1)
    """GAE lambda (RLlib's ``lambda_``): 1 is the high-variance end, 0 trusts the critic."""
    hidden: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [64, 64], min_length=1
    )
    """Hidden layer sizes of the policy network and (as a separate one) the value network."""
    share_layers: bool = False
    """One network for policy and value function (RLlib's default). Off in the recipe: with
    it, a value loss of large returns drowns the policy's gradient."""
    activation: Literal["tanh", "relu", "silu"] = "tanh"
    """Activation of the hidden layers."""
    normalize_rewards: bool = True
    """Scale training rewards by the running spread of the discounted return, so value
    targets stay near 1 whatever the simulator's reward units; reported returns do not
    change."""
    warm_start_steps: int = Field(0, ge=0)
    """Start from the baseline: before the first batch, this many minibatch updates fit the
    policy to the baseline's actions on the lesson's scenarios (jobs.warm_start; 20
    episodes); 0: off. A new run only, never a resume."""
    extra: dict[str, Any] = Field(default_factory=dict)
    """Further ``AlgorithmConfig.training()`` arguments, by RLlib's names (checked)."""

    @model_validator(mode="after")
    def _minibatch_fits(self) -> Training:
        if self.minibatch_size > self.train_batch_size:
            raise ValueError(
                f"minibatch_size {self.minibatch_size} > train_batch_size "
                f"{self.train_batch_size}; lower minibatch_size"
            )
        return self


Auto = Literal["auto"]


def _auto_or(kind: str) -> WrapValidator:
    """One message for a value that is neither ``auto`` nor ``kind`` (not one per branch)."""

    def check(value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise ValueError(f"give auto or {kind}") from None

    return WrapValidator(check)


AutoCount = Annotated[Annotated[int, Field(ge=0)] | Auto, _auto_or("a whole number >= 0")]
AutoPositive = Annotated[Annotated[int, Field(ge=1)] | Auto, _auto_or("a whole number >= 1")]
AutoShare = Annotated[Annotated[float, Field(ge=0)] | Auto, _auto_or("a number >= 0")]


class EnvRunners(_Strict):
    num_env_runners: AutoCount = "auto"
    """Sampling processes (0 samples in the driver; APPO and IMPALA need >= 1). ``auto``: one
    per CPU that Ray has beyond the driver and the learners, on every node of the cluster;
    under two, sampling runs in the driver (jobs.layout)."""
    num_envs_per_env_runner: AutoPositive = "auto"
    """Vectorised environments in each env runner. ``auto``: the recipe's 8 envs spread over
    the env runners (8 with sampling in the driver or one runner, 4 each with two, ...)."""
    sample_ahead: Annotated[bool | Auto, _auto_or("true or false")] = "auto"
    """PPO: each env runner samples the next batch while the learner updates on this one
    (jobs.sample_ahead), so sampling and learning use different cores; each batch, one
    update old, is read against the policy the update starts from (decoupled PPO).
    ``auto``: on for PPO wherever an env runner has a CPU beside the driver's (and the
    remote learners'), unless num_env_runners is 0; ``true`` insists (needs
    num_env_runners >= 1); ``false``: PPO samples, then learns, in turns."""
    batched: bool = False
    """Step each env runner's envs with the spec's ``batch_simulator`` (one call for all,
    the same states step for step) instead of one scalar simulator each. Off by default:
    it pays where a step is array work (a NumPy model over many cells); for the CSTR's two
    states NumPy's cost per call outweighs it (BENCHMARKS.md, training_throughput)."""


class Learners(_Strict):
    num_learners: AutoCount = "auto"
    """Remote learner processes (RLlib's ``num_learners``; 0 updates in the driver).
    ``auto``: one per GPU where the cluster has more than one, else 0. The train batch stays
    ``training.train_batch_size`` in total: each learner takes its share."""
    num_gpus_per_learner: AutoShare = "auto"
    """GPUs each learner (or the driver's, with 0 learners) updates on. ``auto``: 1 where
    the cluster has a GPU per learner, 0 (CPU) where it has none."""


class Stop(_Strict):
    target_return: float | None = None
    """Stop once the mean episode return reaches this; null to ignore."""
    max_env_steps: int | None = Field(200_000, ge=1)
    """Stop after this many env steps sampled over the run's lifetime (resumes included)."""
    max_wall_s: float | None = Field(840.0, gt=0)
    """Stop after this much training wall time, counted from the original start."""
    beats_baseline: bool = False
    """Stop once the agent beats the baseline (``assessment.margin``), assessed on the
    assessment scenarios every ``assess_every_iterations``; the budgets above are caps."""
    assess_every_iterations: int = Field(10, ge=1)
    """How often ``beats_baseline`` assesses (each time saves a checkpoint)."""
    max_fault_s: float = Field(120.0, gt=0)
    """Stop the run as failed once its simulator has kept failing this long: at least half
    of an env runner's last 20 episodes ended in a fault (or 100 in a row, sooner)."""

    @model_validator(mode="after")
    def _something_stops(self) -> Stop:
        if self.target_return is None and self.max_env_steps is None and self.max_wall_s is None:
            raise ValueError("set at least one of target_return, max_env_steps, max_wall_s")
        return self


class Checkpoints(_Strict):
    every_iterations: int = Field(10, ge=1)
    """Save a checkpoint every this many iterations (and always at the end)."""
    keep: int = Field(3, ge=1)
    """How many of the newest checkpoints to keep."""


class Trajectories(_Strict):
    enabled: bool = True
    """Write one Parquet row per env step under ``trajectories/``."""
    every_k_episodes: int = Field(1, ge=1)
    """Log every k-th completed episode of each env runner (1 logs all)."""


class Assessment(_Strict):
    enabled: bool = True
    """Assess the final policy against the baseline when training ends."""
    scenarios: Path | None = None
    """Scenario set (YAML); null for the simulator's default set."""
    margin: float = Field(0.0, ge=0, lt=1)
    """How much better than the baseline the agent must be on the simulator's primary KPI
    to beat it, relative (0.05: 5% better); 0: at least as good."""


class ExperimentConfig(_Strict):
    experiment: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Experiment name: the folder under ``runs/`` and the MLflow experiment."""
    sim: str
    """Simulator: a module under sims/ (``cstr``), a Gymnasium id (``CartPole-v1``),
    ``module:EnvId`` or ``module:ClassName`` for your own, or a dotted module with a SPEC."""
    lessons: Path | None = None
    """Lessons YAML; null for the simulator's own."""
    lesson: int | str = 0
    """Lesson to train on, by position or name."""
    algorithm: Literal["PPO", "APPO", "IMPALA"] = "PPO"
    """RLlib algorithm (new API stack)."""
    training: Training = Field(default_factory=Training)
    env_runners: EnvRunners = Field(default_factory=EnvRunners)
    learners: Learners = Field(default_factory=Learners)
    stop: Stop = Field(default_factory=Stop)
    checkpoints: Checkpoints = Field(default_factory=Checkpoints)
    trajectories: Trajectories = Field(default_factory=Trajectories)
    assessment: Assessment = Field(default_factory=Assessment)
    sim_package: str | None = None
    """A process simulator's package: a folder or an archive (.tar.gz, .zip) holding its
    executable, ``{package}`` in its command; on Azure ML also ``azureml://...`` (a datastore
    path or data asset), which the job mounts. Null: the simulator's own default."""
    sim_package_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    """The archive's SHA-256, checked before it is extracted (null: not checked)."""
    seed: int = 0
    """Seed for RLlib, the environments and assessment."""
    min_time_s_per_iteration: float | None = Field(None, ge=0)
    """Shortest training iteration (RLlib's reporting knob); null for the algorithm's default."""

    @field_validator("sim")
    @classmethod
    def _sim_exists(cls, value: str) -> str:
        from sims.registry import resolve

        try:
            resolve(value)
        except SimError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _verdict_needs_assessment(self) -> ExperimentConfig:
        if self.stop.beats_baseline and not self.assessment.enabled:
            raise ValueError(
                "stop.beats_baseline assesses the agent: set assessment.enabled: true, or "
                "stop.beats_baseline: false"
            )
        return self

    @model_validator(mode="after")
    def _async_needs_runners(self) -> ExperimentConfig:
        if self.algorithm in ("APPO", "IMPALA") and self.env_runners.num_env_runners == 0:
            raise ValueError(f"{self.algorithm} needs env_runners.num_env_runners >= 1")
        return self

    def digest(self) -> str:
        """A short hash of the resolved config, for tags and to tell runs apart."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


SMOKE = {
    "training.train_batch_size": 200,
    "training.minibatch_size": 100,
    "training.num_epochs": 1,
    "env_runners.num_env_runners": 1,
    "env_runners.num_envs_per_env_runner": 2,
    "stop.max_env_steps": 400,
    "stop.max_wall_s": 300,
    "stop.target_return": None,
    "checkpoints.every_iterations": 1,
    "min_time_s_per_iteration": 0,
}
"""What ``--smoke`` overrides: a tiny budget through the same code path."""


def _set_path(data: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    """Set ``a.b.c`` in ``data``, refusing keys the config model does not have.

    Below a free-form mapping (``training.extra``) any key is accepted.
    """
    model: type[BaseModel] | None = ExperimentConfig
    node = data
    parts = dotted.split(".")
    for depth, key in enumerate(parts):
        if model is not None:
            if key not in model.model_fields:
                where = ".".join(parts[:depth]) or "the top level"
                raise ConfigError(
                    f"{source}: no key {key!r} under {where}; keys there: "
                    f"{', '.join(model.model_fields)}"
                )
            annotation = model.model_fields[key].annotation
            is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
            model = annotation if is_model else None
        if depth == len(parts) - 1:
            node[key] = value
            return
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: {'.'.join(parts[: depth + 1])} is not a mapping")
        node = child


def check_key(dotted: str, source: str) -> None:
    """Raise :class:`ConfigError` naming ``source`` if ``dotted`` is not a config key."""
    _set_path({}, dotted, None, source)


def parse_set(item: str) -> tuple[str, Any]:
    """``key.path=value`` with the value read as YAML (``1e-4``, ``[64, 64]``, ``null``)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set training.lr=1e-4")
    key, raw = item.split("=", 1)
    try:
        value = load_yaml(raw) if raw else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc})") from None
    return key.strip(), value


def load_config(
    path: Path | str = DEFAULT_CONFIG, sets: list[str] | None = None, smoke: bool = False
) -> ExperimentConfig:
    """Read, override and validate an experiment config; raise :class:`ConfigError`."""
    path = Path(path)
    try:
        data = read_yaml(path)
    except SimError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    overrides = [(key, value, f"--smoke ({key})") for key, value in SMOKE.items()] if smoke else []
    overrides += [(*parse_set(item), f"--set {item}") for item in sets or []]
    for key, value, source in overrides:
        _set_path(data, key, value, source)
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc)) from None
