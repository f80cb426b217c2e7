"""The CI report: Markdown for the step summary, and the beats-the-baseline verdict."""

import json

import pytest

from client.report import beats_baseline, markdown
from jobs.rundir import RunError
from jobs.verdict import decide
from sims.registry import resolve

SUMMARY = {
    "experiment": "cstr_ppo", "run_id": "r1", "status": "completed", "algorithm": "PPO", "sim": "cstr",
    "iterations": 250, "env_steps_sampled": 1000875, "wall_time_s": 309.9, "stop_reason": "max_env_steps",
    "episode_return_mean": 88.46, "env_step_failures": 0.0,
}  # fmt: skip


def write(tmp_path, agent, baseline, **summary):
    kpis = {"agent": agent, "baseline": baseline}
    verdict = decide({"kpis": kpis}, resolve("cstr")).to_json()  # as training writes it
    (tmp_path / "summary.json").write_text(
        json.dumps({**SUMMARY, "assessment": kpis, "verdict": verdict, **summary})
    )
    return tmp_path


@pytest.mark.parametrize(
    ("agent", "baseline", "beats"),
    [
        (  # the CSTR's verdict is on Ca RMS; steps at the dTc limit are no constraint
            {"return": 84.0, "ca_rms": 0.085, "runaway_count": 0, "dtc_limit_count": 40},
            {"return": 80.9, "ca_rms": 0.103, "runaway_count": 0, "dtc_limit_count": 20},
            True,
        ),
        (  # a higher return does not decide it: Ca RMS does
            {"return": 83.0, "ca_rms": 0.15, "runaway_count": 0},
            {"return": 80.9, "ca_rms": 0.103, "runaway_count": 0},
            False,
        ),
        (
            {"return": 85.0, "ca_rms": 0.05, "runaway_count": 1},
            {"return": 80.9, "ca_rms": 0.103, "runaway_count": 0},
            False,
        ),
    ],
    ids=["better", "higher-return-worse-rms", "more-runaways"],
)
def test_the_report_says_the_runs_verdict(tmp_path, agent, baseline, beats):
    run = write(tmp_path, agent, baseline)
    assert beats_baseline(run) is beats
    text = markdown(run)
    assert text.startswith("### cstr_ppo / r1: completed")
    assert "| controller | return | ca_rms | runaway_count" in text
    assert f"Beats the baseline: {'yes' if beats else 'no'}" in text
    said = "**verdict: beats the baseline (ca_rms " if beats else "**verdict: does NOT beat"
    assert said in text


def test_a_run_without_a_finite_return_still_has_a_report(tmp_path):
    run = write(
        tmp_path, {"return": 1.0, "ca_rms": 1.0}, {"return": 2.0, "ca_rms": 0.1},
        episode_return_mean=None,
    )  # fmt: skip
    assert "final return not measured" in markdown(run)
    assert beats_baseline(run) is False


def test_an_unfinished_run_has_no_report(tmp_path):
    with pytest.raises(RunError, match=r"no summary\.json; the run has not finished"):
        markdown(tmp_path)


def test_the_report_points_to_the_runs_page(tmp_path):
    run = write(tmp_path, {"return": 1.0, "ca_rms": 1.0}, {"return": 2.0, "ca_rms": 0.1})
    assert f"`invoke view {run}` writes its page" in markdown(run)
    (run / "view.html").write_text("<html></html>")
    assert "The run's page, `view.html`" in markdown(run)


def test_the_kpi_table_carries_units_and_says_what_was_not_measured(tmp_path):
    """As every printed KPI table does; a KPI the assessment could not measure is said, not
    a TypeError (`invoke report` is a step of the deploy-and-train workflow)."""
    units = {"kpis": {"ca_rms": "kmol/m3", "t_rms": "K", "runaway_count": "episodes"}}
    run = write(
        tmp_path, {"return": 84.0, "ca_rms": 0.09, "t_rms": None, "runaway_count": 0},
        {"return": 80.9, "ca_rms": 0.103, "t_rms": 0.58, "runaway_count": 0}, units=units,
    )  # fmt: skip
    text = markdown(run)
    assert (
        "| controller | return | ca_rms [kmol/m3] | t_rms [K] | runaway_count [episodes] |" in text
    )
    assert "| agent | 84 | 0.09 | not measured | 0 |" in text
