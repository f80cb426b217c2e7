"""The policy bundle: exported from a real run, equal to RLlib's policy, served over HTTP."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from client.export import ExportError, export_bundle
from jobs.assess import AgentPolicy, Controller, default_scenarios, run_episode
from jobs.rundir import RunError
from jobs.trajectories import read_trajectories
from jobs.verdict import LosingPolicy
from policy_runtime import BundleError, load
from sims.registry import resolve
from tests.conftest import ROOT, sim_config, train_smoke

STATES = {
    "Ca": 8.57,
    "T": 311.2,
    "Tc": 292.0,
    "Cref": 8.57,
    "Tref": 311.2,
    "T_error": 0.0,
    "Tc_error": 0.0,
    "T_error_integral": 0.0,
}


@pytest.fixture(scope="module")
def run(cstr_run) -> Path:
    return cstr_run


@pytest.fixture(scope="module")
def bundle(cstr_bundle) -> Path:
    return cstr_bundle


def test_the_bundle_acts_as_rllibs_policy_on_10000_logged_observations(run, bundle):
    frame = read_trajectories(run)
    handle = resolve("cstr")
    names = list(handle.spec.observations)
    rows = frame.dropna(subset=[f"state_{n}" for n in names])
    assert len(rows) >= 10_000
    states = [
        dict(zip(names, values, strict=True))
        for values in rows[[f"state_{n}" for n in names]].to_numpy().tolist()
    ]
    ours = load(bundle).act_batch(states)
    env = handle.make_env()
    theirs = AgentPolicy(sorted((run / "checkpoints").iterdir())[-1])
    worst = 0.0
    for state, action in zip(states, ours, strict=True):
        obs = env._observe(state)  # the training path's scaling
        policy_space = np.clip(theirs(obs), -1.0, 1.0)[0]
        worst = max(worst, abs(env.from_physical(action)[0] - policy_space))
    assert worst <= 1e-5, worst


def test_the_bundle_as_controller_reproduces_the_runs_assessment(run, bundle):
    policy, handle = load(bundle), resolve("cstr")
    env = handle.make_env(lesson="transition")
    controller = Controller(lambda obs, info: env.from_physical(policy.act(info["states"])))
    expected = {
        r["scenario"]: r
        for r in json.loads((run / "assessment" / "kpis.json").read_text())["scenarios"]
        if r["controller"] == "agent"
    }
    for scenario in default_scenarios(handle):
        episode = run_episode(env, handle, scenario, controller)
        kpis = {
            "return": episode.ret,
            **handle.kpis(episode.states, episode.actions, episode.terminated),
        }
        for name, value in kpis.items():
            # float32 graph against float32 torch: the same actions to ~1e-6 of their range
            assert value == pytest.approx(expected[scenario.name][name], rel=1e-4, abs=1e-6), (
                scenario.name,
                name,
            )


def test_the_metadata_carries_names_units_ranges_and_provenance(run, bundle):
    meta = json.loads((bundle / "policy.json").read_text())
    assert [o["name"] for o in meta["observations"]][:2] == ["Ca", "T"]
    assert meta["observations"][0] == {
        "name": "Ca",
        "unit": "kmol/m3",
        "low": 0.0,
        "high": 10.0,
        "scaling": "range",
    }
    assert meta["actions"] == [
        {"name": "dTc", "unit": "K", "low": -10.0, "high": 10.0, "scaling": "range"}
    ]
    summary = json.loads((run / "summary.json").read_text())
    assert (
        meta["kpis"] == summary["assessment"] and meta["config_digest"] == summary["config_digest"]
    )
    assert len(meta["git_revision"]) == 40 and meta["sim"] == "cstr"


@pytest.mark.parametrize(
    ("states", "message"),
    [
        (
            {k: v for k, v in STATES.items() if k != "T"},
            r"states: missing T; the policy takes Ca, T, Tc",
        ),
        ({**STATES, "pressure": 1.0}, r"states: unknown pressure; the policy takes Ca"),
        ({**STATES, "T": float("nan")}, r"states\['T'\] is nan; give a finite number"),
        ({**STATES, "T": "311"}, r"states\['T'\] is '311' \(str\); give a number in K"),
        ({**STATES, "Ca": None}, r"states\['Ca'\] is None \(NoneType\); give a number in kmol/m3"),
    ],
    ids=["missing", "extra", "nan", "string", "none"],
)
def test_bad_states_are_refused_naming_the_state(bundle, states, message):
    with pytest.raises(BundleError, match=message):
        load(bundle).act(states)


def test_a_graph_that_does_not_match_its_metadata_is_refused(bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    (copy / "policy.onnx").write_bytes((copy / "policy.onnx").read_bytes() + b"\0")
    with pytest.raises(BundleError, match=r"policy\.onnx does not match .*policy\.json"):
        load(copy)
    with pytest.raises(BundleError, match=r"no policy\.json; export one with `invoke export RUN`"):
        load(tmp_path)


def test_a_bundle_whose_observations_were_swapped_is_refused(bundle, tmp_path):
    """The graph reads observations by position: two swapped in policy.json would be served,
    silently answering another action, if only the graph were checksummed."""
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    meta = json.loads((copy / "policy.json").read_text())
    meta["observations"][0], meta["observations"][1] = (
        meta["observations"][1], meta["observations"][0],
    )  # fmt: skip
    (copy / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(
        BundleError,
        match=r"policy\.json: its observations or actions were changed after the export",
    ):
        load(copy)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text[: len(text) // 2], r"policy\.json: not JSON \(JSONDecodeError: .*cut short or edited"),
        (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "actions"}),
         r"policy\.json: lacks actions; the file is cut short or edited: export the bundle again"),
        (lambda text: json.dumps({**json.loads(text), "schema": 1}), r"schema 1, this runtime reads 2"),
    ],
    ids=["truncated", "lacks a key", "older schema"],
)  # fmt: skip
def test_a_damaged_policy_json_is_refused_in_one_message(bundle, tmp_path, edit, message):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    meta = copy / "policy.json"
    meta.write_text(edit(meta.read_text()))
    with pytest.raises(BundleError, match=message):
        load(copy)
    proc = subprocess.run(
        [sys.executable, "-m", "policy_runtime", str(copy), "--port", str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert re.search(message, proc.stderr), proc.stderr[-2000:]


def test_a_policy_that_does_not_beat_its_baseline_is_not_exported_unless_asked(run, tmp_path):
    with pytest.raises(
        LosingPolicy,
        match=r"iter-\d+: the policy does not beat its baseline \(verdict: does NOT beat the "
        r"baseline \(ca_rms .*\); refusing to export it\. Train it further \(invoke train "
        r"--resume\), or pass --allow-losing to export it anyway",
    ):
        export_bundle(run, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    bundle = export_bundle(run, tmp_path / "taken", allow_losing=True)
    verdict = json.loads((bundle / "policy.json").read_text())["verdict"]
    assert verdict["beats"] is False and verdict["kpi"] == "ca_rms"


def test_a_policy_the_bundle_cannot_take_is_refused(smoke_of, user_project, tmp_path):
    run, _ = smoke_of(config=sim_config("valve_zoo:ValvePlant"), cwd=user_project)
    with pytest.raises(ExportError, match=r"observation space Dict\(.*is flattened for the policy"):
        export_bundle(run)
    with pytest.raises(RunError, match=r"not an aml-rl checkpoint"):
        export_bundle(tmp_path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def service(bundle):
    """`invoke serve BUNDLE` for real, on this machine's loopback."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "serve", str(bundle), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{url}/healthz", timeout=1).json() == {"status": "ok"}:
                break
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"the service did not start:\n{proc.stdout.read()[-2000:]}")
        time.sleep(0.2)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def test_the_service_answers_as_the_bundle_does(service, bundle):
    policy = load(bundle)
    answer = requests.post(f"{service}/v1/predict", json={"states": STATES}, timeout=5)
    assert answer.status_code == 200 and answer.json() == {"action": policy.act(STATES)}
    other = {**STATES, "Cref": 2.0, "Tref": 373.1}
    batch = requests.post(f"{service}/v1/predict", json={"batch": [STATES, other]}, timeout=5)
    assert batch.json() == {"actions": policy.act_batch([STATES, other])}
    info = requests.get(f"{service}/v1/info", timeout=5).json()
    assert info["sim"] == "cstr" and info["actions"][0]["unit"] == "K"


def test_the_service_names_the_bad_field_in_a_422(service):
    wrong_type = requests.post(
        f"{service}/v1/predict", json={"states": {**STATES, "T": "hot"}}, timeout=5
    )
    assert wrong_type.status_code == 422
    assert wrong_type.json()["detail"][0]["loc"] == ["body", "states", "T"]
    missing = requests.post(f"{service}/v1/predict", json={"states": {"Ca": 1.0}}, timeout=5)
    assert missing.status_code == 422 and "missing T" in missing.json()["detail"]
    neither = requests.post(f"{service}/v1/predict", json={}, timeout=5)
    assert neither.status_code == 422 and "either 'states' or 'batch'" in neither.text
    # JSON numbers only, as the in-process runtime takes: no booleans, no numeric strings
    for value in (True, "8.57"):
        lax = requests.post(
            f"{service}/v1/predict", json={"states": {**STATES, "Ca": value}}, timeout=5
        )
        assert lax.status_code == 422, (value, lax.text)
        assert lax.json()["detail"][0]["loc"] == ["body", "states", "Ca"]


@pytest.mark.docker
def test_the_serving_container_closes_the_loop_with_the_runs_kpis(run, bundle):
    """The serving image, run for real; an assessment scenario driven through its HTTP API
    ends with the KPIs the run's own assessment recorded."""
    from images.build import build_serving_image, docker_client

    client = docker_client()
    built = build_serving_image(bundle, client=client)
    attrs = client.images.get(built.tag).attrs
    meta = json.loads((bundle / "policy.json").read_text())
    assert attrs["Config"]["User"] == "aml"
    assert attrs["Config"]["Labels"]["io.aml-rl.bundle-sha256"] == meta["graph_sha256"]
    assert built.size_bytes < 300e6  # the serving image carries no Ray, torch or training code
    handle = resolve("cstr")
    env = handle.make_env(lesson="transition")
    expected = {
        r["scenario"]: r
        for r in json.loads((run / "assessment" / "kpis.json").read_text())["scenarios"]
        if r["controller"] == "agent"
    }
    container = client.containers.run(
        built.tag,
        detach=True,
        ports={"8000/tcp": ("127.0.0.1", None)},  # loopback only
    )
    try:
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"]["8000/tcp"][0]["HostPort"]
        deadline = time.monotonic() + 60
        while "Uvicorn running" not in container.logs().decode():
            assert time.monotonic() < deadline, container.logs().decode()[-2000:]
            time.sleep(0.2)
        with requests.Session() as http:

            def act(obs, info):
                answer = http.post(
                    f"http://127.0.0.1:{port}/v1/predict",
                    json={"states": info["states"]},
                    timeout=5,
                )
                answer.raise_for_status()
                return env.from_physical(answer.json()["action"])

            scenario = default_scenarios(handle)[0]
            episode = run_episode(env, handle, scenario, Controller(act))
    finally:
        container.remove(force=True)
        client.images.remove(built.tag, force=True)
    kpis = {
        "return": episode.ret,
        **handle.kpis(episode.states, episode.actions, episode.terminated),
    }
    for name, value in kpis.items():
        assert value == pytest.approx(expected[scenario.name][name], rel=1e-4, abs=1e-6), name


def test_the_bundle_is_readable_by_others(bundle):
    assert bundle.stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in bundle.iterdir()} == {0o644}


def test_a_discrete_policy_exports_and_chooses_as_rllib_does(tmp_path):
    run, _ = train_smoke(
        tmp_path / "runs", "--config", str(ROOT / "jobs" / "configs" / "cartpole_ppo.yaml")
    )
    notes: list[str] = []
    bundle = export_bundle(run, echo=notes.append)  # CartPole has no baseline: no verdict to pass
    assert len(notes) == 1 and "no baseline to compare with (return " in notes[0]
    meta = json.loads((bundle / "policy.json").read_text())
    assert meta["actions"] == [
        {"name": "a0", "unit": "", "low": 0, "high": None, "scaling": "discrete"}
    ]
    frame = read_trajectories(run)
    names = [f"obs{i}" for i in range(4)]
    rows = frame.dropna(subset=[f"state_{n}" for n in names])[[f"state_{n}" for n in names]]
    observations = rows.to_numpy(dtype=np.float32)
    ours = load(bundle).act_batch(
        [dict(zip(names, map(float, o), strict=True)) for o in observations]
    )
    theirs = AgentPolicy(sorted((run / "checkpoints").iterdir())[-1])
    scale = resolve("CartPole-v1").make_env().scale_observation  # as training saw them
    assert [a["a0"] for a in ours] == [float(theirs(scale(o))) for o in observations]
    assert [o["scaling"] for o in meta["observations"]] == ["range", "symlog", "range", "symlog"]
    assert len(observations) > 300
