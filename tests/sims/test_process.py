"""Process simulators: the C Simple Adder, built here with the system compiler, and user
simulators that misbehave the ways real ones do (print, crash, hang, never greet, answer
nonsense); each fault named with the stderr tail, and no process left behind."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from sims import simple_adder
from sims.check import check_sim
from sims.contract import SimError, SimulatorFault
from sims.package import materialise, sha256_of
from sims.process import PACKAGE_VARIABLE, ProcessSim
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc)")


def build_c_adder(folder: Path) -> Path:
    """The reference simulator, compiled as a user would: cc, no library but libm."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "simple_adder"
    subprocess.run(
        ["cc", "-O2", "-o", str(exe), str(ROOT / "sims" / "native" / "simple_adder.c"), "-lm"],
        check=True,
    )
    return exe


@pytest.fixture(scope="session")
def c_package(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pkg")
    build_c_adder(folder)
    return folder


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = (
        Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}").exists() else "X"
    )
    return state != "Z"


def processes_of(exe: Path) -> list[int]:
    found = subprocess.run(["pgrep", "-f", str(exe)], capture_output=True, text=True).stdout
    return [int(pid) for pid in found.split() if int(pid) != os.getpid()]


def test_the_c_simple_adder_passes_check_sim_and_leaves_no_process(c_package, monkeypatch):
    monkeypatch.setenv(PACKAGE_VARIABLE, str(c_package))
    report = check_sim("simple_adder_c", episodes=5)
    assert report.ok, [(f.check, f.detail) for f in report.failures()]
    assert processes_of(c_package / "simple_adder") == []


def test_the_c_simple_adder_matches_the_python_one_step_for_step(c_package, monkeypatch):
    monkeypatch.setenv(PACKAGE_VARIABLE, str(c_package))
    from sims.registry import resolve

    envs = [resolve(name).make_env() for name in ("simple_adder", "simple_adder_c")]
    rng = np.random.default_rng(0)
    for episode in range(5):
        first = [env.reset(seed=episode) for env in envs]
        assert first[0][0].tolist() == first[1][0].tolist()
        for _ in range(10):
            action = rng.uniform(-1, 1, size=1).astype(np.float32)
            a, b = (env.step(action) for env in envs)
            assert (a[0].tolist(), *a[1:4]) == (b[0].tolist(), *b[1:4])
            if a[2] or a[3]:
                break
    pid = envs[1].simulator.pid
    for env in envs:
        env.close()
    assert not alive(pid)


# A user's simulator in "another language": here a Python script run as an executable, so
# that the test can make it misbehave on purpose. MODE picks the misbehaviour.
USER_SIM = """\
#!{python}
import json, os, sys, time
mode = os.environ.get("MODE", "good")
inp, out = os.fdopen(3, "r"), os.fdopen(4, "w")
print("a banner on stdout", flush=True)            # must never reach the protocol
if mode == "silent":
    time.sleep(60)
out.write(json.dumps({{"protocol": 2 if mode == "future" else 1, "name": "user"}}) + "\\n")
out.flush()
value = 0.0
for line in inp:
    msg = json.loads(line)
    if msg["op"] == "close":
        break
    if msg["op"] == "reset":
        value = float(round(msg["config"]["initial_value"]))
    else:
        value += round(msg["action"]["addend"])
        print(f"step to {{value}}", flush=True)
        if mode == "crash" and value != 0:
            print("Traceback: the model diverged at value", value, file=sys.stderr, flush=True)
            sys.exit(3)
        if mode == "hang":
            time.sleep(60)
        if mode == "error":
            out.write(json.dumps({{"error": "solver failed to converge"}}) + "\\n"); out.flush()
            continue
        if mode == "garbage":
            out.write("ok\\n"); out.flush()
            continue
    out.write(json.dumps({{"states": {{"value": value}}, "terminated": False, "truncated": False}}) + "\\n")
    out.flush()
"""


@pytest.fixture
def user_sim(tmp_path, monkeypatch):
    exe = tmp_path / "user_pkg" / "usersim"
    exe.parent.mkdir()
    exe.write_text(USER_SIM.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("AML_RL_SIM_WORKDIR", str(tmp_path / "work"))

    def make(mode: str, **timeouts: float):
        monkeypatch.setenv("MODE", mode)
        factory = ProcessSim(
            name="usersim",
            command=("{package}/usersim",),
            parameters={"initial_value": 25.0},
            package=str(exe.parent),
            **timeouts,
        )
        spec = dataclasses.replace(simple_adder.SPEC, name="usersim", simulator=factory)
        from sims.adapter import SimEnv

        return SimEnv(spec)

    return make


def test_a_simulator_that_prints_on_stdout_still_speaks_the_protocol(user_sim):
    env = user_sim("good")
    env.reset(seed=0)
    for _ in range(5):
        env.step(np.array([0.3], dtype=np.float32))
    workdir = env.simulator.workdir
    assert "a banner on stdout" in (workdir / "stdout.log").read_text()
    assert "step to" in (workdir / "stdout.log").read_text()
    env.close()
    assert not workdir.exists(), "a process that ended well leaves no folder behind"


def test_a_failed_simulators_folder_is_kept_and_named(user_sim):
    env = user_sim("crash")
    with pytest.raises(SimulatorFault, match=r"in (/\S+)\) exited") as caught:
        env.reset(seed=0)
        env.step(np.array([0.5], dtype=np.float32))
    workdir = Path(re.search(r"in (/\S+)\) exited", str(caught.value)).group(1))
    env.close()
    assert "the model diverged" in (workdir / "stderr.log").read_text(), "kept for the post-mortem"


def test_a_chatty_simulators_logs_are_capped_between_episodes(user_sim, monkeypatch):
    import sims.process

    monkeypatch.setattr(sims.process, "LOG_CAP_BYTES", 500)
    env = user_sim("good")
    for episode in range(30):  # each step prints a line: ~45 bytes per episode
        env.reset(seed=episode)
        for _ in range(3):
            env.step(np.array([0.3], dtype=np.float32))
    workdir = env.simulator.workdir
    log, kept = workdir / "stdout.log", workdir / "stdout.log.1"
    assert kept.is_file() and kept.stat().st_size > 500
    assert log.stat().st_size <= 500 + 100, "emptied when over the cap, written on from there"
    env.reset(seed=99)
    env.step(np.array([0.3], dtype=np.float32))
    assert "step to" in log.read_text(), "the process carries on writing to the emptied file"
    env.close()


@pytest.mark.parametrize(
    ("mode", "timeouts", "message"),
    [
        ("crash", {}, r"exited \(code 3\) instead of sending the step; its stderr ends: "
         r"'Traceback: the model diverged at value"),
        ("hang", {"step_timeout_s": 1.0}, r"did not send the step within 1 s"),
        ("silent", {"startup_timeout_s": 1.0}, r"did not send its greeting within 1 s"),
        ("future", {}, r"greeted with .*'protocol': 2.*aml-rl-sim protocol version 1"),
        ("error", {}, r"answered step with an error: solver failed to converge"),
        ("garbage", {}, r"sent b'ok' instead of one JSON line for the step"),
    ],
)  # fmt: skip
def test_each_way_a_simulator_fails_is_one_fault_and_its_process_is_gone(
    user_sim, mode, timeouts, message
):
    env = user_sim(mode, **timeouts)
    with pytest.raises(SimulatorFault, match=message) as caught:
        env.reset(seed=0)
        env.step(np.array([0.5], dtype=np.float32))
    assert "usersim" in str(caught.value) and "pid" in str(caught.value)
    pid = int(str(caught.value).split("pid ")[1].split(",")[0])
    assert not alive(pid), f"{mode}: the simulator process {pid} is still there"
    # a fresh environment (what RLlib does after a fault) starts a fresh process
    if mode in ("crash", "hang", "error", "garbage"):
        fresh = user_sim("good")
        fresh.reset(seed=1)
        fresh.close()


def test_a_missing_executable_is_named_when_the_env_is_made(tmp_path, monkeypatch):
    monkeypatch.setenv(PACKAGE_VARIABLE, str(tmp_path))
    from sims.registry import resolve

    with pytest.raises(SimError, match=rf"no executable {tmp_path}/simple_adder .*set sim_package"):
        resolve("simple_adder_c").make_env()


def test_a_command_naming_the_package_is_checked_beyond_its_first_word(tmp_path, monkeypatch):
    """`node {package}/sim.js`: the interpreter is on PATH, the script must be in the
    package; and `{package}` with no package set is named, not replaced by nothing."""
    monkeypatch.delenv(PACKAGE_VARIABLE, raising=False)
    script = ProcessSim(name="nodesim", command=("node", "{package}/sim.js"))
    with pytest.raises(SimError, match=r"nodesim: its command node \{package\}/sim\.js names "
                       r"\{package\}, but no package is set; set sim_package"):  # fmt: skip
        script.argv()
    monkeypatch.setenv(PACKAGE_VARIABLE, str(tmp_path))
    with pytest.raises(SimError, match=rf"nodesim: {tmp_path}/sim\.js \(in its command node "
                       r"\{package\}/sim\.js\) is not in the package"):  # fmt: skip
        script.argv()
    (tmp_path / "sim.js").write_text("// the user's simulator\n")
    assert script.argv() == ["node", f"{tmp_path}/sim.js"]


def test_an_archive_is_checked_and_extracted_once(c_package, tmp_path, monkeypatch):
    monkeypatch.setenv("AML_RL_SIM_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "adder.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(c_package, arcname="adder-1.0")
    digest = sha256_of(archive)
    folder = materialise(archive, digest)
    assert folder.name == "adder-1.0" and os.access(folder / "simple_adder", os.X_OK)
    stamp = (folder / "simple_adder").stat().st_mtime_ns
    assert materialise(archive, digest) == folder  # the second caller reuses the extraction
    assert (folder / "simple_adder").stat().st_mtime_ns == stamp
    with pytest.raises(
        SimError, match=rf"SHA-256 is {digest}, but sim_package_sha256 says 0{{64}}"
    ):
        materialise(archive, "0" * 64)


def test_a_zip_keeps_the_executable_bit(c_package, tmp_path, monkeypatch):
    import zipfile

    monkeypatch.setenv("AML_RL_SIM_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "adder.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(c_package / "simple_adder", "simple_adder")
    folder = materialise(archive)
    assert os.access(folder / "simple_adder", os.X_OK)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("nowhere", r"sim_package nowhere: no such file or folder"),
        ("notes.txt", r"sim_package .*notes\.txt: not a folder or an archive"),
        ("azureml://datastores/sims/paths/adder/", r"mounted by the job that `invoke submit`"),
        (
            "cut.tar.gz",
            r"sim_package .*cut\.tar\.gz: cannot be extracted \(EOFError: .*\); the "
            r"archive is damaged or cut short: make it again",
        ),
    ],
)
def test_bad_packages_are_named(tmp_path, monkeypatch, source, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    whole = tmp_path / "whole.tar.gz"
    with tarfile.open(whole, "w:gz") as tf:  # a package too large for gzip to end early
        data = np.random.default_rng(0).bytes(200_000)
        info = tarfile.TarInfo("sim")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    (tmp_path / "cut.tar.gz").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(SimError, match=message):
        materialise(source)


def test_the_protocol_is_documented_where_users_look():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### 4. A simulator in another language") :]
    for term in ('{"protocol": 1', '"op": "reset"', '"op": "step"', '"op": "close"', "fd 3",
                 "fd 4", "AML_RL_SIM_INSTANCE", "stderr.log", "sims/native/simple_adder.c"):  # fmt: skip
        assert term in section, term
    source = textwrap.dedent((ROOT / "sims" / "native" / "simple_adder.c").read_text())
    assert '"{\\"protocol\\":1' in source


def test_a_pipelined_vector_steps_exactly_as_gymnasiums_own(c_package, monkeypatch):
    """All requests first, then all answers: the same observations, rewards and autoresets
    as SyncVectorEnv, step for step, across episode ends."""
    import gymnasium as gym

    from sims.process import PipelinedVectorEnv
    from sims.registry import RLlibEnv

    monkeypatch.setenv(PACKAGE_VARIABLE, str(c_package))
    config = {"sim": "simple_adder_c", "lessons": None, "lesson": 0}
    piped = RLlibEnv({**config, "num_envs": 3})  # what RLlib's vector entry point asks for
    assert isinstance(piped, PipelinedVectorEnv)
    plain = gym.vector.SyncVectorEnv([lambda: RLlibEnv(config)] * 3)
    rng = np.random.default_rng(1)
    a, b = piped.reset(seed=7), plain.reset(seed=7)
    assert np.array_equal(a[0], b[0])
    for _ in range(40):  # several episodes of 10 steps: autoreset included
        actions = rng.uniform(-1, 1, size=(3, 1)).astype(np.float32)
        a, b = piped.step(actions), plain.step(actions)
        for x, y in zip(a[:4], b[:4], strict=True):
            assert np.array_equal(x, y)
    pids = [env.unwrapped.simulator.pid for env in piped.envs]
    piped.close()
    plain.close()
    assert not any(alive(pid) for pid in pids)


def test_a_simulator_that_dies_in_a_pipelined_step_is_that_envs_fault(c_package, monkeypatch):
    from sims.registry import RLlibEnv

    monkeypatch.setenv(PACKAGE_VARIABLE, str(c_package))
    piped = RLlibEnv({"sim": "simple_adder_c", "lessons": None, "lesson": 0, "num_envs": 2})
    piped.reset(seed=0)
    victim = piped.envs[1].unwrapped.simulator.pid
    os.kill(victim, 9)
    with pytest.raises(SimulatorFault, match=rf"pid {victim}.*(is gone before step|exited)"):
        piped.step(np.zeros((2, 1), dtype=np.float32))
    assert piped.envs[1].unwrapped.fault is not None and piped.envs[0].unwrapped.fault is None
    piped.close()


def test_a_vector_of_hung_simulators_costs_one_grace_period_not_one_each(user_sim):
    """A simulator that hangs hangs in every env of the vector: the fault is the first one's
    step time-out; closing the vector (RLlib recreates it) asks every process to exit at
    once and waits for them together, then kills them."""
    from sims.process import CLOSE_GRACE_S, PipelinedVectorEnv

    vector = PipelinedVectorEnv([lambda: user_sim("hang", step_timeout_s=1.0)] * 4)
    vector.reset(seed=0)
    pids = [env.unwrapped.simulator.pid for env in vector.envs]
    with pytest.raises(SimulatorFault, match=r"did not send the step within 1 s"):
        vector.step(np.full((4, 1), 0.5, dtype=np.float32))
    started = time.monotonic()
    vector.close()
    took = time.monotonic() - started
    assert not any(alive(pid) for pid in pids)
    # one shared grace period: one each would be 3 x 5 s (a bound, not a timing claim)
    assert took < 2 * CLOSE_GRACE_S, f"closing took {took:.1f} s"


def test_an_env_left_open_at_exit_ends_its_process_quietly(c_package, tmp_path):
    """A script that never closes its env: the interpreter's shutdown ends the simulator,
    and prints nothing about it. (The 'Exception ignored in ProcessSimulator.__del__' a user
    saw at exit, module globals already None, does not reproduce in this plain script; the
    destructor no longer uses module globals at all.)"""
    script = (
        "from sims.registry import resolve\n"
        "env = resolve('simple_adder_c').make_env()\n"
        "env.reset(seed=0)\n"
        "print(env.unwrapped.simulator.pid, flush=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, PACKAGE_VARIABLE: str(c_package), "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Exception ignored" not in proc.stderr, proc.stderr
    pid = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid)


def test_an_archive_extracts_safely_on_a_python_without_tar_filters(tmp_path, monkeypatch):
    """Debian 12's Python 3.11.2 (the offline-built training image's) has no
    ``extractall(filter=)``: the check staged in that image failed on every .tar.gz."""
    import sims.package

    monkeypatch.delattr(tarfile, "data_filter")
    good, escaping = tmp_path / "good.tar.gz", tmp_path / "escaping.tar.gz"
    for archive, name in ((good, "bin/sim"), (escaping, "../outside")):
        with tarfile.open(archive, "w:gz") as tf:
            info = tarfile.TarInfo(name)
            info.size, info.mode = 10, 0o755
            tf.addfile(info, io.BytesIO(b"#!/bin/sh\n"))
    (tmp_path / "a").mkdir()
    sims.package._extract(good, tmp_path / "a")
    assert os.access(tmp_path / "a" / "bin" / "sim", os.X_OK)
    (tmp_path / "b").mkdir()
    with pytest.raises(SimError, match=r"escaping\.tar\.gz: \.\./outside leaves the archive"):
        sims.package._extract(escaping, tmp_path / "b")
    assert not (tmp_path / "outside").exists()
    # a device node, and a link out of the archive: refused, naming the member
    odd = [
        ("dev", tarfile.CHRTYPE, "dev/null0", "", "is not a file or a folder"),
        ("link", tarfile.SYMTYPE, "bin/escape", "../../etc/passwd", "leaves the archive"),
    ]
    for name, kind, member, target, said in odd:
        archive = tmp_path / f"{name}.tar.gz"
        with tarfile.open(archive, "w:gz") as tf:
            info = tarfile.TarInfo(member)
            info.type, info.linkname = kind, target
            tf.addfile(info)
        (tmp_path / name).mkdir()
        with pytest.raises(SimError, match=re.escape(f"{archive}: {member} {said}")):
            sims.package._extract(archive, tmp_path / name)
        assert not any((tmp_path / name).iterdir())  # refused before anything is written
