"""A runtime the simulator needs in the training image, declared beside its code."""

from __future__ import annotations

import pytest

import images.build as build
from images.build import BuildOptions, ImageError
from tests.conftest import ROOT


def declared_build_args(project, monkeypatch) -> dict[str, str]:
    """The build arguments `invoke build` passes for ``project`` (no engine needed)."""
    seen: dict[str, str] = {}
    monkeypatch.setattr(build, "plan_build", lambda client, options: build.Plan(options))
    monkeypatch.setattr(
        build, "_run_build", lambda client, context, tag, args, *rest: seen.update(args)
    )
    build.build_image(BuildOptions(root=project, revision="r"), client=object(), echo=print)
    return seen


def test_apt_packages_declared_in_external_yaml_reach_the_image_build(model_project, monkeypatch):
    declaration = model_project / "sims" / "external.yaml"
    declaration.write_text(declaration.read_text() + "apt: [nodejs, libgomp1]\n")
    assert declared_build_args(model_project, monkeypatch)["APT_PACKAGES"] == "nodejs libgomp1"
    dockerfile = (ROOT / "images" / "Dockerfile").read_text()
    runtime = dockerfile[dockerfile.index("AS runtime") :]
    assert 'ARG APT_PACKAGES=""' in runtime
    assert "apt-get install -y --no-install-recommends $APT_PACKAGES" in runtime
    assert runtime.index("APT_PACKAGES") < runtime.index("COPY --chown=aml:aml code/"), (
        "before the code layer: a code change does not reinstall them"
    )


def test_nothing_declared_installs_nothing(monkeypatch):
    assert declared_build_args(ROOT, monkeypatch)["APT_PACKAGES"] == ""


def test_a_package_name_apt_would_refuse_is_named(model_project, monkeypatch):
    declaration = model_project / "sims" / "external.yaml"
    declaration.write_text(declaration.read_text() + "apt: ['nodejs; rm -rf /']\n")
    with pytest.raises(
        ImageError, match=r"sims/external\.yaml: apt\[0\]: String should match pattern"
    ):
        declared_build_args(model_project, monkeypatch)
