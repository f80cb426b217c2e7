"""A simulator that keeps failing: the record an env runner leaves when it gives up, the
driver's watch for it, and where RLlib's tracebacks of simulator faults go.

An env runner gives up (:class:`jobs.callbacks.TrajectoryLogger`) and writes
``fault.json`` in the run directory; the driver's :class:`FaultWatch` sees it within half a
second and interrupts training there, instead of waiting out RLlib's sample time-out and its
replacing of env runners, so the run ends with its summary and one message.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import signal
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd

FAULT_RECORD = "fault.json"
"""In the run directory: why an env runner gave up, and the last fault."""
FAULT_LOGS = "logs"
"""In the run directory: RLlib's tracebacks of simulator faults, one file per process."""
# RLlib logs every simulator fault with its traceback on its own logger ("ray.rllib"), and an
# env runner that gave up on its actor manager's: these records go to the run's log instead.
RLLIB_LOGGERS = ("ray.rllib", "ray.rllib.utils.actor_manager")
FAULT_MESSAGES = (
    "Environment step failed",
    "Resetting the env resulted in an error",
    "SimulatorGaveUp",
    "killed by `ray.kill`",  # the driver's record of the env runners it ended (FaultWatch)
)


def fault_log(run: Path) -> Path:
    """Where this process writes RLlib's fault tracebacks."""
    return run / FAULT_LOGS / f"faults-{os.getpid()}.log"


def ray_log(run: Path) -> Path:
    """Where this process writes Ray's and RLlib's warnings."""
    return run / FAULT_LOGS / f"ray-{os.getpid()}.log"


class _ToFile(logging.Filter):
    """A filter that sends the records it takes off a handler to a file instead."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.handler = logging.FileHandler(path, delay=True)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))


class _FaultsToFile(_ToFile):
    """Takes RLlib's records of simulator faults off the console, into one file."""

    def filter(self, record: logging.LogRecord) -> bool:
        from sims.contract import SimulatorFault

        error = record.exc_info[1] if record.exc_info else None
        text = record.getMessage()
        if isinstance(error, SimulatorFault | SimulatorGaveUp | SimulatorStopped) or any(
            message in text for message in FAULT_MESSAGES
        ):
            self.handler.handle(record)
            return False
        return True


def send_fault_tracebacks_to(path: Path) -> None:
    """RLlib logs each simulator fault with its traceback (``logger.exception``), thousands
    of console lines for a simulator that keeps failing: into ``path`` instead."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in RLLIB_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _FaultsToFile) for f in logger.filters):
            logger.addFilter(_FaultsToFile(path))


class _BelowErrorToFile(_ToFile):
    """On Ray's console handler: warnings and notes (deprecations, token authentication, a
    missing gputil) go to the run's log; errors still reach the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        self.handler.handle(record)
        return False


def send_ray_notes_to(path: Path) -> None:
    """Ray's and RLlib's warnings in this process, off the console and into ``path``."""
    import ray.rllib  # noqa: F401 - RLlib sets up its own console handler when imported

    path.parent.mkdir(parents=True, exist_ok=True)
    for name in ("ray", "ray.rllib"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _BelowErrorToFile) for f in handler.filters):
                handler.addFilter(_BelowErrorToFile(path))


def read_record(run: Path) -> dict[str, Any] | None:
    """The record of an env runner that gave up, or None."""
    try:
        record = json.loads((run / FAULT_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def set_aside_record(run: Path, session: int) -> None:
    """A new session starts without the record of an earlier one (kept under logs/)."""
    record = run / FAULT_RECORD
    if record.is_file():
        (run / FAULT_LOGS).mkdir(exist_ok=True)
        os.replace(record, run / FAULT_LOGS / f"fault-before-session-{session:02d}.json")


class SimulatorGaveUp(RuntimeError):
    """Raised on an env runner when the simulator fails episode after episode."""


class SimulatorStopped(BaseException):
    """Raised in the driver's main thread once an env runner gave up on the simulator; a
    BaseException, as KeyboardInterrupt is, so that no ``except Exception`` on the way
    (RLlib's own) takes it for an error to retry."""


class FaultWatch:
    """Interrupts the driver's main thread, wherever it waits (Ray's ``wait`` included),
    once ``fault.json`` appears: a signal to that thread whose handler raises
    :class:`SimulatorStopped`."""

    SIGNAL = signal.SIGUSR1

    def __init__(self, run: Path, algo: Any = None, every_s: float = 0.5) -> None:
        self.run = run
        self.algo = algo
        self._every = every_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="aml-rl-faults", daemon=True)
        self._previous: Any = None

    def __enter__(self) -> FaultWatch:
        # a study's trial trains in a thread, which takes no signal: there the driver sees
        # the record when the iteration the ended env runners cut short returns
        self._signals = threading.current_thread() is threading.main_thread()
        if self._signals:
            self._previous = signal.signal(self.SIGNAL, self._stop)
        self._main = threading.get_ident()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()
        self._thread.join()
        if self._signals:
            signal.signal(self.SIGNAL, self._previous)

    def _stop(self, signum: int, frame: Any) -> None:
        raise SimulatorStopped(str(self.run / FAULT_RECORD))

    def _watch(self) -> None:
        while not self._done.wait(self._every):
            if (self.run / FAULT_RECORD).is_file():
                if self._signals:
                    signal.pthread_kill(self._main, self.SIGNAL)
                # Ray's wait() looks at signals only when it returns (RLlib waits up to its
                # sample time-out, 60 s, on env runners that keep being replaced): the env
                # runners go, for good, so that it returns now
                _end_env_runners(self.algo)
                return


def _end_env_runners(algo: Any) -> None:
    import ray

    group = getattr(algo, "env_runner_group", None)
    manager = getattr(group, "_worker_manager", None)
    for actor in (manager.actors() if manager is not None else {}).values():
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # gone already
            continue


def fault_kinds(errors: pd.Series, top: int = 3) -> str:
    """``"40 x nan_tank.step() returned nan for state 'Ca'; 2 x ..."``: the logged faults
    by kind (numbers and scenarios blanked out), most frequent first."""
    kinds = collections.Counter(
        re.sub(r" at step \d+ of scenario \{[^}]*\}|\{[^}]*\}|\b\d+(\.\d+)?\b", "", str(e)).strip()
        for e in errors
    )
    shown = [f"{count} x {kind[:160]}" for kind, count in kinds.most_common(top)]
    more = len(kinds) - top
    return "; ".join(shown) + (f"; {more} other kind(s)" if more > 0 else "")
