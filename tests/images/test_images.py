"""The training image for real: built once, run single-node and as a 3-node Ray cluster."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import pytest

from images.build import (
    BuildFailed,
    BuildOptions,
    ImageError,
    build_image,
    docker_client,
    plan_build,
)
from jobs.assess import assess, resolve_checkpoint
from jobs.config import ConfigError, load_config
from jobs.trajectories import read_trajectories
from tests.conftest import ROOT

pytestmark = pytest.mark.docker
TAG = "aml-rl:test"


@pytest.fixture(scope="session")
def client():
    return docker_client()


@pytest.fixture(scope="session")
def image(client):
    result = build_image(BuildOptions(tag=TAG), client=client)
    return result


def writable(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)  # the image runs as uid 1000, not as the test's user
    return path


def run_once(
    client,
    command: list[str],
    volumes: dict | None = None,
    environment: dict | None = None,
    timeout: int = 300,
    image: str = TAG,
):
    """Run ``command`` in a fresh container of the test image; (exit code, output)."""
    container = client.containers.run(
        image,
        command,
        volumes=volumes or {},
        environment=environment or {},
        detach=True,
        shm_size="512m",
    )
    try:
        code = container.wait(timeout=timeout)["StatusCode"]
        return code, container.logs().decode()
    finally:
        container.remove(force=True)


def test_image_is_labelled_non_root_and_pins_the_hosts_ray(image, client):
    import ray

    attrs = client.images.get(TAG).attrs
    labels = attrs["Config"]["Labels"]
    assert labels["io.aml-rl.ray-version"] == ray.__version__
    assert (
        labels["org.opencontainers.image.version"] and labels["org.opencontainers.image.revision"]
    )
    assert attrs["Config"]["User"] == "aml"
    assert attrs["Config"]["Cmd"] == ["python", "-m", "jobs.train"]
    code, out = run_once(
        client,
        [
            "python",
            "-c",
            "import ray, torch, os; print(ray.__version__, torch.version.cuda, os.getuid())",
        ],
    )
    assert code == 0 and out.split() == [ray.__version__, "None", "1000"]


@pytest.mark.parametrize("sim", ["cstr", "simple_adder", "CartPole-v1"])
def test_check_sim_passes_inside_the_image(image, client, sim):
    code, out = run_once(client, ["python", "-m", "sims.check", "--sim", sim, "--episodes", "3"])
    assert code == 0, out
    assert f"{sim}: PASS" in out


def test_smoke_training_in_the_container_lands_in_a_mounted_folder(image, client, tmp_path):
    runs = writable(tmp_path / "runs")
    code, out = run_once(
        client,
        ["python", "-m", "jobs.train", "--smoke", "--runs-dir", "/runs"],
        volumes={str(runs): {"bind": "/runs", "mode": "rw"}},
    )
    assert code == 0, out[-3000:]
    (run,) = [p.parent for p in runs.rglob("summary.json")]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["env_steps_sampled"] >= 400
    assert len(read_trajectories(run, phase="train")) > 0
    # A checkpoint written in the container restores and assesses on the host.
    result = assess(resolve_checkpoint(run), out=tmp_path / "host-assessment")
    assert result.to_json()["kpis"] == summary["assessment"]


def test_unknown_simulator_fails_in_the_container_as_on_the_host(image, client):
    with pytest.raises(ConfigError) as host:
        load_config(ROOT / "jobs" / "configs" / "cstr_ppo.yaml", ["sim=no_such_sim"])
    code, out = run_once(client, ["python", "-m", "jobs.train", "--set", "sim=no_such_sim"])
    assert code == 2
    assert str(host.value).split("cstr_ppo.yaml: ")[1] in out


def test_a_ray_version_other_than_the_images_is_refused_at_start(image, client):
    code, out = run_once(
        client,
        ["python", "-m", "jobs.train", "--smoke"],
        environment={"AML_RL_RAY_VERSION": "2.0.0"},
    )
    assert code == 2
    assert (
        "Ray version mismatch: this image was built for Ray 2.0.0" in out and "invoke build" in out
    )


def test_a_commit_touching_sims_rebuilds_only_the_code_layer(image, client):
    # A fresh edit and revision every run: the engine keeps its cache between runs, so a
    # fixed edit would find its own code layer cached the second time.
    original = (ROOT / "sims" / "cstr.py").read_bytes()
    edit = f"\n# touched {uuid.uuid4()}\n".encode()
    revision = uuid.uuid4().hex
    result = build_image(
        BuildOptions(
            tag=f"{TAG}-touched", overlay={"sims/cstr.py": original + edit}, revision=revision
        ),
        client=client,
    )
    steps = [line for line in result.log if line.startswith("Step ")]
    code_step = next(i for i, line in enumerate(steps) if "COPY --chown=aml:aml code/" in line)
    layer_steps = [i for i, line in enumerate(steps) if " : RUN " in line or " : COPY " in line]
    cached = {i for i in layer_steps if _step_was_cached(result.log, steps[i])}
    assert cached == set(layer_steps) - {code_step}, "every dependency layer comes from the cache"
    before = client.images.get(TAG).attrs["RootFS"]["Layers"]
    touched = client.images.get(f"{TAG}-touched").attrs
    after = touched["RootFS"]["Layers"]
    assert after[:-1] == before[:-1] and after[-1] != before[-1]
    assert touched["Config"]["Labels"]["org.opencontainers.image.revision"] == revision
    print(f"code-only rebuild: {result.seconds:.1f} s")
    client.api.remove_image(f"{TAG}-touched", force=True)


def _step_was_cached(log: list[str], step: str) -> bool:
    start = log.index(step)
    following = log[start + 1 : start + 3]
    return any("Using cache" in line for line in following)


def test_a_failing_build_exits_with_the_failing_steps_output(image, client):
    import io

    # The base the image builds on, with every python3 removed. Not the test image: that
    # changes with every commit, and each change would leave a new builder layer behind.
    base = plan_build(client, BuildOptions()).options.base_image
    broken = "aml-rl/test-no-python-base"
    dockerfile = f"FROM {base}\nRUN rm -f /usr/bin/python3* /usr/local/bin/python3*\n".encode()
    client.images.build(fileobj=io.BytesIO(dockerfile), tag=broken, rm=True)
    containers_before = {c.id for c in client.containers.list(all=True)}
    with pytest.raises(BuildFailed) as failed:
        build_image(BuildOptions(tag=f"{TAG}-broken", base_image=broken), client=client)
    # The failed step's container is removed, not left behind for every failed build.
    assert {c.id for c in client.containers.list(all=True)} == containers_before
    assert "python3 -m venv /opt/venv" in failed.value.step
    assert "python3: not found" in failed.value.output
    assert str(failed.value).startswith("docker build failed at Step ")


def test_no_engine_gives_one_message_saying_how_to_start_one(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(
        ImageError,
        match=r"no Docker engine answers at unix:///nonexistent/docker\.sock .*start one: `sudo dockerd &`",
    ):
        docker_client(timeout=2)


def _exec_detached(client, container, command: list[str], environment: dict) -> str:
    exec_id = client.api.exec_create(container.id, command, environment=environment)["Id"]
    client.api.exec_start(exec_id, detach=True)
    return exec_id


def _python(container, code: str) -> str:
    result = container.exec_run(["python", "-c", code])
    assert result.exit_code == 0, result.output.decode()
    return result.output.decode().strip()


ALIVE_NODES = "import ray; ray.init(address='auto', logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"


def wait_for_nodes(head, expected: int, timeout_s: float = 120) -> None:
    """Until the Ray cluster the ``head`` container started has ``expected`` alive nodes."""
    deadline = time.monotonic() + timeout_s
    while True:
        said = head.exec_run(["python", "-c", ALIVE_NODES]).output.decode().splitlines()
        if said[-1:] == [str(expected)]:  # the count, after any line Ray logs first
            return
        assert time.monotonic() < deadline, f"the {expected}-node cluster did not form"
        time.sleep(2)


def test_three_node_cluster_spreads_env_runners_and_survives_losing_a_worker(
    image, client, tmp_path
):
    runs = writable(tmp_path / "runs")
    network = client.networks.create(f"aml-rl-test-{os.getpid()}", driver="bridge")
    common = {
        "detach": True,
        "network": network.name,
        "shm_size": "512m",
        "volumes": {str(runs): {"bind": "/runs", "mode": "rw"}},
    }
    containers = []
    try:
        head = client.containers.run(
            TAG,
            [
                "ray",
                "start",
                "--head",
                "--port=6379",
                "--num-cpus=1",
                "--disable-usage-stats",
                "--block",
            ],
            name=f"aml-rl-head-{os.getpid()}",
            **common,
        )
        containers.append(head)
        workers = [
            client.containers.run(
                TAG,
                ["ray", "start", f"--address={head.name}:6379", "--num-cpus=1", "--block"],
                # how long a worker's Ray waits for a lost head to come back (Ray's default
                # 60 s) before it leaves: the same exit at the end of this test, sooner
                environment={"RAY_gcs_rpc_server_reconnect_timeout_s": "10"},
                **common,
            )
            for _ in range(2)
        ]
        containers += workers
        wait_for_nodes(head, 3)

        command = ["python", "-m", "jobs.train", "--smoke", "--runs-dir", "/runs",
                   "--set", "env_runners.num_env_runners=2", "--set", "stop.max_env_steps=8000",
                   "--set", "checkpoints.every_iterations=5"]  # fmt: skip
        driver = _exec_detached(client, head, command, {"RAY_ADDRESS": "auto"})

        def iterations() -> int:
            files = list(runs.rglob("metrics.jsonl"))
            return len(files[0].read_text().splitlines()) if files else 0

        deadline = time.monotonic() + 240
        while iterations() < 3:
            assert time.monotonic() < deadline, "training did not start on the cluster"
            time.sleep(1)
        placement = json.loads(_python(head, (
            "import json, ray; from ray.util.state import list_actors; ray.init(address='auto', logging_level='ERROR');"
            "ips = {n['NodeID']: n['NodeManagerAddress'] for n in ray.nodes()};"
            "print(json.dumps([ips[a.node_id] for a in list_actors(filters=[('class_name', '=', 'SingleAgentEnvRunner'), ('state', '=', 'ALIVE')])]))"
        )))  # fmt: skip
        assert len(set(placement)) >= 2, f"env runners on {placement}"
        worker_ips = {
            w.id: client.api.inspect_container(w.id)["NetworkSettings"]["Networks"][network.name][
                "IPAddress"
            ]
            for w in workers
        }
        victim = next(w for w in workers if worker_ips[w.id] in placement)
        victim.kill()  # a node is lost mid-training

        deadline = time.monotonic() + 400
        while client.api.exec_inspect(driver)["Running"]:
            assert time.monotonic() < deadline, (
                "training on the cluster did not finish after losing a node"
            )
            time.sleep(2)
        assert client.api.exec_inspect(driver)["ExitCode"] == 0, head.logs().decode()[-3000:]
        (run,) = [p.parent for p in runs.rglob("summary.json")]
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["env_steps_sampled"] >= 8000
        assert summary["assessment"]["agent"]["return"] > 0
        result = assess(resolve_checkpoint(run), out=tmp_path / "assessment")
        assert result.to_json()["kpis"] == summary["assessment"]
        # The command on the head only: the job ends with it, and the head's Ray goes; the
        # workers Azure ML started (`ray start --block`) leave with it.
        head.kill()
        survivor = next(w for w in workers if w.id != victim.id)
        left = survivor.wait(timeout=45)
        assert left["StatusCode"] in (0, 1), survivor.logs().decode()[-2000:]
    finally:
        for container in containers:
            container.remove(force=True)
        network.remove()


STAGED_MARK = """
import pathlib as _pathlib, socket as _socket
_pathlib.Path("/runs", "imported-" + _socket.gethostname()).write_text(__file__)
"""


def test_every_nodes_command_ends_with_the_driver_and_workers_import_the_staged_code(
    image, client, tmp_path
):
    """Azure ML runs the command on every node, and may keep the head's Ray up until every
    node's command has ended: the workers must leave on the driver's word, not on the head's
    Ray going. The driver runs from the job's staged code, in which one module changed; the
    worker nodes, whose image holds the old one, must import the staged one."""
    runs = writable(tmp_path / "runs")
    job = tmp_path / "job"
    for package in ("sims", "jobs"):
        shutil.copytree(ROOT / package, job / package, ignore=shutil.ignore_patterns("__pycache__"))
    cstr = job / "sims" / "cstr.py"
    cstr.write_text(cstr.read_text() + STAGED_MARK)
    for path in [job, *job.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # the image runs as uid 1000
    network = client.networks.create(f"aml-rl-every-{os.getpid()}", driver="bridge")
    common = {"detach": True, "network": network.name, "shm_size": "512m",
              "volumes": {str(runs): {"bind": "/runs", "mode": "rw"},
                          str(job): {"bind": "/job", "mode": "ro"}}}  # fmt: skip
    containers = []
    try:
        # the head's Ray outlives the driver (the worst case); no env runner on it
        head = client.containers.run(
            TAG, ["ray", "start", "--head", "--port=6379", "--num-cpus=0",
                  "--disable-usage-stats", "--block"],
            name=f"aml-rl-every-head-{os.getpid()}", **common,
        )  # fmt: skip
        containers.append(head)
        address = f"{head.name}:6379"
        # as Azure ML runs a job on every node: Ray joins the head, then the job's command
        command = (f"ray start --address={address} --num-cpus=1 && "
                   "exec python -m jobs.train --smoke --run-dir /runs/run")  # fmt: skip
        workers = [
            client.containers.run(
                TAG,
                ["bash", "-c", command],
                environment={"AZUREML_CR_NODE_RANK": str(rank), "RAY_ADDRESS": address},
                **common,
            )
            for rank in (1, 2)
        ]
        containers += workers
        wait_for_nodes(head, 3)
        driver = head.exec_run(
            ["python", "-m", "jobs.train", "--smoke", "--run-dir", "/runs/run",
             "--set", "env_runners.num_env_runners=2", "--set", "stop.max_env_steps=1600"],
            environment={"RAY_ADDRESS": "auto", "AZUREML_CR_NODE_RANK": "0"}, workdir="/job",
        )  # fmt: skip
        assert driver.exit_code == 0, driver.output.decode()[-3000:]
        ended = time.monotonic()
        for worker in workers:
            left = worker.wait(timeout=60)
            logs = " ".join(worker.logs().decode().split())
            assert left["StatusCode"] == 0, logs[-2000:]
            assert "the driver says the training is over; leaving" in logs
        assert time.monotonic() - ended < 60
        head.reload()
        assert head.status == "running", "the head's Ray stayed up: the workers left on its word"

        hosts = {w.attrs["Config"]["Hostname"] for w in workers}
        summary = json.loads((runs / "run" / "summary.json").read_text())
        placed = {r["host"] for r in summary["layout"]["env_runner_nodes"]}
        assert placed == hosts, f"env runners on {placed}, workers {hosts}"
        for host in hosts:  # each worker imported the staged module, not the image's /app
            imported = (runs / f"imported-{host}").read_text()
            assert imported.endswith("sims/cstr.py") and not imported.startswith("/app/")
    finally:
        for container in containers:
            container.remove(force=True)
        network.remove()


@pytest.mark.slow
def test_gpu_image_builds_and_its_torch_is_a_cuda_build(client):
    result = build_image(BuildOptions(gpu=True, tag=f"{TAG}-gpu"), client=client)
    code, out = run_once(
        client, ["python", "-c", "import torch; print(torch.version.cuda)"], image=result.tag
    )
    assert code == 0, out
    assert out.strip() not in ("", "None"), f"torch in the GPU image is not a CUDA build: {out}"
    labels = client.images.get(result.tag).attrs["Config"]["Labels"]
    assert labels["io.aml-rl.torch-flavour"] == "cuda"


def test_a_simulator_with_model_code_outside_sims_runs_in_the_image(image, client, model_project):
    """sims/external.yaml's declaration reaches the image: check-sim passes on it there."""
    tag = f"aml-rl:test-model-{uuid.uuid4().hex[:6]}"
    build_image(BuildOptions(tag=tag, root=model_project), client=client)
    try:
        code, out = run_once(
            client, ["python", "-m", "sims.check", "--sim", "tank", "--episodes", "2"], image=tag
        )
    finally:
        client.images.remove(tag, force=True)
    assert code == 0, out
    assert "tank: PASS" in out


NODE_SIM = """\
const fs = require("fs");
const readline = require("readline");
const out = (message) => fs.writeSync(4, JSON.stringify(message) + "\\n");
out({protocol: 1, name: "nodesim"});
let value = 0;
readline.createInterface({input: fs.createReadStream(null, {fd: 3})}).on("line", (line) => {
  const message = JSON.parse(line);
  if (message.op === "close") process.exit(0);
  if (message.op === "reset") value = Math.round(message.config.initial_value);
  else value += Math.round(message.action.addend);
  out({states: {value: value}, terminated: false, truncated: false});
});
"""

NODE_SPEC = """\
import dataclasses

from sims import simple_adder
from sims.process import ProcessSim

SPEC = dataclasses.replace(
    simple_adder.SPEC, name="nodesim", env_id="user/NodeSim-v0",
    simulator=ProcessSim(name="nodesim", command=("node", "{package}/sim.js"),
                         parameters={"initial_value": 25.0}),
)
"""


@pytest.mark.skipif(not shutil.which("node"), reason="the client side needs node for this case")
def test_a_simulator_whose_runtime_the_image_lacks_is_named_before_the_job(
    image, client, model_project, tmp_path
):
    """A Node simulator passes every check on a workstation that has node; the training
    image has none, and the job would fail at every reset."""
    from client.staging import check_in_image, stage_code
    from client.workspace import SubmitError

    package = tmp_path / "nodesim"
    package.mkdir()
    (package / "sim.js").write_text(NODE_SIM)
    (model_project / "sims" / "nodesim.py").write_text(NODE_SPEC)
    (model_project / "sims" / "lessons" / "nodesim.yaml").write_text(
        (ROOT / "sims" / "lessons" / "simple_adder.yaml").read_text()
    )
    cfg = load_config(ROOT / "jobs" / "configs" / "simple_adder_ppo.yaml",
                      ["sim=nodesim", f"sim_package={package}"])  # fmt: skip
    code = stage_code(cfg, "r-node", root=tmp_path / ".aml", project=model_project)  # host: ok
    with pytest.raises(
        SubmitError,
        match=r"in the training image aml-rl:test, the job's code cannot run simulator 'nodesim': "
        r".*cannot start node: No such file or directory.*add it to the image",
    ):
        check_in_image(code, cfg, TAG, client=client)


def test_the_c_simulator_is_checked_in_the_image_and_passes(image, client, tmp_path):
    from client.staging import check_in_image, stage_code
    from tests.sims.test_process import build_c_adder

    build_c_adder(tmp_path / "pkg")
    cfg = load_config(ROOT / "jobs" / "configs" / "simple_adder_ppo.yaml",
                      ["sim=simple_adder_c", f"sim_package={tmp_path / 'pkg'}"])  # fmt: skip
    code = stage_code(cfg, "r-c", root=tmp_path / ".aml")
    said = check_in_image(code, cfg, TAG, client=client)
    assert said == f"checked in the training image {TAG}: the simulator loads, resets and steps"
    assert check_in_image(code, cfg, "nowhere.azurecr.io/aml-rl:rocm", client=client) == (
        "not checked in the training image: nowhere.azurecr.io/aml-rl:rocm is not on this "
        "machine (build it with `invoke build`, and the simulator is checked in it before "
        "every submission)"
    )
