"""The front door's flags: long names only, ``-h`` is help for every task, and every flag
that takes a value says which kind."""

from __future__ import annotations

import subprocess
import sys

import pytest
from invoke import Collection
from invoke.parser import ParserContext

import tasks
from tests.conftest import ROOT

COLLECTION = Collection.from_module(tasks)


@pytest.mark.parametrize("name", sorted(COLLECTION.task_names))
def test_every_flag_is_long_and_names_the_kind_of_value_it_takes(name):
    task = COLLECTION[name]
    arguments = task.get_arguments()
    context = ParserContext(name=name, args=arguments)
    for argument in arguments:
        assert len(argument.names) == 1, f"invoke {name}: a guessed short flag {argument.names}"
        (own,) = argument.names
        flag = ("-" if len(own) == 1 else "--") + own.replace("_", "-")
        spec, _ = context.help_for(flag)
        if argument.kind is not bool:
            assert ("=" if len(own) > 1 else " ") in spec, (
                f"invoke {name} --help shows {spec!r} like an on/off switch"
            )


@pytest.mark.parametrize("name", ["submit", "tune", "train"])
def test_dash_h_is_help_and_runs_nothing(name, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "invoke", name, "-h"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Usage: inv[oke] [--core-opts] {name} [--options]")
    assert "--=STRING" not in done.stdout
