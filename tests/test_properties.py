"""Property-based tests of the validators (Hypothesis): generated malformed configs, --set
values, lessons, scenario files, stack settings, stack outputs and states files must raise the
project's own typed error with a message that names the file, key or flag, never anything
else."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.deploy import DeployError, read_request
from infra.config import KEYS, InfraConfigError, load_values
from infra.outputs import OutputsError, parse_outputs
from jobs.assess import ScenarioError, load_scenarios
from jobs.config import CONFIGS, ConfigError, ExperimentConfig, load_config
from sims.contract import SimError
from sims.lessons import load_lessons
from sims.registry import resolve

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CSTR = resolve("cstr")

# What a user might type anywhere: numbers (finite or not), words, nothing, lists, mappings.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(min_size=1, max_size=10), inner, max_size=4),
    ),
    max_leaves=12,
)
known_or_not = st.one_of(st.sampled_from(list(ExperimentConfig.model_fields)), st.text(max_size=10))
config_keys = st.builds(
    lambda head, tail: ".".join([head, *tail]),
    known_or_not,
    st.lists(
        st.sampled_from(["lr", "train_batch_size", "max_env_steps", "extra", "x"]), max_size=2
    ),
)


def write(suffix: str, text: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="aml-rl-prop-"))
    path = folder / f"input{suffix}"
    path.write_text(text)
    return path


def dump(data: object) -> str:
    try:
        return yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:
        return str(data)


@SETTINGS
@given(st.dictionaries(known_or_not, values, max_size=5))
def test_a_generated_config_file_is_accepted_or_refused_naming_the_file(data):
    path = write(".yaml", dump(data))
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(path) in str(exc)


@SETTINGS
@given(st.lists(st.tuples(config_keys, scalars), min_size=1, max_size=3), st.booleans())
def test_generated_set_values_are_accepted_or_refused_naming_the_set(pairs, with_equals):
    sets = [f"{key}={json.dumps(value)}" if with_equals else key for key, value in pairs]
    try:
        load_config(CONFIGS / "cstr_ppo.yaml", sets)
    except ConfigError as exc:
        assert "--set" in str(exc) or "cstr_ppo.yaml" in str(exc)


@SETTINGS
@given(values)
def test_a_generated_lessons_file_is_accepted_or_refused_naming_the_file(data):
    path = write(".yaml", dump({"lessons": data} if not isinstance(data, dict) else data))
    try:
        load_lessons(path, CSTR.parameters, sim="cstr")
    except SimError as exc:
        assert str(path) in str(exc)


@SETTINGS
@given(values)
def test_a_generated_scenarios_file_is_accepted_or_refused_naming_the_file(data):
    path = write(".yaml", dump(data))
    try:
        load_scenarios(path, CSTR)
    except ScenarioError as exc:
        assert str(path) in str(exc)


@SETTINGS
@given(st.dictionaries(st.sampled_from(KEYS), st.one_of(st.text(max_size=12), scalars), max_size=6))
def test_generated_stack_settings_are_accepted_or_refused_naming_the_key(settings_):
    values_ = {"owner": "rl-team@example.com", **{k: v for k, v in settings_.items()}}
    try:
        load_values(values_, "dev")
    except InfraConfigError as exc:
        assert "aml-rl:" in str(exc)


@SETTINGS
@given(values)
def test_generated_stack_outputs_are_accepted_or_refused_naming_the_file(data):
    try:
        parse_outputs(json.dumps(data), "outputs.json")
    except OutputsError as exc:
        assert str(exc).startswith("outputs.json: ")


@SETTINGS
@given(st.one_of(values, st.text(max_size=30)))
def test_a_generated_states_file_is_accepted_or_refused_naming_the_file(data):
    text = data if isinstance(data, str) else json.dumps(data)
    path = write(".json", text)
    try:
        read_request(path)
    except DeployError as exc:
        assert str(exc).startswith(f"{path}: ")
