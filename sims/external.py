"""Code and data outside ``sims/`` that simulators need, declared once in sims/external.yaml.

The same declaration decides what the training image and the Azure ML job's code carry
(:func:`files`) and what every process puts on ``sys.path`` (:func:`install`). Paths are
relative to the project root: the repository here, ``/app`` in the image, the job's code
folder on Azure ML; the layout below it is the same everywhere.
"""

from __future__ import annotations

import sys
from pathlib import Path, PurePosixPath
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sims.contract import SimError
from sims.lessons import format_validation_error, read_yaml

ROOT = Path(__file__).resolve().parents[1]
DECLARATION = PurePosixPath("sims", "external.yaml")


class External(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    include: list[str] = Field(default_factory=list)
    """Files and folders shipped with sims/ and jobs/ (relative to the project root)."""
    python_path: list[str] = Field(default_factory=list)
    """Folders put on sys.path in every process (relative to the project root)."""
    apt: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9+.-]+$")]] = Field(
        default_factory=list
    )
    """Debian packages the simulator needs at run time in the training image (an
    interpreter such as ``nodejs``, a shared library): `invoke build` installs them."""

    @field_validator("include", "python_path")
    @classmethod
    def _relative(cls, paths: list[str]) -> list[str]:
        for path in paths:
            parts = PurePosixPath(path).parts
            if not parts or PurePosixPath(path).is_absolute() or ".." in parts:
                raise ValueError(
                    f"{path!r} must be a path inside the project, relative to its root "
                    "(e.g. vendor/reactor_model), without '..'"
                )
        return paths


def load(root: Path = ROOT) -> External:
    """The declaration under ``root``; an empty one when the file does not exist."""
    path = root / DECLARATION
    if not path.is_file():
        return External()
    data = read_yaml(path) or {}
    try:
        return External.model_validate(data)
    except ValidationError as exc:
        raise SimError(format_validation_error(str(path), exc)) from None


def install(root: Path = ROOT) -> None:
    """Put the declared ``python_path`` folders on ``sys.path`` (once; existing ones only)."""
    for entry in load(root).python_path:
        folder = str((root / entry).resolve())
        if folder not in sys.path and Path(folder).is_dir():
            sys.path.insert(0, folder)


def files(root: Path = ROOT) -> list[Path]:
    """Every file the declaration ships, relative to ``root``; a missing path is an error."""
    declared = load(root)
    out: list[Path] = []
    for i, entry in enumerate(declared.include):
        path = root / entry
        if not path.exists():
            raise SimError(
                f"{root / DECLARATION}: include[{i}]: {entry!r} does not exist under {root}; "
                "fix the path (relative to the project root) or remove it"
            )
        found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        out += [
            p.relative_to(root)
            for p in found
            if "__pycache__" not in p.parts and p.suffix != ".pyc"
        ]
    for i, entry in enumerate(declared.python_path):
        if not any(_overlaps(entry, inc) for inc in declared.include):
            raise SimError(
                f"{root / DECLARATION}: python_path[{i}]: {entry!r} is not shipped; list it, or "
                "the folders under it that hold your code, under include"
            )
    return out


def _overlaps(a: str, b: str) -> bool:
    """Whether one of two relative paths lies inside the other (or they are the same)."""
    x, y = PurePosixPath(a).parts, PurePosixPath(b).parts
    return x[: len(y)] == y or y[: len(x)] == x
