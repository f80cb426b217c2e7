"""The import graph: no cycles, and data flows one way (sims -> jobs -> images -> client).

What runs on the cluster (sims/, jobs/) and what packages it (images/) import nothing from the
client tools; nothing imports tasks.py. Function-level imports count too.
"""

from __future__ import annotations

import grimp
import pytest

PACKAGES = ("sims", "jobs", "client", "viewer", "policy_runtime", "images", "infra", "benchmarks")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    # External packages are kept as nodes, so that an import of tasks.py would show as one.
    return grimp.build_graph(*PACKAGES, include_external_packages=True, cache_dir=None)


def test_no_module_imports_itself_through_others(graph):
    ours = {m for m in graph.modules if m.split(".")[0] in PACKAGES}
    cycles = sorted(
        f"{importer} -> {imported} -> ... -> {importer}"
        for importer in ours
        for imported in graph.find_modules_directly_imported_by(importer)
        if imported != importer and graph.chain_exists(importer=imported, imported=importer)
    )
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize(
    ("importer", "forbidden"),
    [
        ("sims", "jobs"),
        ("sims", "client"),
        ("jobs", "client"),
        ("images", "client"),
        ("sims", "images"),
        ("jobs", "images"),
        ("sims", "benchmarks"),
        ("jobs", "benchmarks"),
        ("client", "benchmarks"),
        ("sims", "viewer"),
        ("jobs", "viewer"),
        # the policy runtime: numpy and onnxruntime, nothing of Ray, torch or the training code
        ("policy_runtime", "ray"),
        ("policy_runtime", "torch"),
        ("policy_runtime", "sims"),
        ("policy_runtime", "jobs"),
        ("policy_runtime", "client"),
    ],
)
def test_layers(graph, importer, forbidden):
    chain = graph.find_shortest_chain(importer=importer, imported=forbidden, as_packages=True)
    assert chain is None, f"{importer} must not import {forbidden}: {' -> '.join(chain)}"


def test_nothing_imports_tasks(graph):
    importers = (
        graph.find_modules_that_directly_import("tasks") if "tasks" in graph.modules else set()
    )
    assert importers == set()


def test_metric_names_and_trajectory_column_prefixes_are_spelled_in_one_module():
    """``jobs/rundir.py`` spells them (``Metric``, ``STATE``, ``ACTION``, ``SCENARIO``); a
    second spelling is how a renamed metric or column goes missing from a reader. The page's
    script (viewer/player.js) reads them from the page's data."""
    import re
    from pathlib import Path

    from jobs.rundir import ACTION, SCENARIO, STATE, Metric

    root = Path(__file__).resolve().parents[1]
    names = [v for k, v in vars(Metric).items() if not k.startswith("_")]
    spelled = re.compile(
        "|".join(
            [*(rf"[\"']{re.escape(n)}[\"']" for n in names)]
            + [rf"[\"']{p}(?!dist_inputs|spread|space)" for p in (STATE, ACTION, SCENARIO)]
        )
    )
    found = [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for package in PACKAGES
        for path in sorted([*(root / package).rglob("*.py"), *(root / package).rglob("*.js")])
        if path != root / "jobs" / "rundir.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if spelled.search(line)
    ]
    assert not found, "spelled outside jobs/rundir.py:\n" + "\n".join(found)
