"""Simple Adder in C, run as its own process: the reference for a simulator in another
language (``sims/native/simple_adder.c``, protocol in :mod:`sims.process`).

The same task, reward, lessons, baseline and KPIs as :mod:`sims.simple_adder`; only the
simulator differs. Build the executable into a package folder and name it in the config:

    cc -O2 -o sims/native/build/simple_adder sims/native/simple_adder.c   # the default package
    sim_package: path/to/folder-or-archive                                  # or your own
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sims import simple_adder
from sims.process import ProcessSim

_HERE = Path(__file__).parent

SPEC = dataclasses.replace(
    simple_adder.SPEC,
    name="simple_adder_c",
    env_id="aml_rl/SimpleAdderC-v0",
    simulator=ProcessSim(
        name="simple_adder_c",
        command=("{package}/simple_adder",),
        parameters=simple_adder.SimpleAdder.PARAMETERS,
        package=str(_HERE / "native" / "build"),
    ),
    source=__file__,
)
