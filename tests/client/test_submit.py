"""Azure ML submission at the SDK and HTTP boundary: no Azure, no network."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray
import requests
from azure.ai.ml import RayDistribution, load_job
from azure.core.exceptions import ClientAuthenticationError
from azure.core.pipeline.transport import RequestsTransport

from client import results, staging, workspace
from client import submit as sub
from client.vm_sizes import node_of
from jobs.cluster import RANK_VARIABLES, node_rank, wait_as_worker
from jobs.config import CONFIGS, load_config
from jobs.layout import Node
from jobs.rundir import RunError
from jobs.snapshot import git_revision
from jobs.train import main
from tests.client.conftest import WORKSPACE, Token, WorkspaceStorage
from tests.conftest import ROOT


def cstr():
    return load_config(CONFIGS / "cstr_ppo.yaml")


def test_one_cpu_node(target, tmp_path):
    job = sub.build_job(cstr(), target, nodes=1, run_id="20261121-000000-abcd", code=tmp_path)
    assert job.compute == "cpu-cluster" and job.resources.instance_count == 1
    assert job.environment.image == "amlrldevacr.azurecr.io/aml-rl:cpu"
    assert job.distribution is None and "RAY_ADDRESS" not in job.environment_variables
    assert (
        job.outputs["run"].path
        == "azureml://datastores/outputs/paths/cstr_ppo/20261121-000000-abcd/"
    )
    assert job.outputs["run"].mode == "rw_mount"
    assert job.limits.timeout == 3600 + sub.WALL_MARGIN_S  # the config's max_wall_s, a cap
    assert job.command == "python -m jobs.train --config experiment.yaml --run-dir ${{outputs.run}}"
    assert job.tags["config_digest"] == cstr().digest() and job.tags["sim"] == "cstr"
    assert len(job.tags["git_revision"]) == 40
    assert job.experiment_name == "cstr_ppo" and job.display_name == "cstr_ppo-20261121-000000-abcd"


def test_four_gpu_nodes_get_a_ray_cluster(target, tmp_path):
    job = sub.build_job(cstr(), target, nodes=4, gpu=True, code=tmp_path)
    assert job.compute == "gpu-cluster" and job.resources.instance_count == 4
    assert job.environment.image == "amlrldevacr.azurecr.io/aml-rl:cuda"
    assert isinstance(job.distribution, RayDistribution)
    assert job.environment_variables["RAY_ADDRESS"] == "auto"
    # the driver waits for all four, then sizes the layout from what Ray reports
    assert job.environment_variables["AML_RL_NODES"] == "4"


def test_the_dry_run_for_four_gpu_nodes_carries_the_layout_it_expects(target, tmp_path):
    messages: list[str] = []
    sub.submit_experiment(
        target, nodes=4, gpu=True, dry_run=True, out=tmp_path / "job.yaml",
        staging=tmp_path / ".aml", echo=messages.append,
    )  # fmt: skip
    # 4 x Standard_NC4as_T4_v3: 4 vCPUs and one T4 each; a learner per GPU, one CPU for the
    # driver, the rest sample ahead of the learners
    assert messages[0] == (
        "layout expected on 4 x Standard_NC4as_T4_v3: 11 env runners x 1 envs, sampling ahead, "
        "4 learners on 1 GPU each (4 nodes: 16 CPUs, 4 GPUs)"
    )
    job = load_job(tmp_path / "job.yaml")
    assert job.tags["expected_env_runners"] == "11 x 1"
    assert job.tags["expected_learners"] == "4 x 1 GPU"
    assert job.environment_variables["AML_RL_NODES"] == "4"
    staged = load_config(next((tmp_path / ".aml").iterdir()) / "code" / "experiment.yaml")
    assert staged.env_runners.num_env_runners == "auto"  # resolved again once nodes joined


def test_an_explicit_layout_that_leaves_nodes_idle_is_warned_about_before_sending(target, tmp_path):
    messages: list[str] = []
    sub.submit_experiment(
        target, sets=["env_runners.num_env_runners=1"], nodes=4, dry_run=True,
        out=tmp_path / "job.yaml", staging=tmp_path / ".aml", echo=messages.append,
    )  # fmt: skip
    assert messages[0].splitlines()[1] == (
        "layout: warning: env_runners.num_env_runners: 1 leaves 14 of the cluster's 16 CPUs "
        "idle, more than a node's worth (4); set it to auto (it would be 15), or ask for fewer "
        "nodes"
    )


def test_a_vm_size_whose_name_does_not_tell_is_sized_on_the_cluster(target, tmp_path):
    target.values["cpu_vm_size"] = "Standard_DS3_v2"  # 4 vCPUs, but not by its name
    layout, line = sub.expected_layout(cstr(), target, nodes=2, gpu=False)
    assert layout is None
    assert line == (
        "layout: sized on the cluster once its 2 node(s) join; VM size 'Standard_DS3_v2' "
        "does not say its vCPUs and GPUs"
    )


@pytest.mark.parametrize(
    ("vm_size", "node"),
    [
        ("Standard_D4s_v3", Node(4)),
        ("Standard_F72s_v2", None),  # before the v3 naming
        ("Standard_E96ads_v5", Node(96)),
        ("Standard_NC24ads_A100_v4", Node(24, 1)),
        ("Standard_ND96isr_H100_v5", Node(96, 8)),
        ("Standard_NV36ads_A10_v5", None),  # a GPU size not in the table: not guessed
        ("Standard_DS3_v2", None),
    ],
)
def test_a_nodes_cpus_and_gpus_are_read_from_its_vm_size(vm_size, node):
    assert node_of(vm_size) == node


def test_staged_code_is_sims_jobs_and_the_resolved_config(tmp_path):
    cfg = load_config(CONFIGS / "cstr_ppo.yaml", ["training.lr=1e-4"])
    code = staging.stage_code(cfg, "r1", root=tmp_path)
    assert sorted(p.name for p in code.iterdir()) == ["experiment.yaml", "jobs", "sims"]
    assert load_config(code / "experiment.yaml") == cfg
    assert not list(code.rglob("__pycache__"))


def test_dry_run_yaml_loads_back_as_the_same_job(target, tmp_path):
    job = sub.build_job(
        cstr(), target, nodes=2, run_id="r1", code=staging.stage_code(cstr(), "r1", root=tmp_path)
    )
    path = sub.write_yaml(job, tmp_path / "job.yaml")
    loaded = load_job(path)  # what `az ml job create -f` validates
    assert loaded.type == "command"
    for attribute in (
        "command",
        "compute",
        "experiment_name",
        "display_name",
        "tags",
        "environment_variables",
    ):
        assert getattr(loaded, attribute) == getattr(job, attribute), attribute
    assert loaded.resources.instance_count == 2 and loaded.distribution.type == "ray"
    assert loaded.environment.image == job.environment.image
    assert (
        loaded.outputs["run"].path == job.outputs["run"].path
        and loaded.outputs["run"].mode == "rw_mount"
    )
    assert loaded.limits.timeout == job.limits.timeout
    assert Path(loaded.code) == Path(job.code)


def test_show_target_layers_outputs_environment_and_flags(outputs_file):
    target = workspace.resolve_target(
        outputs_file,
        environ={"AZUREML_WORKSPACE_NAME": "ws-from-env"},
        flags={"resource_group": "rg-flag"},
    )
    text = target.describe()
    assert f"subscription_id        sub-1  [{outputs_file}]" in text
    assert "workspace_name         ws-from-env  [$AZUREML_WORKSPACE_NAME]" in text
    assert "resource_group         rg-flag  [--resource-group]" in text


def test_a_missing_workspace_says_where_to_set_it(tmp_path):
    target = workspace.resolve_target(None, environ={"AZURE_SUBSCRIPTION_ID": "s"}, stack="nope")
    with pytest.raises(
        workspace.SubmitError,
        match=r"missing resource_group, workspace_name\. Run `pulumi up` in infra/ .*resource_group: \$AZURE_RESOURCE_GROUP or --resource-group",
    ):
        workspace.ml_client(target, cred=object())
    with pytest.raises(
        workspace.SubmitError,
        match=r"missing datastore, cpu_cluster, registry_login_server\. .*set datastore: \$AZUREML_DATASTORE; cpu_cluster: \$AZUREML_CPU_CLUSTER; registry_login_server: \$AZURE_CONTAINER_REGISTRY$",
    ):
        sub.build_job(cstr(), target, code=tmp_path)  # no --datastore flag exists to suggest


def test_without_a_login_a_task_prints_one_line_not_azure_identitys_warnings(tmp_path):
    """azure-identity warns once per credential it tries (13 lines); the task's own line says
    all of it."""
    import subprocess
    import sys

    from tests.client.conftest import OUTPUTS

    (tmp_path / "o.json").write_text(json.dumps(OUTPUTS))
    bare = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(ROOT), "status", "job1",
         "--outputs", "o.json"],
        cwd=tmp_path, env=bare, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 2, out
    assert out.splitlines() == [out] and out.startswith("not logged in to Azure: run `az login`")


def test_missing_credentials_say_how_to_log_in(monkeypatch):
    class NoLogin:
        def get_token(self, *scopes, **kwargs):
            raise ClientAuthenticationError(
                "DefaultAzureCredential failed to retrieve a token from the included credentials."
            )

    import azure.identity

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", NoLogin)
    with pytest.raises(
        workspace.SubmitError,
        match=r"not logged in to Azure: run `az login` .*DefaultAzureCredential failed",
    ):
        workspace.credential()


def test_submission_sends_the_job_to_the_workspace(target, arm, ml, tmp_path):
    workspace = WORKSPACE
    # A code asset that exists already: uploading local code is azure-ai-ml's own path.
    job = sub.build_job(
        cstr(), target, nodes=4, gpu=True, run_id="r4", code=f"{workspace}/codes/aml-rl/versions/1"
    )
    created = sub.submit(job, ml, yaml_path=tmp_path / "job.yaml")
    (put,) = [r for r in arm.sent if f"{workspace}/jobs/" in r.url]
    assert put.method == "PUT" and put.url.startswith("https://management.azure.com")
    body = json.loads(put.body)["properties"]
    assert body["jobType"] == "Command" and body["experimentName"] == "cstr_ppo"
    assert body["computeId"] == f"{workspace}/computes/gpu-cluster"
    assert (
        body["resources"]["instanceCount"] == 4
        and body["distribution"]["distributionType"] == "Ray"
    )
    assert body["outputs"]["run"] == {
        "uri": "azureml://datastores/outputs/paths/cstr_ppo/r4/",
        "mode": "ReadWriteMount",
        "jobOutputType": "uri_folder",
    }
    assert body["environmentVariables"] == {
        "AML_RL_RUN_ID": "r4",
        "AML_RL_REVISION": git_revision(),  # the code snapshot has no .git
        "RAY_ADDRESS": "auto",
        "AML_RL_NODES": "4",
    }
    assert body["command"] == sub.ENTRYPOINT
    assert body["tags"]["config_digest"] == cstr().digest()
    assert body["limits"]["timeout"] == "PT1H30M"
    assert body["environmentId"].startswith(f"{workspace}/environments/")
    assert created.name == put.url.split("?")[0].rsplit("/", 1)[-1]
    assert {r.headers["Authorization"] for r in arm.sent} == {
        "Bearer token-for:https://management.azure.com/.default"
    }


def failing_run_history(arm, message: str) -> None:
    """The service as a job that failed looks from --wait: its run history says Failed."""
    arm.resources[WORKSPACE]["properties"]["discoveryUrl"] = (
        "https://westeurope.api.azureml.ms/discovery"
    )
    api = "https://westeurope.api.azureml.ms"

    def answer(request):
        url = request.url.split("?")[0]
        if url.endswith("/discovery"):
            return 200, {"api": api, "history": api}
        if "/history/" in url and url.endswith("/details"):
            name = url.split("/runs/")[1].split("/")[0]
            arm.resources[f"{WORKSPACE}/jobs/{name}"]["properties"]["status"] = "Failed"
            error = {"error": {"code": "UserError", "message": message}}
            return 200, {"runId": name, "status": "Failed", "error": error, "logFiles": {}}
        return 404, {"detail": "not here"}

    arm.score = answer


def test_wait_on_a_job_that_fails_names_its_error_and_logs(target, arm, ml, tmp_path, capsys):
    failing_run_history(arm, "simulator 'tank' kept failing, so the run stopped")
    job = sub.build_job(
        cstr(), target, nodes=1, run_id="r5", code=f"{WORKSPACE}/codes/aml-rl/versions/1"
    )
    with pytest.raises(sub.JobFailed) as failed:
        sub.submit(job, ml, wait=True, yaml_path=tmp_path / "job.yaml")
    name = failed.value.job.name
    assert str(failed.value) == (
        f"job {name} ended Failed: UserError: simulator 'tank' kept failing, so the run stopped. "
        f"Its logs: `az ml job download --name {name} --all`; its page: "
        f"https://ml.azure.com/runs/{name}"
    )


def test_submit_wait_records_a_failed_job_for_the_workflow(target, monkeypatch, tmp_path):
    """`invoke submit --wait --record job.json` on a job that fails: one message, exit 2,
    and job.json written, which the workflow needs to fetch the job's logs."""
    from types import SimpleNamespace

    failed = SimpleNamespace(name="polite_carrot", status="Failed", studio_url="https://ml/x")

    def fails(job, client, wait=False, yaml_path=None):
        raise sub.JobFailed("job polite_carrot ended Failed: UserError: boom", failed)

    monkeypatch.setattr(sub, "submit", fails)
    record = tmp_path / "job.json"
    with pytest.raises(
        workspace.SubmitError, match=r"job polite_carrot ended Failed: UserError: boom"
    ):
        sub.submit_experiment(
            target, wait=True, record=record, staging=tmp_path / "staging",
            image="acr.azurecr.io/aml-rl:1", client=object(),
        )  # fmt: skip
    assert json.loads(record.read_text())["name"] == "polite_carrot"
    assert json.loads(record.read_text())["status"] == "Failed"


@pytest.mark.parametrize(
    ("environ", "rank", "variable"),
    [
        ({}, 0, None),
        ({"AZUREML_CR_NODE_RANK": "2"}, 2, "AZUREML_CR_NODE_RANK"),
        ({"AZUREML_CR_NODE_RANK": "0", "NODE_RANK": "3"}, 0, "AZUREML_CR_NODE_RANK"),
        ({"NODE_RANK": "1", "OMPI_COMM_WORLD_RANK": "0"}, 1, "NODE_RANK"),
        ({"OMPI_COMM_WORLD_RANK": "4"}, 4, "OMPI_COMM_WORLD_RANK"),
        ({"AZUREML_NODE_RANK": "1", "NODE_RANK": "0"}, 1, "AZUREML_NODE_RANK"),
        ({"AZUREML_CR_NODE_RANK": " "}, 0, None),
    ],
)
def test_the_node_rank_comes_from_azure_mls_own_variable_first(
    monkeypatch, environ, rank, variable
):
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert node_rank() == (rank, variable)


def test_a_rank_that_is_not_a_number_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("AZUREML_CR_NODE_RANK", "head")
    with pytest.raises(RunError, match=r"AZUREML_CR_NODE_RANK='head' is not a node rank"):
        node_rank()
    assert main(["--smoke", "--run-dir", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists() and not ray.is_initialized()


HEAD = """
import ray, time
context = ray.init(num_cpus=1, include_dashboard=False)
print(context.address_info["gcs_address"], flush=True)
time.sleep(600)
"""


def test_a_worker_never_runs_a_driver_and_leaves_when_the_heads_ray_goes(tmp_path):
    """Real Ray: a head in its own process, and `python -m jobs.train` as node 1."""
    head = subprocess.Popen(
        [sys.executable, "-c", HEAD], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        address = head.stdout.readline().strip()
        assert address, "the head did not start"
        worker = subprocess.Popen(
            [sys.executable, "-m", "jobs.train", "--smoke", "--run-dir", str(tmp_path / "run")],
            cwd=ROOT,
            env={**os.environ, "AZUREML_CR_NODE_RANK": "1", "RAY_ADDRESS": address},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(8)
        assert worker.poll() is None, "the worker stays while the head's Ray answers"
        assert not (tmp_path / "run").exists(), "a worker writes nothing to the run"
    finally:
        os.killpg(head.pid, signal.SIGKILL)  # the head's Ray goes with its process group
        head.wait()
    out, _ = worker.communicate(timeout=60)
    flat = " ".join(out.split())
    assert worker.returncode == 0, out[-3000:]
    assert "node 1 (from AZUREML_CR_NODE_RANK): a Ray worker; the driver runs on the head" in flat
    assert f"node 1: the head's Ray cluster is at {address}" in flat
    assert "node 1: the head's Ray cluster is gone (the run ended there); leaving" in flat


def test_a_worker_whose_head_never_answers_leaves_after_a_bounded_wait(capsys):
    assert (
        wait_as_worker(1, "AZUREML_CR_NODE_RANK", "127.0.0.1:9", poll_s=0.05, join_timeout_s=0.2)
        == 1
    )
    out = " ".join(capsys.readouterr().out.split())
    assert "no head Ray cluster answered at 127.0.0.1:9 in 0 s; leaving" in out


def run_head(run_dir: Path, *sets: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "jobs.train", "--smoke", "--run-dir", str(run_dir)]
    for item in sets:
        args += ["--set", item]
    env = {**os.environ, "AZUREML_CR_NODE_RANK": "0"}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)


def test_restart_resumes_from_the_output_folder_and_a_fresh_folder_starts_fresh(tmp_path):
    run_dir = tmp_path / "outputs" / "cstr_ppo" / "r1"
    first = run_head(run_dir)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "resuming after a restart" not in first.stdout
    assert "node 0 (from AZUREML_CR_NODE_RANK): the head; it runs the driver" in first.stdout
    before = json.loads((run_dir / "summary.json").read_text())
    assert before["sessions"] == 1
    again = run_head(run_dir, "stop.max_env_steps=800")  # the restarted job, with budget left
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "already holds a checkpoint: resuming after a restart" in again.stdout
    after = json.loads((run_dir / "summary.json").read_text())
    assert (
        after["sessions"] == 2 and after["env_steps_sampled"] >= 800 > before["env_steps_sampled"]
    )


def test_model_registration_carries_provenance():
    job = SimpleNamespace(
        name="job-1",
        status="Completed",
        experiment_name="cstr_ppo",
        tags={"sim": "cstr", "config_digest": "abc", "git_revision": "f00"},
    )
    model = results.model_for_job(
        job,
        {"final_checkpoint": "checkpoints/iter-000250"},
        {"env_runners/episode_return_mean": 88.46},
    )
    assert model.path == "azureml://jobs/job-1/outputs/run/paths/checkpoints/iter-000250"
    assert model.properties == {
        "sim": "cstr", "config_digest": "abc", "git_revision": "f00", "job": "job-1",
        "checkpoint": "checkpoints/iter-000250", "final/env_runners/episode_return_mean": "88.46",
    }  # fmt: skip
    with pytest.raises(
        workspace.SubmitError, match=r"job job-1 recorded no final checkpoint \(status Completed\)"
    ):
        results.model_for_job(job, {}, {})


def tank_config(tmp_path: Path):
    path = tmp_path / "tank.yaml"
    path.write_text("experiment: tank_ppo\nsim: tank\n")
    return load_config(path)


def test_declared_model_code_is_staged_and_the_simulator_loads_from_it(model_project, tmp_path):
    cfg = tank_config(tmp_path)
    code = staging.stage_code(cfg, "r1", root=tmp_path / ".aml", project=model_project)
    assert (code / "vendor" / "reactor_model" / "__init__.py").is_file()
    assert (code / "vendor" / "reactor_model" / "outflow.csv").is_file()
    assert (code / "sims" / "tank.py").is_file() and (code / "sims" / "external.yaml").is_file()
    assert not (code / "tests").exists()


def test_model_code_that_is_not_declared_fails_the_dry_run_with_how_to_fix(
    model_project, tmp_path, target
):
    (model_project / "sims" / "external.yaml").write_text("include: []\npython_path: []\n")
    cfg = tank_config(tmp_path)  # it loads here: reactor_model is on this process's sys.path
    with pytest.raises(
        workspace.SubmitError,
        match=r"the job's code \(.*code\) cannot load simulator 'tank': .*ModuleNotFoundError: No module named 'reactor_model'.*declare it in sims/external.yaml.*The job carries only sims/, jobs/ and what sims/external.yaml declares",
    ):
        staging.stage_code(cfg, "r2", root=tmp_path / ".aml", project=model_project)
    assert not (tmp_path / ".aml" / "r2").exists(), "a failed staging leaves nothing behind"


def test_a_data_file_left_out_of_the_declaration_is_caught_too(model_project, tmp_path):
    (model_project / "sims" / "external.yaml").write_text(
        "include: [vendor/reactor_model/__init__.py]\npython_path: [vendor]\n"
    )
    with pytest.raises(
        workspace.SubmitError,
        match=r"cannot load simulator 'tank': .*raised FileNotFoundError: .*outflow\.csv",
    ):
        staging.stage_code(
            tank_config(tmp_path), "r3", root=tmp_path / ".aml", project=model_project
        )


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        (
            "include: [vendor/nope]\n",
            r"external\.yaml: include\[0\]: 'vendor/nope' does not exist under .*project; fix the path",
        ),
        (
            "include: []\npython_path: [vendor]\n",
            r"external\.yaml: python_path\[0\]: 'vendor' is not shipped; list it, or the folders under it that hold your code, under include",
        ),
        (
            "include: [../secrets]\n",
            r"external\.yaml: include: '\.\./secrets' must be a path inside the project",
        ),
        (
            "inclde: [vendor]\n",
            r"external\.yaml: inclde: unknown key; remove it or check its spelling",
        ),
    ],
)
def test_a_bad_declaration_names_the_file_and_key(model_project, tmp_path, declaration, message):
    (model_project / "sims" / "external.yaml").write_text(declaration)
    with pytest.raises(workspace.SubmitError, match=message):
        staging.stage_code(cstr(), "r4", root=tmp_path / ".aml", project=model_project)


def test_dry_run_of_the_default_config_writes_a_job_that_loads_back(target, tmp_path):
    messages: list[str] = []
    sub.submit_experiment(
        target,
        dry_run=True,
        out=tmp_path / "job.yaml",
        staging=tmp_path / ".aml",
        echo=messages.append,
    )
    layout, checked, wrote = messages
    assert layout == (
        "layout expected on 1 x Standard_D4s_v3: 3 env runners x 3 envs, sampling ahead, "
        "learner in the driver on CPU (1 node: 4 CPUs)"
    )
    assert checked.startswith(
        ("checked in the training image ", "not checked in the training image: ")
    )
    assert wrote == (
        f"wrote {tmp_path / 'job.yaml'}; submit it with `az ml job create -f {tmp_path / 'job.yaml'}`"
    )
    assert load_job(tmp_path / "job.yaml").tags["sim"] == "cstr"
    (staged,) = (tmp_path / ".aml").iterdir()
    assert (staged / "code" / "experiment.yaml").is_file()


class Storage:
    """The datastore ``outputs`` behind the fake ARM, its blobs in a real Azurite; a caller
    that may not read it (``readable=False``: no Blob Data role) is refused by Azurite."""

    def __init__(
        self, arm, azurite, blobs: dict[str, bytes], readable: bool = True,
        service_fills_in: bool = True,
    ) -> None:  # fmt: skip
        self.storage = WorkspaceStorage(azurite, permissions="racwdl" if readable else "")
        for path, data in blobs.items():
            self.storage.put(path, data)
        arm.resources[f"{WORKSPACE}/datastores/outputs"] = {
            "id": f"{WORKSPACE}/datastores/outputs", "name": "outputs",
            "properties": {
                "datastoreType": "AzureBlob", "accountName": "amlrldevst", "containerName": "outputs",
                "credentials": {"credentialsType": "None"},
            },
        }  # fmt: skip
        if service_fills_in:  # else as a datastore made without them: the service passes null
            properties = arm.resources[f"{WORKSPACE}/datastores/outputs"]["properties"]
            properties.update(endpoint="core.windows.net", protocol="https")
        arm.score = self.storage.forward


def submitted_job(target, ml, tmp_path):
    code = f"{WORKSPACE}/codes/aml-rl/versions/1"
    job = sub.build_job(cstr(), target, run_id="r7", code=code)
    return sub.submit(job, ml, yaml_path=tmp_path / "job.yaml")


@pytest.mark.azurite
@pytest.mark.parametrize("service_fills_in", [True, False], ids=["https", "protocol null"])
def test_register_model_reads_the_jobs_summary_from_the_datastore_without_mlflow(
    target, arm, ml, tmp_path, service_fills_in, azurite
):
    created = submitted_job(target, ml, tmp_path)
    summary = {
        "run_id": "r7", "checkpoint": "checkpoints/iter-000250", "episode_return_mean": 88.5,
        "assessment": {"agent": {"return": 90.25, "ca_rms": 0.08}, "baseline": {"return": 80.9}},
    }  # fmt: skip
    blobs = {"/outputs/cstr_ppo/r7/summary.json": json.dumps(summary).encode()}
    Storage(arm, azurite, blobs, service_fills_in=service_fills_in)
    session = requests.Session()
    session.mount("https://", arm)
    model = results.register_model(
        ml, created.name, credential=Token(), blob_transport=RequestsTransport(session=session)
    )
    (put,) = arm.puts("/models/")
    assert put["properties"]["modelUri"] == (
        f"azureml://jobs/{created.name}/outputs/run/paths/checkpoints/iter-000250"
    )
    assert put["properties"]["properties"]["final/assessment/return"] == "90.25"
    assert put["properties"]["properties"]["checkpoint"] == "checkpoints/iter-000250"
    assert model.name == "cstr-ppo"


@pytest.mark.parametrize(
    ("blobs", "readable", "message"),
    [
        ({}, True, r"job .* wrote no summary\.json under azureml://datastores/outputs/paths/cstr_ppo/r7/; register a job that finished training"),
        ({}, False, r"403 reading amlrldevst/outputs: add your object id to the stack's dataPrincipals"),
        ({"/outputs/cstr_ppo/r7/summary.json": b"[]"}, True, r"summary\.json is not a run summary"),
    ],
)  # fmt: skip
@pytest.mark.azurite
def test_register_model_says_why_it_cannot(
    target, arm, ml, tmp_path, blobs, readable, message, azurite
):
    created = submitted_job(target, ml, tmp_path)
    Storage(arm, azurite, blobs, readable)
    session = requests.Session()
    session.mount("https://", arm)
    with pytest.raises(workspace.SubmitError, match=message):
        results.register_model(
            ml, created.name, credential=Token(), blob_transport=RequestsTransport(session=session)
        )
    assert not arm.puts("/models/")


@pytest.mark.azurite
def test_register_model_refuses_a_policy_that_does_not_beat_its_baseline(
    target, arm, ml, tmp_path, azurite
):
    from jobs.verdict import Verdict

    created = submitted_job(target, ml, tmp_path)
    losing = Verdict(
        kpi="ca_rms", agent=0.156, baseline=0.1034, higher_is_better=False, margin=0.05,
        unit="kmol/m3",
    )  # fmt: skip
    summary = {
        "run_id": "r7", "checkpoint": "checkpoints/iter-000057", "episode_return_mean": 75.0,
        "assessment": {"agent": {"return": 75.0, "ca_rms": 0.156}, "baseline": {"return": 80.9}},
        "verdict": losing.to_json(),
    }  # fmt: skip
    Storage(arm, azurite, {"/outputs/cstr_ppo/r7/summary.json": json.dumps(summary).encode()})
    session = requests.Session()
    session.mount("https://", arm)
    transport = RequestsTransport(session=session)
    with pytest.raises(
        workspace.SubmitError,
        match=rf"job {created.name}: the policy does not beat its baseline \(verdict: does NOT "
        r"beat the baseline \(ca_rms 0\.156 kmol/m3 vs baseline 0\.1034 kmol/m3, 50\.9% worse, "
        r"5% asked\)\); refusing to register it\. .*pass --allow-losing to register it anyway",
    ):
        results.register_model(ml, created.name, credential=Token(), blob_transport=transport)
    assert not arm.puts("/models/")
    results.register_model(
        ml, created.name, credential=Token(), blob_transport=transport, allow_losing=True
    )
    (put,) = arm.puts("/models/")
    assert put["properties"]["properties"]["beats_baseline"] == "false"
    assert float(put["properties"]["properties"]["final/verdict/ca_rms_improvement"]) < 0


USER_SPACE = "training.lr: {loguniform: [1.0e-5, 1.0e-3]}\ntraining.num_epochs: {choice: [5, 10]}\n"


def test_a_study_is_one_multi_node_job_running_jobs_tune_over_the_staged_space(target, tmp_path):
    from jobs.tune.run import parser

    space = tmp_path / "my_space.yaml"
    space.write_text(USER_SPACE)
    staging = tmp_path / "staging"
    out = tmp_path / "job.yaml"
    sub.submit_experiment(
        target, config=CONFIGS / "cstr_ppo.yaml", tune=space, samples=16, nodes=3,
        confirm_seeds=[1, 2], dry_run=True, out=out, staging=staging, echo=lambda _: None,
    )  # fmt: skip
    job = load_job(out)  # what `az ml job create -f` validates
    (run_id,) = [p.name for p in staging.iterdir()]
    assert job.command == (
        "python -m jobs.tune --config experiment.yaml --space space.yaml --samples 16 "
        "--study-dir ${{outputs.run}} --confirm-seeds 1,2"
    )
    assert job.resources.instance_count == 3 and job.distribution.type == "ray"
    assert job.environment_variables["RAY_ADDRESS"] == "auto"
    assert job.outputs["run"].path == (
        f"azureml://datastores/outputs/paths/cstr_ppo/study-{run_id}/"
    )
    # 16 trials, then two configs on each of two confirming seeds, one after another at worst
    assert job.limits.timeout == (16 + 4) * cstr().stop.max_wall_s + sub.WALL_MARGIN_S
    assert job.tags["study_samples"] == "16"
    code = Path(job.code)
    assert (code / "space.yaml").read_text() == USER_SPACE
    # the command is one jobs.tune accepts, and what it reads is what was staged
    args = parser().parse_args(job.command.split()[3:])
    assert (args.config, args.space, args.samples, args.confirm_seeds) == (
        Path("experiment.yaml"), Path("space.yaml"), 16, "1,2",
    )  # fmt: skip
    assert load_config(code / args.config) == cstr()


def test_a_study_with_a_bad_space_is_refused_before_anything_is_staged(target, tmp_path):
    space = tmp_path / "my_space.yaml"
    space.write_text("training.num_epochs: {choice: [0, 10]}\n")
    staging = tmp_path / "staging"
    with pytest.raises(workspace.SubmitError, match=r"my_space\.yaml: training\.num_epochs: the value 0 "
                       r"is refused by the config: .*greater than or equal to 1"):  # fmt: skip
        sub.submit_experiment(
            target, tune=space, dry_run=True, staging=staging, echo=lambda _: None
        )
    assert not staging.exists(), "a refused submission leaves no staging folder"


def test_confirming_a_study_on_its_own_seed_or_without_a_study_is_refused(target, tmp_path):
    space = tmp_path / "my_space.yaml"
    space.write_text(USER_SPACE)
    staging = tmp_path / "staging"
    seed = cstr().seed
    with pytest.raises(workspace.SubmitError, match=rf"--confirm-seeds {seed},7: {seed} is the seed "
                       r"the trials train with \(the config's seed\); confirm on others"):  # fmt: skip
        sub.submit_experiment(
            target, tune=space, confirm_seeds=[seed, 7], dry_run=True, staging=staging,
            echo=lambda _: None,
        )  # fmt: skip
    assert not staging.exists(), "a refused submission leaves no staging folder"
    with pytest.raises(workspace.SubmitError, match=r"--confirm-seeds confirms a study's lead: "
                       r"give --tune SPACE with it"):  # fmt: skip
        sub.submit_experiment(
            target, confirm_seeds=[1], dry_run=True, staging=staging, echo=lambda _: None
        )


def adder_c_config(tmp_path: Path, package: str, sha256: str | None = None) -> Path:
    text = (CONFIGS / "simple_adder_ppo.yaml").read_text()
    text = text.replace("sim: simple_adder", "sim: simple_adder_c")
    text += f"sim_package: {package}\n" + (f"sim_package_sha256: {sha256}\n" if sha256 else "")
    path = tmp_path / "adder_c.yaml"
    path.write_text(text)
    return path


@pytest.mark.skipif(not shutil.which("cc"), reason="no C compiler")
def test_a_local_package_archive_becomes_a_downloaded_job_input(target, tmp_path):
    import tarfile

    from sims.package import sha256_of
    from tests.sims.test_process import build_c_adder

    build_c_adder(tmp_path / "adder")
    archive = tmp_path / "adder.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "adder", arcname="adder")
    config = adder_c_config(tmp_path, str(archive), sha256_of(archive))
    out = tmp_path / "job.yaml"
    sub.submit_experiment(
        target, config=config, dry_run=True, out=out, staging=tmp_path / "staging",
        echo=lambda _: None,
    )  # fmt: skip  # the staged check ran the C simulator from the archive
    job = load_job(out)
    package = job.inputs["sim_package"]
    assert (package.type, package.mode, package.path) == ("uri_file", "download", str(archive))
    assert job.command.endswith("--set sim_package=${{inputs.sim_package}}")
    staged = load_config(Path(job.code) / "experiment.yaml")
    assert staged.sim_package == str(archive) and staged.sim_package_sha256 == sha256_of(archive)


def test_a_datastore_folder_package_is_mounted_read_only(target, tmp_path):
    store = "azureml://datastores/sims/paths/adder/"
    out = tmp_path / "job.yaml"
    sub.submit_experiment(
        target, config=adder_c_config(tmp_path, store), dry_run=True, out=out,
        staging=tmp_path / "staging", echo=lambda _: None,
    )  # fmt: skip
    package = load_job(out).inputs["sim_package"]
    assert (package.type, package.mode, package.path) == ("uri_folder", "ro_mount", store)


def test_a_package_that_is_not_there_is_named_before_staging(target, tmp_path):
    with pytest.raises(workspace.SubmitError, match=r"sim_package .*nowhere\.tar\.gz"):
        sub.submit_experiment(
            target, config=adder_c_config(tmp_path, str(tmp_path / "nowhere.tar.gz")),
            dry_run=True, staging=tmp_path / "staging", echo=lambda _: None,
        )  # fmt: skip
    assert not any((tmp_path / "staging").glob("*"))


def test_the_sample_outputs_file_runs_the_dry_runs_without_azure(tmp_path):
    """README: try `invoke submit --dry-run` before any `pulumi up`."""
    example = ROOT / "infra" / "outputs.example.json"
    target = workspace.resolve_target(example, environ={})
    sub.submit_experiment(
        target, dry_run=True, out=tmp_path / "job.yaml", staging=tmp_path / ".aml",
        echo=lambda _: None,
    )  # fmt: skip
    assert load_job(tmp_path / "job.yaml").compute == "cpu-cluster"
    assert "infra/outputs.example.json" in (ROOT / "README.md").read_text()
