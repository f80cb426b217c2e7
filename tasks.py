"""The front door: `invoke --list` shows every task; each calls a function in sims/ or jobs/."""

from __future__ import annotations

import shlex
from pathlib import Path

from invoke import Context, Exit, task

ROOT = Path(__file__).resolve().parent


@task(
    help={
        "sim": "simulator: a module under sims/ (cstr, simple_adder, ...) or a Gymnasium id",
        "lessons": "a lessons YAML to check instead of the simulator's own",
        "episodes": "random-policy episodes to run (default 30)",
    }
)
def check_sim(c: Context, sim: str = "cstr", lessons: str = "", episodes: int = 30) -> None:
    """Check a simulator against the contract before training on it."""
    from sims.check import check_sim as run_checks
    from sims.check import render

    report = run_checks(sim, lessons=Path(lessons) if lessons else None, episodes=episodes)
    render(report)
    if not report.ok:
        reasons = "\n".join(f"- {f.check}: {f.detail}" for f in report.failures())
        raise Exit(f"check-sim: {sim} does not conform:\n{reasons}", code=1)


@task(help={"name": "module name for the new simulator, e.g. my_tank"})
def new_sim(c: Context, name: str) -> None:
    """Scaffold a simulator module, lessons file and test that pass check-sim unmodified."""
    from sims.contract import SimError
    from sims.scaffold import new_sim as scaffold

    try:
        written = scaffold(name, ROOT)
    except SimError as exc:
        raise Exit(f"new-sim: {exc}") from None
    for path in written:
        print(f"wrote {path.relative_to(ROOT)}")
    print(f"next: edit sims/{name}.py, then `invoke check-sim --sim {name}`")


@task(help={"fix": "apply ruff's fixes and formatting instead of only checking"})
def lint(c: Context, fix: bool = False) -> None:
    """Lint and format-check the code with ruff."""
    if fix:
        c.run("ruff check --fix .")
        c.run("ruff format .")
    else:
        c.run("ruff check .")
        c.run("ruff format --check .")


@task(
    help={
        "k": "only tests matching this pytest -k expression",
        "slow": "also run tests marked slow",
        "args": "extra arguments for pytest",
    }
)
def test(c: Context, k: str = "", slow: bool = False, args: str = "") -> None:
    """Lint, then run the whole test suite (Docker tests too when an engine answers)."""
    lint(c)
    selection = [] if slow else ["-m", "not slow"]
    if k:
        selection += ["-k", k]
    c.run(f"{shlex.join(['pytest', *selection])} {args}")
