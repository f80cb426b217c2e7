"""`invoke export RUN|CHECKPOINT`: a Ray-free policy bundle (ONNX graph + metadata).

The graph is the RLlib module's inference forward followed by the deterministic action the
assessment takes (the Gaussian's mean, or the most likely discrete choice). The metadata
says how named states in physical units become the observation and how the graph's output
becomes the action (``policy_runtime`` applies exactly the training path's scaling and
clipping), and carries the simulator, config digest, git revision and assessment KPIs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from images.build import git_revision
from jobs.assess import MODULE_PATH, resolve_checkpoint
from jobs.rundir import RunDir, read_checkpoint_meta, write_json
from jobs.snapshot import SNAPSHOT_FILE, SimSnapshot, read_snapshot
from jobs.verdict import refuse_losing
from policy_runtime.bundle import GRAPH, METADATA, SCHEMA, policy_digest


class ExportError(ValueError):
    """A checkpoint that cannot be exported; the message says why."""


def export_bundle(
    path: Path,
    out: Path | None = None,
    *,
    allow_losing: bool = False,
    action: str = "export",
    echo: Callable[[str], None] = print,
    reuse: bool = False,
) -> Path:
    """Export the checkpoint (or a run's newest) at ``path`` to ``out`` (default
    ``<checkpoint>/../../bundle``); written whole, then renamed. Returns the bundle folder.
    A policy whose run's verdict says it does not beat its baseline is refused
    (:class:`LosingPolicy`, saying it refuses to ``action`` it: deploy exports on its way) unless
    ``allow_losing``; the verdict travels in the metadata. An existing bundle there is
    replaced, and ``echo`` says so; with ``reuse`` (deploy), one exported from this same
    checkpoint is used as it is."""
    import torch
    from ray.rllib.core.rl_module.rl_module import RLModule

    checkpoint = resolve_checkpoint(Path(path))
    meta = read_checkpoint_meta(checkpoint)
    run = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None
    summary = _summary_of(run, checkpoint)
    if not allow_losing:
        note = refuse_losing(summary, action, str(checkpoint), "--allow-losing")
        if note:
            echo(note)
    target = Path(out) if out else (run or checkpoint.parent) / "bundle"
    earlier = _exported_from(target)
    if reuse and earlier is not None and Path(earlier).parts[-3:] == checkpoint.parts[-3:]:
        echo(f"{action}: {target} was exported from {checkpoint.name}; using it as it is")
        return target
    sim = _snapshot(run, meta["sim"])  # the run's record: the simulator need not import
    module = RLModule.from_checkpoint((checkpoint / MODULE_PATH).resolve())
    if not isinstance(module, torch.nn.Module):
        raise ExportError(f"{checkpoint}: the policy is not a torch module; only torch exports")
    if module.is_stateful():
        raise ExportError(
            f"{checkpoint}: the policy is recurrent (it keeps state between steps); the bundle "
            "exports stateless policies only"
        )
    module.eval()
    observations = _observations(sim, checkpoint)
    actions, discrete = _actions(sim, checkpoint)
    graph = _Deterministic(module, len(actions), discrete)

    tmp = Path(tempfile.mkdtemp(prefix=".bundle-", dir=target.parent))
    try:
        example = torch.zeros(1, len(observations))
        torch.onnx.export(
            graph,
            (example,),
            str(tmp / GRAPH),
            input_names=["obs"],
            output_names=["action"],
            dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}},
            dynamo=False,
        )
        metadata = {
            "schema": SCHEMA,
            "sim": meta["sim"],
            "observations": observations,
            "actions": actions,
            "graph_sha256": hashlib.sha256((tmp / GRAPH).read_bytes()).hexdigest(),
            "checkpoint": str(checkpoint),
            "config_digest": meta.get("config_digest"),
            "git_revision": git_revision(),
            "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "kpis": summary.get("assessment"),
            "verdict": summary.get("verdict"),
            "action_space": sim.action_space,
        }
        metadata["policy_sha256"] = policy_digest((tmp / GRAPH).read_bytes(), metadata)
        write_json(tmp / METADATA, metadata)
        # a bundle is for others to read (a serving image's user, a colleague); the temporary
        # folder and the atomic write create owner-only files
        tmp.chmod(0o755)
        for file in tmp.iterdir():
            file.chmod(0o644)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
        if earlier is not None:
            echo(f"{action}: replaced the bundle {target} (exported from {earlier})")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


class _Deterministic:
    """The module's inference forward, then the deterministic action (made a torch module
    lazily, so that importing this file does not import torch)."""

    def __new__(cls, module: Any, n_actions: int, discrete: bool) -> Any:
        import torch

        class Deterministic(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.module = module

            def forward(self, obs: torch.Tensor) -> torch.Tensor:
                logits = self.module.forward_inference({"obs": obs})["action_dist_inputs"]
                if discrete:  # the most likely choice, as Categorical.to_deterministic()
                    return torch.argmax(logits, dim=1, keepdim=True).to(torch.float32)
                return logits[:, :n_actions]  # the Gaussian's mean, as to_deterministic()

        return Deterministic()


def _signals(ranges: Mapping[str, Any], scaling: str) -> list[dict[str, Any]]:
    """Name, unit and bounds of each observation or action component, and its scaling."""
    return [
        {
            "name": name,
            "unit": getattr(rng, "unit", ""),
            "low": rng.low if rng is not None else None,
            "high": rng.high if rng is not None else None,
            "scaling": scaling,
        }
        for name, rng in ranges.items()
    ]


def _snapshot(run: Path | None, sim: str) -> SimSnapshot:
    """The run's ``sim.json`` (or, for a run from before it or a checkpoint outside a run,
    the simulator itself)."""
    if run is not None and (run / "config.yaml").is_file():
        return read_snapshot(RunDir(run))
    from sims.registry import resolve

    return SimSnapshot.from_handle(resolve(sim))


def _observations(sim: SimSnapshot, checkpoint: Path) -> list[dict[str, Any]]:
    if sim.kind == "unknown":
        raise ExportError(
            f"{checkpoint}: the run has no {SNAPSHOT_FILE} ({sim.missing}); export it where "
            f"{sim.name} imports, or from a run trained since runs record their simulator"
        )
    if sim.kind == "simulator":  # named states, scaled by their ranges
        return _signals(sim.observations, "range")
    if sim.flattens_observation:
        raise ExportError(
            f"{checkpoint}: {sim.name}'s observation space {sim.observation_space} is "
            "flattened for the policy; "
            "bundles take Box observations (or a SimSpec's states)"
        )
    return [
        {**signal, "scaling": "range" if rng is not None else "symlog"}
        for signal, rng in zip(
            _signals(sim.observations, "none"), sim.observations.values(), strict=True
        )
    ]


def _actions(sim: SimSnapshot, checkpoint: Path) -> tuple[list[dict], bool]:
    if sim.action_kind == "simulator":
        return _signals(sim.actions, "range"), False
    if sim.action_kind == "discrete":
        (name,) = sim.actions
        return [
            {
                "name": name,
                "unit": "",
                "low": sim.discrete_start,
                "high": None,
                "scaling": "discrete",
            }
        ], True
    if sim.action_kind == "box":
        return _signals(sim.actions, "clip"), False
    raise ExportError(
        f"{checkpoint}: the policy's action space {sim.action_space} is not exported yet; "
        "bundles take a SimSpec's actions, a flat Box or a Discrete"
    )


def _exported_from(bundle: Path) -> str | None:
    """The checkpoint a bundle folder was exported from; None where there is no whole one."""
    from policy_runtime.bundle import BundleError, load

    if not (bundle / METADATA).is_file():
        return None
    try:
        return str(load(bundle).metadata.get("checkpoint"))
    except BundleError:
        return "a bundle that no longer loads"


def _summary_of(run: Path | None, checkpoint: Path) -> dict[str, Any]:
    """The run's summary, when it assessed this checkpoint (else nothing is known of it)."""
    if run is None or not (run / "summary.json").is_file():
        return {}
    summary = json.loads((run / "summary.json").read_text())
    if summary.get("checkpoint") != str(checkpoint.relative_to(run)):
        return {}
    return summary
