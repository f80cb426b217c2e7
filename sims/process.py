"""Simulators that run as their own process: any language, a vendor binary.

Protocol ``aml-rl-sim/1`` (documented in the README, "A simulator in another language"): the
environment starts the simulator's command once per environment instance, in a working
directory of its own, and speaks JSON lines over two pipes, **file descriptor 3** (requests,
to the simulator) and **file descriptor 4** (answers, from it), so that the simulator's own
prints to stdout and stderr never mix with the protocol (they go to ``stdout.log`` and
``stderr.log`` in its working directory). One line, one message:

- the simulator starts with ``{"protocol": 1, "name": "..."}``;
- ``{"op": "reset", "config": {...}, "seed": N}`` and ``{"op": "step", "action": {...}}``
  are each answered with ``{"states": {...}, "terminated": false, "truncated": false}``,
  or with ``{"error": "..."}``;
- ``{"op": "close"}``, or the end of fd 3, asks it to exit.

A simulator that does not greet within ``startup_timeout_s``, does not answer within
``step_timeout_s``, exits, or answers with an error becomes a :class:`SimulatorFault` with the
tail of its stderr; its process is killed, and RLlib replaces the environment. Each process
is killed with its parent (Linux's parent-death signal), so none outlives a run, even one
whose driver is killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import itertools
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import iterate

from sims.contract import SimError, Simulator, SimulatorFault, States
from sims.vector import WholeInfoVectorEnv

PROTOCOL = 1
PACKAGE_VARIABLE = "AML_RL_SIM_PACKAGE"
"""Where the simulator package is (a folder): ``{package}`` in a command stands for it."""
WORKDIR_VARIABLE = "AML_RL_SIM_WORKDIR"
"""Where instance working directories go (default: the system's temporary folder)."""
CLOSE_GRACE_S = 5.0  # how long a process asked to exit has before it is killed
LOG_CAP_BYTES = 10_000_000  # stdout.log and stderr.log each, rotated once between episodes
STDERR_TAIL = 2000  # characters of the simulator's stderr carried by a fault
_instances = itertools.count()
# Linux's prctl, looked up once here: nothing may be imported between fork and exec
_PRCTL = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
_PR_SET_PDEATHSIG = 1


def _in_child(to_sim: int, from_sim: int) -> None:
    """After fork, before exec: die with the parent; the protocol pipes at fds 3 and 4; and
    ignore a terminal's Ctrl-C, which reaches the whole foreground group: the driver ends the
    iteration under way (jobs.train.StopSignal) on simulators that are still there, then
    closes them. (Ray's own processes block SIGINT, and their children inherit it.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # an ignored signal stays so across exec
    if _PRCTL is not None:  # elsewhere (macOS) closing fd 3 is the only way to say goodbye
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)
    high_in = fcntl.fcntl(to_sim, fcntl.F_DUPFD, 10)
    high_out = fcntl.fcntl(from_sim, fcntl.F_DUPFD, 10)
    os.dup2(high_in, 3)  # inheritable: kept across exec
    os.dup2(high_out, 4)


@dataclass(frozen=True)
class ProcessSim:
    """A picklable factory for a :class:`ProcessSimulator`: ``SimSpec(simulator=ProcessSim(...))``.

    ``command`` is the argv; ``{package}`` in it stands for the simulator package folder
    (``AML_RL_SIM_PACKAGE``, set from the config's ``sim_package``, else ``package``)."""

    name: str
    command: Sequence[str]
    parameters: Mapping[str, float] = field(default_factory=dict)
    package: str = ""
    """The package folder when neither the config nor the environment names one."""
    startup_timeout_s: float = 30.0
    step_timeout_s: float = 10.0
    spin_s: float = 200e-6
    """How long to poll for an answer before sleeping on it: waking from a sleep costs about
    60 µs on a VM, more than a fast simulator's whole step; a slow one costs this much CPU."""

    def __call__(self) -> ProcessSimulator:
        return ProcessSimulator(self)

    @property
    def PARAMETERS(self) -> dict[str, float]:
        return dict(self.parameters)

    def argv(self) -> list[str]:
        package = os.environ.get(PACKAGE_VARIABLE) or self.package
        if not package and any("{package}" in part for part in self.command):
            raise SimError(
                f"simulator {self.name}: its command {' '.join(self.command)} names "
                "{package}, but no package is set; set sim_package in the experiment config "
                "(a folder or an archive), or package= in the spec's ProcessSim as its default"
            )
        argv = [part.replace("{package}", package) for part in self.command]
        executable = Path(argv[0])
        if "/" in argv[0] and not (executable.is_file() and os.access(executable, os.X_OK)):
            raise SimError(
                f"simulator {self.name}: no executable {argv[0]} (the package {package}); set "
                "sim_package in the experiment config to the folder or archive that holds it, "
                "or build it"
            )
        # an interpreter's script (node {package}/sim.js): the file must be in the package
        for part, given in zip(argv[1:], self.command[1:], strict=True):
            if given.startswith("{package}") and not Path(part).exists():
                raise SimError(
                    f"simulator {self.name}: {part} (in its command {' '.join(self.command)}) "
                    f"is not in the package {package}; set sim_package to the folder or archive "
                    "that holds it"
                )
        return argv


class ProcessSimulator(Simulator):
    """One simulator process, started at the first reset and kept across episodes."""

    def __init__(self, factory: ProcessSim) -> None:
        super().__init__()
        self.factory = factory
        self.PARAMETERS = dict(factory.parameters)
        self.argv = factory.argv()  # a missing executable is named when the env is made
        self.process: subprocess.Popen | None = None
        self.workdir: Path | None = None
        self._to_sim = self._from_sim = -1
        self._buffer = b""
        self._poll: select.poll | None = None
        self._sent: bool | None = None  # a step request sent ahead (send_step), and whether it went
        self._closing: subprocess.Popen | None = None  # asked to exit, not yet waited for

    # -- the contract ----------------------------------------------------------------------
    def reset(self, config: Mapping[str, float]) -> States:
        self._sent = None
        if self.process is None:
            self._start()
        else:
            self._rotate_logs()
        seed = int(self.np_random.integers(2**31))
        return self._exchange({"op": "reset", "config": dict(config), "seed": seed}, "reset")

    def step(self, action: Mapping[str, float]) -> States:
        if self.process is None:
            raise SimulatorFault(f"simulator {self.factory.name}: step() before reset()")
        if self._sent is not None:  # send_step() sent it already: read the answer
            sent, self._sent = self._sent, None
            if not sent:
                self._fail("is gone before step")
            return self._answer("step")
        return self._exchange({"op": "step", "action": dict(action)}, "step")

    def send_step(self, action: Mapping[str, float]) -> None:
        """Send a step request now and read its answer in :meth:`step`: a vector of process
        simulators (:class:`PipelinedVectorEnv`) sends all its requests, then reads all
        answers, so the simulators step at the same time. A failure to send is raised by
        :meth:`step`, where the environment reports faults."""
        if self.process is None:
            return
        line = json.dumps({"op": "step", "action": dict(action)}, separators=(",", ":"))
        try:
            os.write(self._to_sim, (line + "\n").encode())
            self._sent = True
        except OSError:
            self._sent = False

    def close(self, deadline: float | None = None) -> None:
        """Ask the process to exit; kill it if it has not within 5 s (or by ``deadline``, a
        ``time.monotonic()`` value: a vector asks all its processes first, then waits for
        them together, so that hung ones cost one grace period, not one each)."""
        self.ask_to_close()
        process, self._closing = self._closing, None
        if process is None:
            return
        remaining = CLOSE_GRACE_S if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            process.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        # a process that ended well leaves nothing behind; a failed one keeps its folder,
        # which its fault names (_fail)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def ask_to_close(self) -> None:
        """Send the close request and let go of the pipes; :meth:`close` then waits."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._to_sim, b'{"op":"close"}\n')
        self._close_pipes()
        self._closing = process

    def __getstate__(self) -> dict[str, Any]:
        """A copy (Ray ships environments pickled) starts a process of its own."""
        state = dict(self.__dict__)
        state.update(
            process=None,
            workdir=None,
            _to_sim=-1,
            _from_sim=-1,
            _buffer=b"",
            _poll=None,
            _sent=None,
            _closing=None,
        )
        return state

    def __del__(self) -> None:
        # no module globals here: at interpreter exit they may already be None
        for process in (self.__dict__.get("process"), self.__dict__.get("_closing")):
            if process is not None:
                try:
                    process.kill()
                    process.wait(timeout=5)
                except Exception:
                    pass

    # -- the process -----------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _start(self) -> None:
        instance = f"{os.getpid()}-{next(_instances)}"
        base = Path(os.environ.get(WORKDIR_VARIABLE) or tempfile.gettempdir()) / "aml-rl-sims"
        self.workdir = base / f"{self.factory.name}-{instance}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        to_sim_r, self._to_sim = os.pipe()
        self._from_sim, from_sim_w = os.pipe()
        env = {
            **os.environ,
            "AML_RL_SIM_PROTOCOL": str(PROTOCOL),
            "AML_RL_SIM_INSTANCE": instance,
            "AML_RL_SIM_IN": "3",
            "AML_RL_SIM_OUT": "4",
        }
        try:
            with (
                open(self.workdir / "stdout.log", "ab") as out,
                open(self.workdir / "stderr.log", "ab") as err,
            ):
                self.process = subprocess.Popen(
                    self.argv,
                    cwd=self.workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    close_fds=False,  # fds 3 and 4 must stay; Python's own fds do not leak
                    preexec_fn=lambda: _in_child(to_sim_r, from_sim_w),
                )
        except OSError as exc:
            self._close_pipes()
            raise SimulatorFault(
                f"simulator {self.factory.name}: cannot start {self.argv[0]}: {exc.strerror}"
            ) from None
        finally:
            os.close(to_sim_r)
            os.close(from_sim_w)
        self._poll = select.poll()  # polled first, then waited on (_read)
        self._poll.register(self._from_sim, select.POLLIN)
        hello = self._read(self.factory.startup_timeout_s, "its greeting")
        if hello.get("protocol") != PROTOCOL:
            self._fail(
                f'greeted with {hello!r}; expected {{"protocol": {PROTOCOL}, ...}} '
                "(aml-rl-sim protocol version 1)"
            )

    def _exchange(self, message: dict[str, Any], what: str) -> States:
        line = json.dumps(message, separators=(",", ":")) + "\n"
        try:
            os.write(self._to_sim, line.encode())
        except OSError:
            self._fail(f"is gone before {what}")
        return self._answer(what)

    def _answer(self, what: str) -> States:
        answer = self._read(self.factory.step_timeout_s, f"the {what}")
        if "error" in answer:
            self._fail(f"answered {what} with an error: {answer['error']}")
        states = answer.get("states")
        if not isinstance(states, dict):
            self._fail(f'answered {what} with {answer!r}; expected {{"states": {{...}}, ...}}')
        self.terminated = bool(answer.get("terminated", False))
        self.truncated = bool(answer.get("truncated", False))
        return states

    def _read(self, timeout_s: float, what: str) -> dict[str, Any]:
        start = time.monotonic()
        deadline, spin_until = start + timeout_s, start + self.factory.spin_s
        while b"\n" not in self._buffer:
            now = time.monotonic()
            wait_ms = 0 if now < spin_until else max(0, int((deadline - now) * 1000) + 1)
            if not self._poll.poll(wait_ms):  # nothing yet: poll a little, then sleep on it
                if now >= spin_until and time.monotonic() >= deadline:
                    self._fail(f"did not send {what} within {timeout_s:g} s")
                continue
            chunk = os.read(self._from_sim, 65536)
            if not chunk:
                code = self.process.wait(timeout=5) if self.process else None
                self._fail(f"exited (code {code}) instead of sending {what}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError:
            self._fail(f"sent {line[:200]!r} instead of one JSON line for {what}")
        if not isinstance(message, dict):
            self._fail(f"sent {message!r} instead of a JSON object for {what}")
        return message

    def _fail(self, what: str) -> None:
        """Kill the process and raise the fault, with the tail of its stderr."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._close_pipes()
        tail = ""
        if self.workdir is not None and (self.workdir / "stderr.log").is_file():
            text = (self.workdir / "stderr.log").read_text(errors="replace")[-STDERR_TAIL:]
            tail = f"; its stderr ends: {text.strip()!r}" if text.strip() else "; stderr empty"
        raise SimulatorFault(
            f"simulator process {self.factory.name} ({' '.join(self.argv)}, pid "
            f"{process.pid if process else '?'}, in {self.workdir}) {what}{tail}"
        )

    def _rotate_logs(self) -> None:
        """Keep ``stdout.log`` and ``stderr.log`` under :data:`LOG_CAP_BYTES`: between
        episodes, one over it is copied to ``NAME.1`` and emptied (the process writes in
        append mode, so it carries on at the start of the emptied file)."""
        if self.workdir is None:
            return
        for name in ("stdout.log", "stderr.log"):
            path = self.workdir / name
            with contextlib.suppress(OSError):
                if path.stat().st_size > LOG_CAP_BYTES:
                    shutil.copyfile(path, path.with_name(f"{name}.1"))
                    os.truncate(path, 0)

    def _close_pipes(self) -> None:
        for fd in (self._to_sim, self._from_sim):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._to_sim = self._from_sim = -1
        self._buffer = b""


class PipelinedVectorEnv(WholeInfoVectorEnv):
    """Gymnasium's synchronous vector, except that the step requests of all sub-environments
    whose simulators run as processes are sent before any answer is read: one round trip
    per vector step instead of one per sub-environment. Everything else (autoreset, faults)
    is ``SyncVectorEnv``'s own, so results are identical; infos are handed on whole
    (:mod:`sims.vector`). Where no sub-env's simulator is a process, it steps as
    ``SyncVectorEnv`` does."""

    def __init__(self, env_fns: Any, **kwargs: Any) -> None:
        super().__init__(env_fns, **kwargs)
        self._pipelined = any(
            isinstance(getattr(env.unwrapped, "simulator", None), ProcessSimulator)
            for env in self.envs
        )

    def close_extras(self, **kwargs: Any) -> None:
        """Every process is asked to exit first, then all are waited for together."""
        processes = [getattr(env.unwrapped, "simulator", None) for env in self.envs]
        processes = [sim for sim in processes if isinstance(sim, ProcessSimulator)]
        for sim in processes:
            sim.ask_to_close()
        deadline = time.monotonic() + CLOSE_GRACE_S
        for sim in processes:
            sim.close(deadline=deadline)
        super().close_extras(**kwargs)

    def step(self, actions: Any) -> Any:
        if self._pipelined:
            for _, action, env in stepping(self, actions):
                send = getattr(env.unwrapped, "send_step", None)
                if send is not None:
                    send(action)
        return super().step(actions)


def stepping(vector: gym.vector.SyncVectorEnv, actions: Any) -> Iterator[tuple[int, Any, gym.Env]]:
    """The sub-envs that this ``step(actions)`` of ``vector`` steps (index, action, env):
    under Gymnasium's next-step autoreset, one whose episode ended resets instead."""
    actions_each = iterate(vector.action_space, actions)
    for i, (action, env) in enumerate(zip(actions_each, vector.envs, strict=True)):
        if vector.autoreset_mode == AutoresetMode.NEXT_STEP and vector._autoreset_envs[i]:
            continue
        yield i, action, env
