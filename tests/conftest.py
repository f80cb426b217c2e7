"""Shared fixtures; the `docker`, `browser` and `azurite` marker policy: skip without what
they need, but fail under CI=true."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import sims

ROOT = Path(__file__).resolve().parents[1]


def train_smoke(runs: Path, *args: str, cwd: Path = ROOT) -> tuple[Path, str]:
    """`python -m jobs.train --smoke` in its own process, run from ``cwd`` as a user would
    (no PYTHONPATH); the run directory it made and what it printed."""
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-m", "jobs.train", "--smoke", "--runs-dir", str(runs), *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "see it: invoke view " in done.stdout  # training ends with the command to see it
    (summary,) = runs.rglob("summary.json")
    return summary.parent, done.stdout


def script_json(script: str, *args: str) -> tuple[dict, str]:
    """``script`` run by this Python in a process of its own (a Ray of its own), from the
    repository, with ``args`` as its ``sys.argv[1:]``: the JSON object its last line printed,
    and its stderr."""
    import json

    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception:  # any failure to reach the engine means "no engine" here
        return False
    return True


CHROMIUM = Path("/usr/bin/chromium")
AZURITE_HOME = Path.home() / ".cache" / "aml-rl" / "azurite"
"""Where `.ci/run` installs Azurite (`npm install --prefix`), kept between runs."""
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="  # Azurite's development account key, the same for every install (its README publishes it)


def azurite_binary() -> str | None:
    """``azurite-blob``: $AZURITE_BLOB, on PATH, or where `.ci/run` installs it."""
    found = os.environ.get("AZURITE_BLOB") or shutil.which("azurite-blob")
    installed = AZURITE_HOME / "node_modules" / ".bin" / "azurite-blob"
    return found or (str(installed) if installed.is_file() else None)


@dataclass
class Azurite:
    """A real Azure Storage blob service (Azurite) on loopback, its development account."""

    url: str
    """``http://127.0.0.1:PORT/devstoreaccount1``: the account's blob endpoint."""
    account: str = "devstoreaccount1"

    def service(self):  # -> azure.storage.blob.BlobServiceClient
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient(self.url, credential={"account_name": self.account,
                                                        "account_key": AZURITE_KEY})  # fmt: skip

    def sas(self, permissions: str) -> str:
        """An account SAS granting ``permissions`` (``racwdl``: read, add, create, write,
        delete, list) on every container and blob."""
        from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

        return generate_account_sas(
            self.account, AZURITE_KEY,
            ResourceTypes(service=True, container=True, object=True),
            AccountSasPermissions.from_string(permissions),
            expiry=datetime.now(UTC) + timedelta(hours=2),
        )  # fmt: skip


@pytest.fixture(scope="session")
def azurite(tmp_path_factory) -> Azurite:
    """Azurite started for the session (a node process bound to 127.0.0.1), stopped after."""
    binary = azurite_binary()
    assert binary, "tests that take this fixture are marked azurite"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder = tmp_path_factory.mktemp("azurite")
    process = subprocess.Popen(
        [binary, "--silent", "--location", str(folder), "--blobHost", "127.0.0.1",
         "--blobPort", str(port), "--skipApiVersionCheck"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"Azurite did not start on port {port}: {process.stderr.read()[-2000:]}")
        time.sleep(0.2)
    yield Azurite(f"http://127.0.0.1:{port}/devstoreaccount1")
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def _missing(marker: str) -> str | None:
    """Why the tests marked ``marker`` cannot run here, or None when they can."""
    if marker == "browser" and not CHROMIUM.exists():
        return f"no {CHROMIUM}; install Debian's chromium (`apt-get install chromium`)"
    if marker == "azurite" and azurite_binary() is None:
        return (
            "Azurite is not installed; `npm install --prefix ~/.cache/aml-rl/azurite azurite@3` "
            "(.ci/run does) to run tests marked azurite"
        )
    if marker == "docker" and not _docker_answers():
        return (
            "no Docker engine answers at DOCKER_HOST or /var/run/docker.sock; start one "
            "(`dockerd &` as root, see README) to run tests marked docker"
        )
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in ("browser", "azurite", "docker"):
        message = item.get_closest_marker(marker) and _missing(marker)
        if not message:
            continue
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true requires tests marked {marker} to run: {message}")
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


# A user's own project, written the way they would write it: Plato's Simple Adder as a
# Gymnasium env with Dict spaces (an integer action, RLlib's env_config constructor, its own
# registered id), and an env with nested Dict/Tuple observations and discrete actions.
PLATO_ADDER = '''
"""Plato's Simple Adder, as its users write it."""
import gymnasium as gym
import numpy as np
from gymnasium.spaces import Box, Dict


class SimpleAdder(gym.Env):
    """Add integers in [-10, 10] to a number until it reaches 50."""

    def __init__(self, env_config):
        self.observation_space = Dict({"value": Box(low=-float("inf"), high=float("inf"))})
        self.action_space = Dict({"addend": Box(low=-10, high=10, dtype=np.int32)})

    def _get_obs(self):
        return {"value": np.array([self.state], dtype=np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = float(self.np_random.integers(0, 100))
        self.steps = 0
        return self._get_obs(), {}

    def step(self, action):
        self.state += float(np.asarray(action["addend"]).item())
        self.steps += 1
        reward = -abs(self.state - 50) / 100.0
        return self._get_obs(), reward, self.state == 50, self.steps >= 10, {}


gym.register(id="PlatoAdder-v0", entry_point="plato_adder:SimpleAdder",
             kwargs={"env_config": {}})
'''

VALVE_ZOO = '''
"""A plant with valves: nested Dict/Tuple observations and discrete actions."""
import gymnasium as gym
import numpy as np
from gymnasium.spaces import Box, Dict, Discrete, MultiBinary, Tuple


class ValvePlant(gym.Env):
    def __init__(self):
        self.observation_space = Dict({
            "level": Box(0.0, 10.0, (1,), dtype=np.float32),
            "valves": MultiBinary(2),
            "pump": Tuple((Discrete(3), Box(0.0, 1.0, (1,), dtype=np.float32))),
        })
        self.action_space = Dict({"pump": Discrete(3, start=-1), "valves": MultiBinary(2)})

    def _obs(self):
        return {"level": np.array([self.level], dtype=np.float32), "valves": self.valves,
                "pump": (self.pump + 1, np.array([0.5], dtype=np.float32))}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.level = float(self.np_random.uniform(2, 8))
        self.valves, self.pump, self.steps = np.zeros(2, dtype=np.int8), 0, 0
        return self._obs(), {}

    def step(self, action):
        self.pump = int(action["pump"])
        self.valves = np.asarray(action["valves"], dtype=np.int8)
        self.level = float(np.clip(self.level + self.pump - 0.3 * self.valves.sum(), 0, 10))
        self.steps += 1
        return self._obs(), -abs(self.level - 5.0), False, self.steps >= 20, {}
'''


ROOM_SIM = '''
"""A Simulator and its SimSpec in the user's own module, outside sims/."""
from pathlib import Path

from sims.contract import Range, SimSpec, Simulator


class RoomSim(Simulator):
    PARAMETERS = {"outside": 5.0}

    def reset(self, config):
        self.outside, self.temp, self.steps = config["outside"], 15.0, 0
        self.terminated = self.truncated = False
        return {"temp": self.temp}

    def step(self, action):
        self.temp += 0.1 * (self.outside - self.temp) + action["power"]
        self.steps += 1
        self.truncated = self.steps >= 30
        return {"temp": self.temp}


def reward(states, action):
    return -abs(states["temp"] - 20.0)


SPEC = SimSpec(
    name="room", env_id="user/Room-v0", simulator=RoomSim,
    observations={"temp": Range(-10.0, 40.0, "degC")}, actions={"power": Range(0.0, 3.0, "kW")},
    reward=reward, lessons=Path(__file__).with_name("room_lessons.yaml"), source=__file__,
)
'''


def sim_config(sim: str) -> str:
    """The experiment YAML a user writes to train ``sim`` with every default."""
    experiment = "".join(c if c.isalnum() else "_" for c in sim)
    return f"experiment: {experiment}\nsim: {sim}\n"


@pytest.fixture(scope="session")
def smoke_of(tmp_path_factory) -> Callable[..., tuple[Path, str]]:
    """:func:`train_smoke` once per session for each set of arguments (``config``: the YAML
    of a config file of its own, passed first as ``--config``; ``cwd``: where it runs): the
    run directory and what it printed. Read it as it is; a test that changes a run works on
    its own copy (:func:`copy_run`)."""
    done: dict[tuple, tuple[Path, str]] = {}

    def smoke(*args: str, config: str | None = None, cwd: Path = ROOT) -> tuple[Path, str]:
        key = (config, args, cwd)
        if key not in done:
            runs = tmp_path_factory.mktemp("smoke")
            if config is not None:
                (runs / "experiment.yaml").write_text(config)
                args = ("--config", str(runs / "experiment.yaml"), *args)
            done[key] = train_smoke(runs, *args, cwd=cwd)
        return done[key]

    return smoke


@pytest.fixture(scope="session")
def default_smoke(smoke_of) -> tuple[Path, str]:
    """`python -m jobs.train --smoke` of the default config (see :func:`smoke_of`)."""
    return smoke_of()


def copy_run(run: Path, runs: Path) -> Path:
    """``run`` copied into ``runs`` as training lays a run out (``<experiment>/<run id>``)."""
    copied = runs / run.parent.name / run.name
    shutil.copytree(run, copied)
    return copied


@pytest.fixture(scope="session")
def cstr_run(tmp_path_factory) -> Path:
    """A CSTR run long enough to log more than 10,000 steps (shared: the bundle's tests and
    deployment's use it)."""
    return train_smoke(tmp_path_factory.mktemp("runs"), "--set", "stop.max_env_steps=12000")[0]


@pytest.fixture(scope="session")
def cstr_bundle(cstr_run) -> Path:
    """The bundle of a 12,000-step run: a policy that does not beat PI, exported on purpose
    (these tests are about the bundle's mechanics, not its quality)."""
    from client.export import export_bundle

    return export_bundle(cstr_run, allow_losing=True)


@pytest.fixture(scope="session")
def user_project(tmp_path_factory) -> Path:
    """A folder outside the repository holding the user's modules (on sys.path while used)."""
    folder = tmp_path_factory.mktemp("user_project")
    (folder / "plato_adder.py").write_text(PLATO_ADDER)
    (folder / "valve_zoo.py").write_text(VALVE_ZOO)
    (folder / "room_sim.py").write_text(ROOM_SIM)
    (folder / "room_lessons.yaml").write_text(
        "lessons:\n  - name: any\n    parameters:\n      outside: {min: -5, max: 15}\n"
    )
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))


# A team's model package kept outside sims/ (vendor/reactor_model, with a data table read at
# run time) and the simulator in sims/ that wraps it, as the README's third way describes.
REACTOR_MODEL = '''
"""The team's tank model (kept outside sims/); its outflow curve is a data file."""
import csv
from pathlib import Path

_TABLE = Path(__file__).with_name("outflow.csv")


def outflow_curve():
    with _TABLE.open() as fh:
        return [(float(r["level"]), float(r["outflow"])) for r in csv.DictReader(fh)]


def outflow(level, curve):
    for (l0, q0), (l1, q1) in zip(curve, curve[1:]):
        if level <= l1:
            return q0 + (q1 - q0) * (level - l0) / (l1 - l0)
    return curve[-1][1]
'''

TANK_SIM = '''
"""A tank simulator wrapping the team's reactor_model package."""
from pathlib import Path

import reactor_model

from sims.contract import Range, SimSpec, Simulator


class TankSim(Simulator):
    PARAMETERS = {"inflow": 1.0}

    def reset(self, config):
        self.curve = reactor_model.outflow_curve()
        self.inflow, self.level = config["inflow"], float(self.np_random.uniform(0, 2))
        self.steps, self.terminated, self.truncated = 0, False, False
        return {"level": self.level}

    def step(self, action):
        q = reactor_model.outflow(self.level, self.curve)
        self.level = max(0.0, self.level + 0.1 * (self.inflow * action["valve"] - q))
        self.steps += 1
        self.truncated = self.steps >= 20
        return {"level": self.level}


def reward(states, action):
    return -abs(states["level"] - 1.0)


SPEC = SimSpec(
    name="tank", env_id="team/Tank-v0", simulator=TankSim,
    observations={"level": Range(0.0, 4.0, "m")}, actions={"valve": Range(0.0, 2.0)},
    reward=reward, lessons=Path(__file__).parent / "lessons" / "tank.yaml", source=__file__,
)
'''

DECLARED = "include: [vendor/reactor_model]\npython_path: [vendor]\n"


@pytest.fixture
def model_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project (sims/, jobs/) plus vendor/reactor_model and sims/tank.py, with
    sims/external.yaml declaring the vendor package; importable in this process as well."""
    import shutil

    project = tmp_path / "project"
    for package in ("sims", "jobs"):
        shutil.copytree(
            ROOT / package, project / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    vendor = project / "vendor" / "reactor_model"
    vendor.mkdir(parents=True)
    (vendor / "__init__.py").write_text(REACTOR_MODEL)
    (vendor / "outflow.csv").write_text("level,outflow\n0,0\n1,0.8\n4,2.0\n")
    (project / "sims" / "tank.py").write_text(TANK_SIM)
    (project / "sims" / "lessons" / "tank.yaml").write_text(
        "lessons:\n  - name: any\n    parameters:\n      inflow: {min: 0.5, max: 1.5}\n"
    )
    (project / "sims" / "external.yaml").write_text(DECLARED)
    monkeypatch.setattr(sims, "__path__", [*sims.__path__, str(project / "sims")])
    monkeypatch.syspath_prepend(str(project / "vendor"))
    yield project
    for name in ("sims.tank", "reactor_model"):
        sys.modules.pop(name, None)
