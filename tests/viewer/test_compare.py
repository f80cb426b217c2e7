"""`invoke compare`: two runs side by side, and a study folder standing for its trials."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, copy_run, train_smoke


@pytest.fixture(scope="module")
def two_runs(default_smoke, tmp_path_factory) -> list[Path]:
    """Two CSTR smoke runs of different seeds, as a user compares this week's with last's:
    the default config's (seed 0) and one with seed 1."""
    return [
        copy_run(default_smoke[0], tmp_path_factory.mktemp("seed0")),
        train_smoke(tmp_path_factory.mktemp("seed1"), "--set", "seed=1")[0],
    ]


def compare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "compare", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def table(page: str, table_id: str) -> list[list[str]]:
    body = page.split(f"<table id='{table_id}'>", 1)[1].split("</table>", 1)[0]
    return [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row) for row in body.split("</tr>") if row]


def test_two_runs_side_by_side_with_their_kpis_per_scenario(two_runs, tmp_path):
    a, b = two_runs
    done = compare("--run", str(a), "--run", str(b), "--out", str(tmp_path / "c.html"))
    assert done.returncode == 0, done.stdout + done.stderr
    page = (tmp_path / "c.html").read_text()
    names = ["/".join(run.parts[-2:]) for run in two_runs]
    header, *rows = table(page, "kpi-comparison")
    assert header == ["scenario", "KPI", "baseline", *names]
    scenarios = {
        r["scenario"] for r in json.loads((a / "assessment" / "kpis.json").read_text())["scenarios"]
    }
    assert {r[0] for r in rows} == {"all scenarios", *scenarios}
    for run, column in ((a, 3), (b, 4)):  # each run's agent, as its assessment wrote it
        kpis = json.loads((run / "assessment" / "kpis.json").read_text())
        (ca,) = [r for r in rows if r[:2] == ["all scenarios", "ca_rms [kmol/m3]"]]
        assert float(ca[column]) == pytest.approx(kpis["kpis"]["agent"]["ca_rms"], rel=1e-3)
        assert float(ca[2]) == pytest.approx(kpis["kpis"]["baseline"]["ca_rms"], rel=1e-3)
    verdicts = table(page, "verdicts")[1:]
    assert [v[0] for v in verdicts] == names
    assert all(v[1].startswith("verdict: ") for v in verdicts)
    data = page.split('<script type="application/json" id="curves-data">', 1)[1]
    curves = json.loads(data.split("</script>", 1)[0])["data"]
    assert [trace["name"] for trace in curves] == names  # one training curve each, one chart
    for trace, run in zip(curves, two_runs, strict=True):
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert trace["x"] == [x["env_steps"] for x in lines]


def test_a_study_folder_stands_for_its_trials_in_the_studys_ranking(two_runs, tmp_path):
    study = tmp_path / "study-1"
    for name, run in zip(("trial-000", "trial-001"), two_runs, strict=True):
        shutil.copytree(run, study / name)
    ranked = [{"trial": "trial-001"}, {"trial": "trial-000"}]
    (study / "study.json").write_text(json.dumps({"trials": ranked}))
    done = compare("--run", str(study), "--out", str(tmp_path / "s.html"))
    assert done.returncode == 0, done.stdout + done.stderr
    header = table((tmp_path / "s.html").read_text(), "kpi-comparison")[0]
    assert header[3:] == ["study-1/trial-001", "study-1/trial-000"]


def test_what_cannot_be_compared_is_said_in_one_line(two_runs, tmp_path):
    one = compare("--run", str(two_runs[0]), "--out", str(tmp_path / "x.html"))
    assert one.returncode == 2 and "one run only; compare two or more" in one.stderr
    missing = compare("--run", str(two_runs[0]), "--run", str(tmp_path / "nope"))
    assert missing.returncode == 2 and f"{tmp_path / 'nope'}: no such directory" in missing.stderr
    assert not (tmp_path / "x.html").exists() and "Traceback" not in missing.stderr


@pytest.mark.browser
def test_the_comparison_page_draws_offline_without_errors(two_runs, tmp_path):
    from playwright.sync_api import sync_playwright

    from tests.viewer.test_page import ARTIFACTS, CHROMIUM
    from viewer.compare import build_comparison

    page_file = build_comparison(two_runs, tmp_path / "c.html")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            errors: list[str] = []
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else 0)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_file.as_uri())
            page.wait_for_selector("#curves .main-svg")
            assert page.evaluate("document.getElementById('curves').data.length") == 2
            assert errors == []
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "compare-two-runs.png"), full_page=True)
        finally:
            browser.close()
