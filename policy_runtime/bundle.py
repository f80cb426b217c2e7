"""Load a policy bundle and act with it: exactly the training path's scaling and clipping.

A bundle is a folder with ``policy.onnx`` (the deterministic policy: observation in, action
out, as the policy sees them) and ``policy.json`` (what the observation and the action
components are called, their units and ranges, how they are scaled, and provenance). The
runtime refuses a bundle whose graph does not match its metadata.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

SCHEMA = 2
"""2: ``policy_sha256`` covers the graph and the observation and action specs together."""
GRAPH = "policy.onnx"
METADATA = "policy.json"
REQUIRED = ("schema", "sim", "observations", "actions", "graph_sha256", "policy_sha256")
SPEC_KEYS = ("name", "scaling")  # in every observation and action spec


def policy_digest(graph: bytes, metadata: Mapping[str, Any]) -> str:
    """SHA-256 of what decides an action: the graph, and the order, names, ranges and
    scaling of the observations and actions (two swapped observations change it)."""
    specs = json.dumps(
        {"observations": metadata["observations"], "actions": metadata["actions"]},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(graph + specs.encode()).hexdigest()


class BundleError(ValueError):
    """A bundle that cannot be used, or states it cannot act on; the message names which."""


class Policy:
    """A loaded bundle. ``act(states)`` for one set of states, ``act_batch([...])`` for many."""

    def __init__(self, folder: Path | str) -> None:
        folder = Path(folder)
        meta_path, graph_path = folder / METADATA, folder / GRAPH
        for path in (meta_path, graph_path):
            if not path.is_file():
                raise BundleError(f"{folder}: no {path.name}; export one with `invoke export RUN`")
        self.metadata = _read_metadata(meta_path)
        graph = graph_path.read_bytes()
        digest = hashlib.sha256(graph).hexdigest()
        if digest != self.metadata["graph_sha256"]:
            raise BundleError(
                f"{graph_path} does not match {meta_path} (sha256 {digest[:12]} != "
                f"{self.metadata['graph_sha256'][:12]}); the two must come from one export"
            )
        if policy_digest(graph, self.metadata) != self.metadata["policy_sha256"]:
            raise BundleError(
                f"{meta_path}: its observations or actions were changed after the export "
                "(policy_sha256 does not match); the graph reads them in the order and scaling "
                "it was exported with: export the bundle again"
            )
        try:
            self.session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own kinds for a file it cannot load
            raise BundleError(
                f"{graph_path}: onnxruntime cannot load it ({type(exc).__name__}); export the "
                "bundle again"
            ) from None
        self.observations: list[dict[str, Any]] = self.metadata["observations"]
        self.actions: list[dict[str, Any]] = self.metadata["actions"]
        width = self.session.get_inputs()[0].shape[1]
        if width != len(self.observations):
            raise BundleError(
                f"{graph_path} takes {width} observation values but {meta_path} names "
                f"{len(self.observations)}; export the bundle again"
            )
        self.names = [o["name"] for o in self.observations]

    def act(self, states: Mapping[str, Any]) -> dict[str, float]:
        """The action, in physical units, for one set of named states (physical units)."""
        return self.act_batch([states])[0]

    def act_batch(self, batch: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
        obs = np.stack([self._observation(states, i) for i, states in enumerate(batch)])
        out = self.session.run(None, {"obs": obs})[0]
        return [self._action(row) for row in out]

    def _observation(self, states: Mapping[str, Any], index: int) -> np.ndarray:
        where = "states" if index == 0 else f"states[{index}]"
        if not isinstance(states, Mapping):
            raise BundleError(f"{where}: expected a mapping of state names to numbers")
        missing = [n for n in self.names if n not in states]
        extra = [n for n in states if n not in self.names]
        if missing or extra:
            problems = [f"missing {', '.join(missing)}"] if missing else []
            problems += [f"unknown {', '.join(map(str, extra))}"] if extra else []
            raise BundleError(
                f"{where}: {'; '.join(problems)}; the policy takes {', '.join(self.names)}"
            )
        values = []
        for spec in self.observations:
            value = states[spec["name"]]
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise BundleError(
                    f"{where}[{spec['name']!r}] is {value!r} ({type(value).__name__}); give a "
                    f"number in {spec.get('unit') or 'the simulator units'}"
                )
            if not math.isfinite(float(value)):
                raise BundleError(f"{where}[{spec['name']!r}] is {value}; give a finite number")
            values.append(_scale_in(float(value), spec))
        return np.asarray(values, dtype=np.float32)

    def _action(self, row: np.ndarray) -> dict[str, float]:
        return {
            spec["name"]: _scale_out(float(v), spec)
            for spec, v in zip(self.actions, row, strict=True)
        }


def _read_metadata(path: Path) -> dict[str, Any]:
    """``policy.json``, whole and with every key the runtime reads, or one message."""
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(
            f"{path}: not JSON ({type(exc).__name__}: {exc}); the file is cut short or edited: "
            "export the bundle again"
        ) from None
    if not isinstance(metadata, dict):
        raise BundleError(f"{path}: not a bundle's metadata (a JSON object); export it again")
    if metadata.get("schema") != SCHEMA:
        raise BundleError(
            f"{path}: schema {metadata.get('schema')!r}, this runtime reads {SCHEMA}; export "
            "the bundle again with this version"
        )
    missing = [key for key in REQUIRED if key not in metadata]
    for kind in ("observations", "actions"):
        specs = metadata.get(kind)
        if kind in metadata and (
            not isinstance(specs, list)
            or not all(isinstance(x, dict) and all(k in x for k in SPEC_KEYS) for x in specs)
        ):
            missing.append(f"{kind}[].{'/'.join(SPEC_KEYS)}")
    if missing:
        raise BundleError(
            f"{path}: lacks {', '.join(missing)}; the file is cut short or edited: export the "
            "bundle again"
        )
    return metadata


def _scale_in(value: float, spec: Mapping[str, Any]) -> float:
    """As sims.contract.Range.normalise: to [-1, 1], clipped; sims.spaces.symlog for an
    unbounded one; or the value as it is."""
    if spec["scaling"] == "range":
        scaled = 2.0 * (value - spec["low"]) / (spec["high"] - spec["low"]) - 1.0
        return min(1.0, max(-1.0, scaled))
    if spec["scaling"] == "symlog":
        return math.copysign(math.log1p(abs(value)), value)
    return value


def _scale_out(value: float, spec: Mapping[str, Any]) -> float:
    """As sims.contract.Range.denormalise (clipped to [-1, 1] first); a discrete choice plus
    its start; or the value clipped to the space's finite bounds."""
    if spec["scaling"] == "range":
        scaled = min(1.0, max(-1.0, value))
        return spec["low"] + (scaled + 1.0) * 0.5 * (spec["high"] - spec["low"])
    if spec["scaling"] == "discrete":
        return float(round(value) + spec["low"])
    low, high = spec.get("low"), spec.get("high")
    if low is not None:
        value = max(low, value)
    if high is not None:
        value = min(high, value)
    return value


def load(folder: Path | str) -> Policy:
    """Load the bundle in ``folder``; :class:`BundleError` says what is wrong with it."""
    return Policy(folder)
