"""What a job carries: the code folder staged per submission, checked against the image it
will run in, and a study's search space beside it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from client.workspace import SubmitError
from jobs.config import ConfigError, ExperimentConfig, load_config
from sims import external
from sims.contract import SimError

ROOT = Path(__file__).resolve().parents[1]
STAGING = ROOT / ".aml"  # staged code per submission (git-ignored)
SPACE_FILE = "space.yaml"  # a study's search space, staged beside experiment.yaml


CODE = ("sims", "jobs")  # what runs on the cluster; sims/external.yaml adds the model's own


def stage_code(
    cfg: ExperimentConfig, run_id: str, root: Path = STAGING, project: Path = ROOT
) -> Path:
    """The job's code: sims/, jobs/, what sims/external.yaml declares, and the resolved config;
    nothing else of the repository. Checked by importing the simulator in a fresh process."""
    code = root / run_id / "code"
    if code.exists():
        shutil.rmtree(code)
    try:
        extra = external.files(project)
    except SimError as exc:
        raise SubmitError(str(exc)) from None
    for package in CODE:
        shutil.copytree(
            project / package,
            code / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    for relative in extra:
        (code / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project / relative, code / relative)
    if cfg.sim_package:  # checked from the staged folder; the job passes its own input path
        from sims.package import package_source

        cfg = cfg.model_copy(update={"sim_package": package_source(cfg.sim_package)})
    (code / "experiment.yaml").write_text(cfg.to_yaml())
    try:
        check_staged_simulator(code, cfg)
    except SubmitError:
        shutil.rmtree(code.parent)
        raise
    return code


def stage_space(
    space: Path, code: Path, samples: int, confirm_seeds: list[int] | None = None
) -> None:
    """Check a study's search space (and confirming seeds) against the staged config, as
    the job will read both, and stage it."""
    from jobs.tune.space import load_space
    from jobs.tune.study import DEFAULT_METRIC, new_study

    staged = code / "experiment.yaml"
    try:
        params = load_space(space, staged)
        cfg = load_config(staged)
        new_study(params, samples, "asha", DEFAULT_METRIC, "return", 0, cfg, confirm_seeds)
    except ConfigError as exc:
        raise SubmitError(str(exc).replace(str(staged), "the config")) from None
    shutil.copy2(space, code / SPACE_FILE)


# Runs in the staged folder, as the job will: load its config, resolve the simulator, make
# one environment and reset it, as an env runner does (so a missing data file shows too).
_STAGED_CHECK = """
from jobs.config import load_config
from sims.package import is_remote, use_package
from sims.registry import resolve
cfg = load_config("experiment.yaml")
if cfg.sim_package and is_remote(cfg.sim_package):
    resolve(cfg.sim)  # its package is on Azure: the job mounts it; the spec must load here
else:
    if cfg.sim_package:
        use_package(cfg.sim_package, cfg.sim_package_sha256)
    env = resolve(cfg.sim).make_env(lessons=cfg.lessons, lesson=cfg.lesson)
    env.reset(seed=cfg.seed)
    env.action_space.seed(cfg.seed)
    env.step(env.action_space.sample())
    env.close()
"""


def check_in_image(code: Path, cfg: ExperimentConfig, image: str, client: Any = None) -> str:
    """The staged check again, inside the training image the job will run (its Python, its
    packages, its runtimes), with the staged folder mounted read-only and a local
    ``sim_package`` where the config names it. Returns what was checked, or why it could
    not be (never a silent pass); :class:`SubmitError` when the simulator fails there."""
    from images.build import ImageError, docker_client
    from sims.package import is_remote

    if client is None:
        try:
            client = docker_client(timeout=300)
        except ImageError as exc:
            return f"not checked in the training image: {exc}"
    flavour = image.rsplit(":", 1)[-1]
    local = next((tag for tag in (image, f"aml-rl:{flavour}") if _has_image(client, tag)), None)
    if local is None:
        return (
            f"not checked in the training image: {image} is not on this machine (build it with "
            "`invoke build`, and the simulator is checked in it before every submission)"
        )
    volumes = {str(code.resolve()): {"bind": "/job", "mode": "ro"}}
    if cfg.sim_package and not is_remote(cfg.sim_package):
        package = Path(cfg.sim_package).resolve()
        volumes[str(package)] = {"bind": str(package), "mode": "ro"}
    container = client.containers.run(
        local,
        ["python", "-c", _STAGED_CHECK],
        volumes=volumes,
        working_dir="/job",
        environment={"PYTHONPATH": ""},  # the staged code, not the image's own copy
        user=f"{os.getuid()}:{os.getgid()}",  # staged files are the submitter's own
        network_disabled=True,
        detach=True,
    )
    try:
        status = container.wait(timeout=300)["StatusCode"]
        output = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    if status != 0:
        lines = [line for line in output.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {status}"
        raise SubmitError(
            f"in the training image {local}, the job's code cannot run simulator {cfg.sim!r}: "
            f"{reason}. The image lacks what the simulator needs (an interpreter, a Python "
            "package, a binary built for it): add it to the image (README: 'A runtime for "
            "your simulator') and `invoke build` again"
        )
    return f"checked in the training image {local}: the simulator loads, resets and steps"


def _has_image(client: Any, tag: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(tag)
    except ImageNotFound:
        return False
    return True


def check_staged_simulator(code: Path, cfg: ExperimentConfig) -> None:
    """Import the configured simulator from ``code`` alone, in a fresh Python process."""
    from sims.process import PACKAGE_VARIABLE

    # only what is staged, and the config's own package
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", PACKAGE_VARIABLE)}
    done = subprocess.run(
        [sys.executable, "-c", _STAGED_CHECK],
        cwd=code,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {done.returncode}"
        raise SubmitError(
            f"the job's code ({code}) cannot load simulator {cfg.sim!r}: {reason}. The job "
            "carries only sims/, jobs/ and what sims/external.yaml declares: list the code and "
            "data the simulator needs there (README: 'A model package outside sims/')"
        )
