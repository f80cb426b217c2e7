"""The zoo benchmark's target: each of our seeds against what SB3 needs on the simulator."""

from __future__ import annotations

from benchmarks.zoo import add_figures, peer_needs


def run(seed: int, ours: int | None, peer: int | None) -> dict:
    verdict = {"kpi": "temp_rms", "agent": 0.3, "baseline": 0.45, "unit": "K", "violations": {}}
    return {
        "seed": seed,
        "ours": {"env_steps_to_verdict": ours, "verdict": verdict},
        "peer": {"env_steps_to_verdict": peer},
    }


def figures(runs: list[dict]) -> list[tuple]:
    rows: list[tuple] = []
    add_figures("thermostat", runs, 1_000_000, True, lambda *row: rows.append(row))
    return [r for r in rows if "env steps" in r[0]]


def test_sb3_needs_the_median_of_its_seeds_and_a_seed_that_never_got_there_counts_as_never():
    assert peer_needs([run(0, 1, 80_000), run(1, 1, 40_000), run(2, 1, 160_000)]) == 80_000
    assert peer_needs([run(0, 1, None), run(1, 1, 40_000), run(2, 1, 160_000)]) == 160_000
    assert peer_needs([run(0, 1, None), run(1, 1, None), run(2, 1, 160_000)]) is None
    assert peer_needs([run(0, 1, 40_000), run(1, 1, 80_000)]) == 60_000


def test_each_seed_is_held_against_sb3s_median_not_its_run_of_the_same_seed_number():
    rows = figures([run(0, 40_000, 80_000), run(1, 80_000, 40_000), run(2, 40_000, 160_000)])
    assert [r[-1] for r in rows] == [True, True, True]
    assert rows[1][3] == "SB3 PPO median of seeds: 80,000 (its seed 1: 40,000)"
    slower = figures([run(0, 40_000, 80_000), run(1, 120_000, 40_000), run(2, 40_000, 160_000)])
    assert [r[-1] for r in slower] == [True, False, True]


def test_a_seed_of_ours_that_never_beats_the_baseline_misses_even_where_sb3_never_did():
    rows = figures([run(0, None, None), run(1, 40_000, None), run(2, 40_000, None)])
    assert [r[-1] for r in rows] == [False, True, True]
    assert rows[0][3] == "SB3 PPO median of seeds: not reached (its seed 0: not reached)"
