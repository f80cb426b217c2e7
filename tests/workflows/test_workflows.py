"""The GitHub Actions workflows: actionlint-clean, OIDC only, and calling tasks that exist."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
CI, DEPLOY = WORKFLOWS / "ci.yml", WORKFLOWS / "deploy-and-train.yml"
SECRET_LIKE = re.compile(r"CLIENT_SECRET|_KEY\b|KEY$|PASSWORD|CREDENTIALS|SAS|TOKEN", re.IGNORECASE)


def load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def run_steps(workflow: dict) -> list[str]:
    return [
        step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step
    ]


def test_both_workflows_pass_actionlint():
    binary = shutil.which("actionlint") or str(Path(sys.executable).with_name("actionlint"))
    done = subprocess.run([binary, str(CI), str(DEPLOY)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ci_runs_the_readmes_test_command():
    readme = (ROOT / "README.md").read_text()
    command = ".ci/venv invoke test"
    assert f"{command}    # lint (ruff) and the whole test suite" in readme
    assert command in run_steps(load(CI))
    assert command in (ROOT / ".ci" / "run").read_text()
    assert load(CI)["jobs"]["test"]["steps"][1]["with"]["cache"] == "pip"


def test_deploy_uses_oidc_and_no_client_secret():
    workflow = load(DEPLOY)
    assert workflow["permissions"] == {"id-token": "write", "contents": "read"}
    text = DEPLOY.read_text()
    secrets = set(re.findall(r"secrets\.([A-Za-z0-9_]+)", text))
    assert secrets == {"PULUMI_CONFIG_PASSPHRASE"}
    assert not [s for s in secrets if SECRET_LIKE.search(s)]
    logins = [
        step
        for job in workflow["jobs"].values()
        for step in job["steps"]
        if step.get("uses", "").startswith("azure/login@")
    ]
    assert len(logins) == 2
    for step in logins:
        assert set(step["with"]) == {"client-id", "tenant-id", "subscription-id"}, (
            "OIDC takes no secret"
        )
        assert all(value.startswith("${{ vars.") for value in step["with"].values())


def test_every_job_has_a_time_limit_and_deploys_are_serialised_per_stack():
    for path in (CI, DEPLOY):
        for name, job in load(path)["jobs"].items():
            assert isinstance(job.get("timeout-minutes"), int), (
                f"{path.name}: job {name} has no timeout"
            )
    deploy = load(DEPLOY)
    assert deploy["concurrency"] == {
        "group": "deploy-${{ inputs.stack || 'dev' }}",
        "cancel-in-progress": False,
    }
    inputs = set(deploy["on"]["workflow_dispatch"]["inputs"])
    assert inputs == {"stack", "config", "nodes", "gpu", "deploy"}


def test_training_depends_on_the_infra_jobs_outputs():
    deploy = load(DEPLOY)
    train = deploy["jobs"]["train"]
    assert train["needs"] == "infra"
    assert "registry" in deploy["jobs"]["infra"]["outputs"]
    assert any(
        "needs.infra.outputs.registry" in run for run in run_steps({"jobs": {"train": train}})
    )


@cache
def task_flags(task: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "--help", task], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, f"`invoke {task}` does not exist: {done.stderr}"
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", done.stdout))


def invoke_calls(workflow: dict) -> list[list[str]]:
    calls = []
    for run in run_steps(workflow):
        for line in run.splitlines():
            if "invoke " in line:
                words = shlex.split(line.split("invoke ", 1)[1].split(">>")[0])
                calls.append(words)
    return calls


@pytest.mark.parametrize("path", [CI, DEPLOY], ids=lambda p: p.name)
def test_every_invoke_command_exists_with_the_flags_it_passes(path):
    calls = invoke_calls(load(path))
    assert calls, f"{path.name} runs no invoke task"
    for task, *args in calls:
        flags = {a.split("=")[0] for a in args if a.startswith("--")}
        flags |= {"--gpu"} if "$GPU_FLAG" in args else set()
        unknown = flags - task_flags(task)
        assert not unknown, f"{path.name}: `invoke {task}` has no {', '.join(sorted(unknown))}"


def test_deploy_registers_the_model_only_when_it_beats_the_baseline():
    steps = load(DEPLOY)["jobs"]["train"]["steps"]
    (register,) = [s for s in steps if "register-model" in s.get("run", "")]
    assert register["if"] == "steps.report.outputs.beats_baseline == 'true'"
    names = [s.get("id") for s in steps]
    assert names.index("report") < steps.index(register)


def test_the_policy_is_served_only_when_asked_and_registered():
    workflow = load(DEPLOY)
    deploy_input = workflow["on"]["workflow_dispatch"]["inputs"]["deploy"]
    assert deploy_input["type"] == "boolean" and deploy_input["default"] is False
    steps = workflow["jobs"]["train"]["steps"]
    (serve,) = [s for s in steps if "invoke deploy " in s.get("run", "")]
    assert serve["if"] == "inputs.deploy && steps.report.outputs.beats_baseline == 'true'"
    (register,) = [s for s in steps if "register-model" in s.get("run", "")]
    assert steps.index(register) < steps.index(serve)


def test_deploy_writes_the_runs_page_before_uploading_the_run():
    steps = load(DEPLOY)["jobs"]["train"]["steps"]
    (view,) = [i for i, s in enumerate(steps) if "invoke view " in s.get("run", "")]
    uploads = {
        s["with"]["name"]: i
        for i, s in enumerate(steps)
        if s.get("uses", "").startswith("actions/upload-artifact")
    }
    assert view < uploads["run"] and view < uploads["run-page"]
    assert steps[uploads["run-page"]]["with"]["path"].endswith("/view.html")


def test_the_first_deploy_on_a_new_stack_creates_it_with_time_for_the_network():
    infra = load(DEPLOY)["jobs"]["infra"]
    (up,) = [s for s in infra["steps"] if s.get("uses", "").startswith("pulumi/actions@")]
    assert up["with"]["command"] == "up" and up["with"]["upsert"] is True
    assert infra["timeout-minutes"] >= 90, "the managed network alone takes about 30 minutes"


def test_the_tasks_can_renew_azure_tokens_for_the_whole_job():
    workflow = load(DEPLOY)
    assert workflow["permissions"]["id-token"] == "write"
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID"):
        assert workflow["env"][name] == f"${{{{ vars.{name} }}}}", name


def test_the_pulumi_state_is_read_with_a_token_that_outlives_the_job():
    """az login's token cannot be renewed; a long first `pulumi up`, then `pulumi stack
    output`, would fail with AADSTS700024 reading the azblob state."""
    infra = load(DEPLOY)["jobs"]["infra"]
    names = [s.get("name", s.get("uses", "")) for s in infra["steps"]]
    (sas,) = [s for s in infra["steps"] if "generate-sas" in s.get("run", "")]
    first_pulumi = min(i for i, n in enumerate(names) if n.startswith("pulumi/actions@"))
    assert names.index(sas["name"]) < first_pulumi, "before the state is first read"
    assert names.index(sas["name"]) > names.index("azure/login@v3"), "made with the identity"
    run = sas["run"]
    assert "--as-user" in run and "--auth-mode login" in run, "a user delegation SAS, no key"
    assert "::add-mask::" in run and "AZURE_STORAGE_SAS_TOKEN" in run
    minutes = int(re.search(r"\+(\d+) minutes", run).group(1))
    assert minutes >= infra["timeout-minutes"], "it lasts as long as the job may"
