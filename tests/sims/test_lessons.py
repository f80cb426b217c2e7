"""Lesson files: sampling, and one clear message for each kind of bad input."""

from pathlib import Path

import numpy as np
import pytest

from sims.contract import SimError
from sims.lessons import load_lessons

KNOWN = {"Cref_signal": 1.0, "noise_percentage": 0.0}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lessons.yaml"
    path.write_text(text)
    return path


def test_lessons_sample_their_distributions_in_order(tmp_path):
    plan = load_lessons(
        write(
            tmp_path,
            """
lessons:
  - name: easy
    parameters:
      Cref_signal: {values: [5]}
  - name: hard
    parameters:
      Cref_signal: {values: [1, 4]}
      noise_percentage: {min: 0.5, max: 2}
""",
        ),
        KNOWN,
    )
    rng = np.random.default_rng(0)
    assert [lesson.name for lesson in plan.lessons] == ["easy", "hard"]
    assert plan.lesson(0).sample(rng) == {"Cref_signal": 5.0}
    draws = [plan.lesson("hard").sample(rng) for _ in range(200)]
    assert {d["Cref_signal"] for d in draws} == {1.0, 4.0}
    noise = [d["noise_percentage"] for d in draws]
    assert 0.5 <= min(noise) < 0.7 and 1.8 < max(noise) <= 2.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "lessons: [\n  - name: a\n",
            r"lessons\.yaml: not valid YAML at line 2, column 3: .*fix the syntax",
        ),
        (
            "lessons:\n  - name: a\n    parameters:\n      Cref_sginal: {values: [1]}\n",
            r"lessons\[0\]\.parameters\.Cref_sginal: unknown scenario parameter 'Cref_sginal' for "
            r"simulator cstr .*known parameters: Cref_signal, noise_percentage",
        ),
        (
            "lessons:\n  - name: a\n    parameters:\n      noise_percentage: {min: 5, max: 1}\n",
            r"lessons\.yaml: lessons\[0\]\.parameters\.noise_percentage: min 5\.0 > max 1\.0; swap them "
            r"\(got \{'min': 5, 'max': 1\}\)",
        ),
        (
            "lessons:\n  - name: a\n    parameters:\n      Cref_signal: {values: []}\n",
            r"lessons\[0\]\.parameters\.Cref_signal: 'values' is empty; list at least one value",
        ),
        (
            "lessons:\n  - name: a\n    parameters:\n      Cref_signal: {min: 1}\n",
            r"Cref_signal: needs both 'min' and 'max' \(uniform\) or 'values' \(choice\)",
        ),
        (
            "lessons:\n  - name: a\n    parameters:\n      Cref_signal: {min: 1, max: 2, values: [1]}\n",
            r"Cref_signal: give either \{min, max\} or \{values: \[...\]\}, not both",
        ),
        (
            "lessons:\n  - name: a\n    paramters: {}\n",
            r"lessons\[0\]\.paramters: unknown key; remove it or check its spelling",
        ),
        ("lessons: []\n", r"lessons\.yaml: lessons: List should have at least 1 item"),
        ("just a string\n", r"lessons\.yaml: \(top level\): Input should be a valid dictionary"),
    ],
    ids=[
        "not-yaml",
        "unknown-parameter",
        "min-above-max",
        "empty-values",
        "half-range",
        "both-forms",
        "unknown-key",
        "no-lessons",
        "not-a-mapping",
    ],
)
def test_bad_lesson_files_name_the_file_key_and_value(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(SimError, match=message) as err:
        load_lessons(path, KNOWN, sim="cstr")
    assert str(path) in str(err.value)


def test_missing_lessons_file_names_the_path(tmp_path):
    with pytest.raises(SimError, match=r"nowhere\.yaml: cannot be read .*check the path"):
        load_lessons(tmp_path / "nowhere.yaml", KNOWN)


def test_unknown_lesson_name_lists_the_lessons(tmp_path):
    plan = load_lessons(write(tmp_path, "lessons:\n  - name: a\n  - name: b\n"), KNOWN)
    with pytest.raises(SimError, match="no lesson named 'c'; the lessons are: a, b"):
        plan.lesson("c")
    with pytest.raises(
        SimError, match=r"lesson 2 does not exist; there are 2 lesson\(s\), numbered 0-1"
    ):
        plan.lesson(2)
