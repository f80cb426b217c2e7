"""The CI report: Markdown for the step summary, and the beats-the-baseline verdict."""

import json

import pytest

from client.report import beats_baseline, markdown
from jobs.rundir import RunError

SUMMARY = {
    "experiment": "cstr_ppo", "run_id": "r1", "status": "completed", "algorithm": "PPO", "sim": "cstr",
    "iterations": 250, "env_steps_sampled": 1000875, "wall_time_s": 309.9, "stop_reason": "max_env_steps",
    "episode_return_mean": 88.46, "env_step_failures": 0.0,
}  # fmt: skip


def write(tmp_path, agent, baseline):
    (tmp_path / "summary.json").write_text(
        json.dumps({**SUMMARY, "assessment": {"agent": agent, "baseline": baseline}})
    )
    return tmp_path


@pytest.mark.parametrize(
    ("agent", "baseline", "beats"),
    [
        (
            {"return": 89.0, "runaway_count": 0, "dtc_limit_count": 40},
            {"return": 88.8, "runaway_count": 0, "dtc_limit_count": 20},
            True,
        ),
        ({"return": 88.0, "runaway_count": 0}, {"return": 88.8, "runaway_count": 0}, False),
        ({"return": 90.0, "runaway_count": 1}, {"return": 88.8, "runaway_count": 0}, False),
    ],
    ids=["better", "lower-return", "more-runaways"],
)
def test_beats_baseline(tmp_path, agent, baseline, beats):
    run = write(tmp_path, agent, baseline)
    assert beats_baseline(run) is beats
    text = markdown(run)
    assert text.startswith("### cstr_ppo / r1: completed")
    assert "| controller | return | runaway_count" in text
    assert f"Beats the baseline: {'yes' if beats else 'no'}" in text


def test_an_unfinished_run_has_no_report(tmp_path):
    with pytest.raises(RunError, match=r"no summary\.json; the run has not finished"):
        markdown(tmp_path)


def test_the_report_points_to_the_runs_page(tmp_path):
    run = write(tmp_path, {"return": 1.0}, {"return": 2.0})
    assert f"`invoke view {run}` writes its page" in markdown(run)
    (run / "view.html").write_text("<html></html>")
    assert "The run's page, `view.html`" in markdown(run)
