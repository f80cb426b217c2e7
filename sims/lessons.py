"""Lessons: scenario distributions in YAML, in curriculum order.

A lessons file looks like::

    lessons:
      - name: steady
        parameters:
          Cref_signal: {values: [5]}          # choice, uniform over the listed values
          noise_percentage: {min: 0, max: 0}  # uniform on [min, max]
      - name: transition
        parameters:
          Cref_signal: {values: [1, 2, 3, 4]}
          noise_percentage: {min: 0, max: 2}

Parameters a lesson does not name keep the simulator's defaults.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sims.contract import SimError


class Parameter(BaseModel):
    """One scenario parameter: ``{min, max}`` (uniform) or ``{values: [...]}`` (choice)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: float | None = None
    max: float | None = None
    values: list[float] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Parameter:
        ranged = self.min is not None or self.max is not None
        if ranged and self.values is not None:
            raise ValueError("give either {min, max} or {values: [...]}, not both")
        if self.values is not None:
            if not self.values:
                raise ValueError("'values' is empty; list at least one value")
            return self
        if self.min is None or self.max is None:
            raise ValueError("needs both 'min' and 'max' (uniform) or 'values' (choice)")
        if self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}; swap them")
        return self

    def sample(self, rng: np.random.Generator) -> float:
        if self.values is not None:
            return float(self.values[int(rng.integers(len(self.values)))])
        return float(rng.uniform(self.min, self.max))

    def extremes(self) -> list[float]:
        """The distinct values at the edges of the distribution."""
        if self.values is not None:
            return sorted(set(self.values))
        return sorted({self.min, self.max})


class Lesson(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Shown in logs and metrics.")
    parameters: dict[str, Parameter] = Field(default_factory=dict)

    def sample(self, rng: np.random.Generator) -> dict[str, float]:
        return {key: param.sample(rng) for key, param in self.parameters.items()}


class LessonPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    lessons: list[Lesson] = Field(min_length=1)

    def lesson(self, key: int | str) -> Lesson:
        """A lesson by position or by name."""
        if isinstance(key, int):
            if not 0 <= key < len(self.lessons):
                raise SimError(
                    f"lesson {key} does not exist; there are {len(self.lessons)} lesson(s), "
                    f"numbered 0-{len(self.lessons) - 1}"
                )
            return self.lessons[key]
        for lesson in self.lessons:
            if lesson.name == key:
                return lesson
        names = ", ".join(lesson.name for lesson in self.lessons)
        raise SimError(f"no lesson named {key!r}; the lessons are: {names}")


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def format_validation_error(source: str, err: ValidationError) -> str:
    """One message for a pydantic error: each line names the file, the key and the value."""
    lines = []
    for item in err.errors(include_url=False):
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling"
        lines.append(f"{source}: {_dotted(item['loc'])}: {msg} (got {item['input']!r})")
    return "\n".join(lines)


class _Loader(yaml.SafeLoader):
    """YAML 1.2's floats: ``1e-4`` is a number (PyYAML's YAML 1.1 reads it as a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text with :class:`_Loader` (safe, and exponent floats are numbers)."""
    return yaml.load(text, Loader=_Loader)


def read_yaml(path: Path) -> Any:
    """Parse a YAML file, with a message that names the file and the line on failure."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SimError(f"{path}: cannot be read ({exc.strerror}); check the path") from exc
    except UnicodeDecodeError as exc:
        raise SimError(
            f"{path}: not a text file (byte {exc.start} is not UTF-8); give the YAML file"
        ) from None
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise SimError(f"{path}: not valid YAML{where}: {problem}; fix the syntax") from exc


def load_lessons(path: Path, known: Mapping[str, float], sim: str = "") -> LessonPlan:
    """Load and validate a lessons file against the simulator's known parameters."""
    data = read_yaml(path)
    try:
        plan = LessonPlan.model_validate(data)
    except ValidationError as exc:
        raise SimError(format_validation_error(str(path), exc)) from None
    for i, lesson in enumerate(plan.lessons):
        for key, param in lesson.parameters.items():
            if key not in known:
                given = param.model_dump(exclude_none=True)
                owner = f" for simulator {sim}" if sim else ""
                raise SimError(
                    f"{path}: lessons[{i}].parameters.{key}: unknown scenario parameter "
                    f"{key!r}{owner} (given {given}); known parameters: "
                    f"{', '.join(known) or '(none)'}"
                )
    return plan
