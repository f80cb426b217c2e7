"""`invoke new-sim NAME`: scaffold a working simulator module, lessons, scenarios and test."""

from __future__ import annotations

import keyword
from pathlib import Path
from string import Template

from sims.contract import SimError

TEMPLATES = Path(__file__).parent / "templates"


def new_sim(name: str, root: Path) -> list[Path]:
    """Write ``sims/<name>.py`` (class ``<Name>Sim``, so it never shadows your model's class),
    ``sims/lessons/<name>.yaml``, ``sims/lessons/<name>_scenarios.yaml``,
    ``tests/sims/test_<name>.py``, the recipe's experiment ``jobs/configs/<name>_ppo.yaml``
    and a search space ``jobs/configs/<name>_space.yaml`` under ``root``; refuse to overwrite
    anything. Returns the paths written."""
    if not name.isidentifier() or keyword.iskeyword(name) or name != name.lower():
        raise SimError(
            f"simulator name {name!r} is not usable: it becomes the module sims/{name}.py, so use "
            "lowercase letters, digits and underscores, starting with a letter (e.g. my_tank)"
        )
    cls = "".join(part.capitalize() for part in name.split("_") if part)
    targets = {
        "sim.py.tmpl": root / "sims" / f"{name}.py",
        "lessons.yaml.tmpl": root / "sims" / "lessons" / f"{name}.yaml",
        "scenarios.yaml.tmpl": root / "sims" / "lessons" / f"{name}_scenarios.yaml",
        "test_sim.py.tmpl": root / "tests" / "sims" / f"test_{name}.py",
        "config.yaml.tmpl": root / "jobs" / "configs" / f"{name}_ppo.yaml",
        "space.yaml.tmpl": root / "jobs" / "configs" / f"{name}_space.yaml",
    }
    existing = [str(path) for path in targets.values() if path.exists()]
    if existing:
        raise SimError(
            f"{', '.join(existing)} already exist(s); choose another name or delete them first"
        )
    values = {"name": name, "sim": name, "cls": cls, "title": cls, "max_steps": "60"}
    for template, path in targets.items():
        text = Template((TEMPLATES / template).read_text()).substitute(values)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(targets.values())


def recipe_config(sim: str, experiment: str) -> str:
    """The experiment YAML that ``new-sim`` writes, for any simulator name (``cstr``,
    ``mypkg.env:MyEnv``): the default recipe, stopped on the verdict."""
    template = Template((TEMPLATES / "config.yaml.tmpl").read_text())
    name = experiment.removesuffix("_ppo")
    return template.substitute({"name": name, "sim": sim, "title": sim})


def recipe_space(name: str) -> str:
    """The search space that ``new-sim`` writes beside ``<name>_ppo.yaml``: the recipe's
    main knobs."""
    return Template((TEMPLATES / "space.yaml.tmpl").read_text()).substitute({"name": name})
