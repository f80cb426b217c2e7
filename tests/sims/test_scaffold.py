"""new-sim: a scaffold that works unmodified, and refusals that say why."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sims.contract import SimError
from sims.scaffold import new_sim
from tests.conftest import ROOT


def test_scaffold_writes_module_lessons_and_a_test_that_passes(tmp_path):
    shutil.copytree(ROOT / "sims", tmp_path / "sims", ignore=shutil.ignore_patterns("__pycache__"))
    written = new_sim("my_tank", tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in written] == [
        "sims/my_tank.py",
        "sims/lessons/my_tank.yaml",
        "sims/lessons/my_tank_scenarios.yaml",
        "tests/sims/test_my_tank.py",
        "jobs/configs/my_tank_ppo.yaml",
        "jobs/configs/my_tank_space.yaml",
    ]
    # the experiment is the default recipe, stopped on the verdict; the space is Tune's
    config = yaml.safe_load(written[4].read_text())
    assert config["sim"] == "my_tank" and config["training"] == {}
    assert config["stop"]["beats_baseline"] is True
    space = yaml.safe_load(written[5].read_text())
    assert set(space) == {
        "training.lr", "training.train_batch_size", "training.minibatch_size",
        "training.gae_lambda", "training.entropy_coeff",
    }  # fmt: skip
    module = written[0].read_text()
    assert 'env_id="aml_rl/MyTank-v0"' in module
    # <Name>Sim, so that `from my_tank_model import MyTank` in the user's edit cannot collide.
    assert "class MyTankSim(Simulator):" in module and "\nclass MyTank(" not in module
    assert "def kpis(" in module and "kpis=kpis" in module
    # Run the generated test as a user would, against the copied tree.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/sims/test_my_tank.py",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout


def test_scaffold_never_overwrites(tmp_path):
    new_sim("tank", tmp_path)
    module = tmp_path / "sims" / "tank.py"
    module.write_text("# my edits\n")
    with pytest.raises(SimError, match=r"sims/tank\.py, .*already exist\(s\); choose another name"):
        new_sim("tank", tmp_path)
    assert module.read_text() == "# my edits\n"


@pytest.mark.parametrize("name", ["My-Tank", "2tank", "class", "Tank"])
def test_unusable_names_are_refused_with_the_rule(tmp_path, name):
    with pytest.raises(
        SimError, match=f"simulator name '{name}' is not usable: .*lowercase letters"
    ):
        new_sim(name, tmp_path)
    assert not (tmp_path / "sims").exists()


def test_lint_leaves_the_declared_vendor_package_alone(model_project):
    """The README's model-package section: the vendor's files are theirs, not ours to lint
    or to reformat (`invoke lint --fix` rewrote them)."""
    shutil.copy(ROOT / "pyproject.toml", model_project / "pyproject.toml")
    (model_project / "sims" / "tank.py").unlink()  # the fixture's own sim: not under test here
    vendor = model_project / "vendor" / "reactor_model" / "units.py"
    vendor.write_text("import os,sys\ndef   k( x ):\n  return x*2\n")  # their style, not ours
    before = vendor.read_text()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for args in (["lint"], ["lint", "--fix"]):
        proc = subprocess.run(
            [sys.executable, "-m", "invoke", "--search-root", str(ROOT), *args],
            cwd=model_project, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert vendor.read_text() == before
