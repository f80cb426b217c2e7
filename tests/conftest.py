"""Shared fixtures; the `docker` marker policy: skip without an engine, but fail under CI=true."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import sims

ROOT = Path(__file__).resolve().parents[1]


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception:  # any failure to reach the engine means "no engine" here
        return False
    return True


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("docker") and not _docker_answers():
        message = (
            "no Docker engine answers at DOCKER_HOST or /var/run/docker.sock; start one "
            "(`dockerd &` as root, see README) to run tests marked docker"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true requires tests marked docker to run: {message}")
        pytest.skip(message)


@pytest.fixture
def user_sims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder whose modules import as ``sims.<name>``, as a user's own simulators would."""
    folder = tmp_path / "sims"
    (folder / "lessons").mkdir(parents=True)
    monkeypatch.setattr(sims, "__path__", [*sims.__path__, str(folder)])
    yield folder
    for name in [
        m for m in sys.modules if m.startswith("sims.") and m.split(".")[1] in _modules(folder)
    ]:
        del sys.modules[name]


def _modules(folder: Path) -> set[str]:
    return {path.stem for path in folder.glob("*.py")}


@pytest.fixture
def variant_sim(user_sims: Path):
    """Scaffold a user simulator, then edit its source: ``variant_sim(name, {old: new})``."""
    from sims.scaffold import new_sim

    def make(name: str, edits: dict[str, str] | None = None) -> str:
        new_sim(name, user_sims.parent)
        module = user_sims / f"{name}.py"
        text = module.read_text()
        for old, new in (edits or {}).items():
            assert old in text, f"the template no longer contains {old!r}; update this test"
            text = text.replace(old, new)
        module.write_text(text)
        return name

    return make
