"""The KPI table printed at the end of training: every column name whole, even off a terminal."""

import pandas as pd

from jobs.console import print_kpis

COLUMNS = [
    "controller",
    "return",
    "ca_rms",
    "t_rms",
    "max_T",
    "runaway_count",
    "dtc_limit_count",
    "sim_failures_count",
]


def test_every_kpi_name_is_printed_whole_into_a_log(capsys):
    table = pd.DataFrame(
        [dict(zip(COLUMNS, ["agent", 88.06, 0.1456, 1.458, 375.8, 0.0, 0.0, 0.0], strict=True))]
    )
    print_kpis(table, title="assessment")
    out = capsys.readouterr().out
    assert "…" not in out
    for name in COLUMNS:
        assert name in out
    assert "88.06" in out and "0.1456" in out


def test_kpi_headers_carry_their_units_whole(capsys):
    from sims.registry import resolve

    table = pd.DataFrame(
        [dict(zip(COLUMNS, ["agent", 88.06, 0.1456, 1.458, 375.8, 0.0, 0.0, 0.0], strict=True))]
    )
    print_kpis(table, title="assessment", units=resolve("cstr").kpi_units)
    out = capsys.readouterr().out
    for header in ("ca_rms [kmol/m3]", "t_rms [K]", "max_T [K]", "runaway_count [episodes]"):
        assert header in out
    assert "return [" not in out  # no unit, no brackets
