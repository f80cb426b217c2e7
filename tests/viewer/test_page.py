"""The run page in headless Chromium: offline, interactive, and true to the logged rows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs.config import CONFIGS
from jobs.rundir import RunDir, RunError, write_atomic
from jobs.trajectories import Rows, read_trajectories
from tests.conftest import CHROMIUM, ROOT, copy_run, sim_config
from viewer.page import build_page, select_episodes

ARTIFACTS = ROOT / "tests" / "artifacts"  # screenshots of every test run (git-ignored)


@pytest.fixture(scope="module")
def cstr_run(default_smoke, tmp_path_factory) -> Path:
    return copy_run(default_smoke[0], tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        yield chromium
        chromium.close()


class Opened:
    """A page opened from its file, recording console errors and network requests."""

    def __init__(self, browser, path: Path, name: str) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else 0)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", self._request)
        self.page.goto(path.as_uri())
        self.page.wait_for_selector("#player .main-svg")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def _request(self, request) -> None:
        if not request.url.startswith(("file:", "data:", "blob:", "about:")):
            self.requests.append(request.url)

    def js(self, expression: str):
        return self.page.evaluate(expression)

    def step_table(self) -> dict[str, str]:
        return self.js(
            "Object.fromEntries([...document.querySelectorAll('#step-table tr')]"
            ".map(r => [r.cells[0].textContent, r.cells[1].textContent]))"
        )

    def episode(self) -> str:
        return self.js("document.getElementById('episode-list').value")

    def cursor(self) -> float:
        return self.js("document.getElementById('player').layout.shapes[0].x0")


@pytest.fixture(scope="module")
def cstr_page(cstr_run, browser):
    opened = Opened(browser, build_page(cstr_run), "viewer-cstr")
    yield opened
    opened.page.close()


@pytest.mark.browser
def test_the_page_of_a_smoke_run_loads_offline_without_errors(cstr_page, cstr_run):
    assert cstr_page.errors == [] and cstr_page.requests == []
    assert (cstr_run / "view.html").is_file()
    assert "cstr_ppo" in cstr_page.page.title()
    assert "The page shows all 12 assessment episodes" in cstr_page.page.inner_text("#left-out")


@pytest.mark.browser
def test_every_plot_draws_after_load_without_scrolling_so_a_full_page_shot_is_complete(
    browser, cstr_run, tmp_path
):
    page = browser.new_page(viewport={"width": 1400, "height": 600})
    try:
        page.goto(build_page(cstr_run, tmp_path / "page.html").as_uri())
        figures = page.locator(".lazy-figure")
        assert figures.count() == 6  # one per assessment scenario, most below the window
        page.wait_for_function(
            "[...document.querySelectorAll('.lazy-figure')].every(d => d.querySelector('.main-svg'))",
            timeout=30_000,
        )
        assert page.evaluate("window.scrollY") == 0  # nothing scrolled them into view
        page.screenshot(path=str(ARTIFACTS / "viewer-cstr-full-page.png"), full_page=True)
    finally:
        page.close()


@pytest.mark.browser
def test_choosing_another_episode_changes_the_plotted_traces(cstr_page):
    before = cstr_page.js("document.getElementById('player').data[0].y")
    options = cstr_page.js("[...document.getElementById('episode-list').options].map(o=>o.value)")
    other = next(o for o in options if o.endswith("-baseline"))
    cstr_page.page.select_option("#episode-list", other)
    after = cstr_page.js("document.getElementById('player').data[0].y")
    assert cstr_page.episode() == other and after != before
    # filters: only training episodes
    cstr_page.page.select_option("#filter-phase", "train")
    phases = cstr_page.js(
        "[...document.getElementById('episode-list').options].map(o => o.textContent.split(' ')[0])"
    )
    assert phases and set(phases) == {"train"}
    cstr_page.page.select_option("#filter-phase", "")


@pytest.mark.browser
def test_an_assessment_episode_is_drawn_with_the_other_controllers_on_its_scenario(
    cstr_page, cstr_run
):
    frame = read_trajectories(cstr_run)
    agent = next(e for e in frame["episode_id"].dropna().unique() if e.endswith("-agent"))
    baseline = agent.removesuffix("-agent") + "-baseline"
    cstr_page.page.select_option("#episode-list", agent)
    traces = cstr_page.js("document.getElementById('player').data.map(t => [t.name, t.yaxis, t.y])")
    first = [t for t in traces if t[1] == "y"]  # the top plot: Ca
    assert [t[0] for t in first][:2] == ["agent", "baseline"]
    logged = frame[frame["episode_id"] == baseline].sort_values("step")["state_Ca"]
    assert first[1][2] == pytest.approx(logged.tolist())  # the baseline's own logged Ca
    legend = cstr_page.js("document.getElementById('player').layout.showlegend")
    assert legend is True
    shapes = cstr_page.js("document.getElementById('player').layout.shapes.map(s => s.y0)")
    assert 400 in shapes  # the runaway limit beside T
    x_title = cstr_page.js("document.getElementById('player').layout.xaxis.title.text")
    assert x_title == "time [h]"


def expected_row(run: Path, episode_id: str, step: int) -> pd.Series:
    frame = read_trajectories(run)
    rows = frame[(frame["episode_id"] == episode_id) & (frame["step"] == step)]
    assert len(rows) == 1
    return rows.iloc[0]


def assert_table_is_row(table: dict[str, str], row: pd.Series) -> None:
    for column, label in (
        ("state_Ca", "Ca [kmol/m3]"),
        ("state_T", "T [K]"),
        ("action_dTc", "dTc [K]"),
    ):
        assert float(table[label]) == pytest.approx(row[column], rel=1e-5), label
    assert float(table["reward"]) == pytest.approx(row["reward"], rel=1e-5)


@pytest.mark.browser
def test_the_slider_moves_the_cursor_by_keyboard_and_mouse_and_shows_the_logged_row(
    cstr_page, cstr_run
):
    page = cstr_page.page
    page.select_option("#episode-list", index=0)
    episode = cstr_page.episode()
    page.focus("#step-slider")
    for _ in range(7):
        page.keyboard.press("ArrowRight")
    assert cstr_page.cursor() == 7 * 0.5  # the CSTR's time: 0.5 h per step
    table = cstr_page.step_table()
    assert table["step"] == "7" and table["time [h]"] == "3.5"
    assert_table_is_row(table, expected_row(cstr_run, episode, 7))
    # the mouse: a click three quarters along the slider
    box = page.locator("#step-slider").bounding_box()
    page.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + box["height"] / 2)
    step = int(cstr_page.step_table()["step"])
    assert 55 <= step <= 80 and cstr_page.cursor() == step * 0.5
    assert_table_is_row(cstr_page.step_table(), expected_row(cstr_run, episode, step))
    assert "<svg" in page.inner_html("#drawing")  # the CSTR draws its reactor
    page.locator("#player-body").screenshot(path=str(ARTIFACTS / "viewer-cstr-player.png"))


@pytest.mark.browser
def test_every_assessment_scenario_shows_both_controllers_with_units(cstr_page, cstr_run):
    scenarios = {
        e["scenario"]
        for e in json.loads((cstr_run / "assessment" / "kpis.json").read_text())["scenarios"]
    }
    assert len(scenarios) == 6
    for scenario in scenarios:
        # drawn when scrolled near (a page may hold dozens of scenarios)
        cstr_page.page.locator(f"#scenario-{scenario}").scroll_into_view_if_needed()
        cstr_page.page.wait_for_selector(f"#scenario-{scenario} .main-svg")
        names = cstr_page.js(
            f"document.getElementById('scenario-{scenario}').data.map(t => t.name)"
        )
        assert {"agent", "baseline"} <= set(names), scenario
        titles = cstr_page.js(
            f"(() => {{ const l = document.getElementById('scenario-{scenario}').layout;"
            " return Object.keys(l).filter(k => k.startsWith('yaxis'))"
            ".map(k => l[k].title && l[k].title.text); })()"
        )
        assert {"Ca [kmol/m3]", "T [K]", "dTc [K]", "reward"} <= set(titles)
        layout = f"document.getElementById('scenario-{scenario}').layout"
        x_titles = cstr_page.js(
            f"Object.keys({layout}).filter(k => k.startsWith('xaxis'))"
            f".map(k => {layout}[k].title && {layout}[k].title.text).filter(t => t)"
        )
        assert x_titles == ["time [h]"]  # the simulator's time, not steps
        lines = cstr_page.js(f"({layout}.shapes || []).map(s => [s.y0, s.line.color])")
        assert [400, "#c00"] in lines  # the runaway temperature, from the spec's limits
    table = cstr_page.page.inner_text("#kpi-table")
    assert "ca_rms [kmol/m3]" in table and "max_T [K]" in table


@pytest.mark.browser
def test_a_cartpole_run_and_a_dict_space_env_run_render(browser, smoke_of, tmp_path, user_project):
    cartpole, _ = smoke_of("--config", str(CONFIGS / "cartpole_ppo.yaml"))  # test_train's too
    valves, _ = smoke_of(config=sim_config("valve_zoo:ValvePlant"), cwd=user_project)
    cartpole, valves = (copy_run(run, tmp_path) for run in (cartpole, valves))  # pages go in
    for run, name, states in (
        (cartpole, "viewer-cartpole", "obs0"),
        (valves, "viewer-dict-space", "valves_0"),
    ):
        opened = Opened(browser, build_page(run), name)
        assert opened.errors == [] and opened.requests == [], name
        assert states in opened.page.inner_text("#step-table")
        assert "gauges" in opened.page.inner_text("#drawing")  # no drawing: gauges
        opened.page.close()


def test_a_big_run_keeps_a_bounded_selection_and_says_what_it_left_out(tmp_path):
    run = RunDir.create(tmp_path, "big")
    write_atomic(run.config, "experiment: big\nsim: simple_adder\n")
    rows = Rows()
    for i in range(300):
        rows.add_episode(
            base={
                "run_id": "r",
                "phase": "train",
                "controller": "agent",
                "env_runner": 1,
                "episode_id": f"e{i:03d}",
                "lesson": "all",
            },
            scenario={"initial_value": 20.0},
            states=[{"value": float(v)} for v in range(5)],
            actions=[None] + [{"addend": 1.0}] * 4,
            rewards=[None, *np.linspace(0, 1, 4)],
            terminated=False,
            truncated=True,
        )
    rows.flush(run.trajectories / "train-0.parquet")
    selection = select_episodes(run, per_lesson=10)
    chosen = list(selection.episodes["episode_id"])
    assert len(chosen) == 10 and chosen[0] == "e000" and chosen[-1] == "e299"
    assert set(selection.rows["episode_id"]) == set(chosen)
    assert "0 assessment episodes and 10 of 300 training episodes" in selection.left_out
    page = build_page(run.path, tmp_path / "big.html", episodes=10)
    assert "10 of 300 training episodes" in page.read_text()


def test_a_folder_that_is_not_a_run_is_refused_with_a_message(tmp_path):
    with pytest.raises(RunError, match=r"not a run directory \(no config.yaml\)"):
        build_page(tmp_path)


def test_resumed_sessions_and_assessed_checkpoints_are_marked_on_the_curves(tmp_path):
    from viewer.page import training_figure

    metrics = tmp_path / "metrics.jsonl"
    lines = [
        {
            "session": 1,
            "iteration": i,
            "env_steps": 100 * i,
            "wall_time_s": float(i),
            "env_runners/episode_return_mean": float(i),
        }
        for i in range(1, 6)
    ]
    # killed after iteration 5, resumed from the checkpoint of iteration 4: 5 is replayed
    lines += [
        {
            "session": 2,
            "iteration": i,
            "env_steps": 100 * i,
            "wall_time_s": 10.0 + i,
            "env_runners/episode_return_mean": float(i),
        }
        for i in range(5, 8)
    ]
    metrics.write_text("".join(json.dumps(line) + "\n" for line in lines))
    fig = training_figure(metrics, assessed={4: 3.5, 7: 6.5})
    (resumed,) = [a for a in fig.layout.annotations if a.text == "resumed"]
    assert resumed.x == 500 and fig.layout.shapes[0].x0 == 500
    (marker,) = [d for d in fig.data if d.name == "assessed return (deterministic)"]
    assert list(marker.x) == [400, 700] and list(marker.y) == [3.5, 6.5]
    wall = fig.layout.updatemenus[0].buttons[1].args
    assert wall[0]["x"][-1] == [4.0, 17.0]  # the markers move with the x axis
    assert wall[1]["shapes[0].x0"] == 15.0  # and so does the resumed line
    label = next(i for i, a in enumerate(fig.layout.annotations) if a.text == "resumed")
    assert wall[1][f"annotations[{label}].x"] == 15.0  # its label, not a subplot title
    assert wall[1]["xaxis.title.text"] == "wall time [s]"


def test_every_sessions_end_of_training_assessment_stays_marked_after_a_resume(cstr_run, tmp_path):
    from jobs.rundir import RunDir
    from viewer.page import assessed_checkpoints

    run = tmp_path / "resumed"
    shutil.copytree(cstr_run, run)
    first = json.loads((run / "summary.json").read_text())["checkpoint"]
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # as train_smoke's
    done = subprocess.run(  # as a user resumes it: its own process, the store it trained with
        [sys.executable, "-m", "jobs.train", "--resume", str(run), "--set", "stop.max_env_steps=800"],
        cwd=ROOT, env=environ, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    second = summary["checkpoint"]
    assert first != second and summary["sessions"] == 2
    marks = assessed_checkpoints(RunDir(run), summary)
    iterations = [int(c.rsplit("iter-", 1)[1]) for c in (first, second)]
    assert set(iterations) <= set(marks), marks  # the first session's mark is not gone
    kept = json.loads((run / "assessments" / first.split("/")[-1] / "kpis.json").read_text())
    assert marks[iterations[0]] == kept["kpis"]["agent"]["return"]
