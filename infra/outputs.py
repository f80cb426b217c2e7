"""The outputs contract that job submission reads, from `pulumi stack output --json` or a file.

Fields: subscription_id, resource_group, location, workspace_name, cpu_cluster, gpu_cluster
(empty when gpuCluster is false), cpu_vm_size and gpu_vm_size (the clusters' VM sizes),
datastore, registry_login_server, storage_account,
mlflow_tracking_uri, endpoint_identity (the resource id of the identity online endpoints run
under). Nothing is copied by hand: `invoke submit` reads these.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

INFRA_DIR = Path(__file__).parent


class OutputsError(ValueError):
    """The stack outputs cannot be read; the message says where and how to fix it."""


class InfraOutputs(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    subscription_id: str
    resource_group: str
    location: str
    workspace_name: str
    cpu_cluster: str
    gpu_cluster: str = ""
    cpu_vm_size: str = ""  # stacks from before the layout have none
    gpu_vm_size: str = ""
    datastore: str
    registry_login_server: str
    storage_account: str
    mlflow_tracking_uri: str = ""
    endpoint_identity: str = ""  # stacks from before `invoke deploy` have none


def parse_outputs(text: str, source: str) -> InfraOutputs:
    try:
        return InfraOutputs.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise OutputsError(
            f"{source}: not JSON ({exc.msg} at line {exc.lineno}); "
            "save it with `pulumi stack output --json > FILE`"
        ) from None
    except ValidationError as exc:
        missing = ", ".join(
            str(e["loc"][0]) if e["loc"] else "(all: not an object)" for e in exc.errors()
        )
        raise OutputsError(
            f"{source}: missing or invalid stack output(s): {missing}; "
            "run `pulumi up` with this repo's infra/"
        ) from None


def read_outputs(saved: Path | None = None, stack: str | None = None) -> InfraOutputs:
    """From a saved ``pulumi stack output --json`` file, or from the Pulumi CLI."""
    if saved is not None:
        try:
            return parse_outputs(saved.read_text(encoding="utf-8"), str(saved))
        except OSError as exc:
            raise OutputsError(f"{saved}: cannot be read ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise OutputsError(
                f"{saved}: not a text file; save it with `pulumi stack output --json > FILE`"
            ) from None
    if shutil.which("pulumi") is None:
        raise OutputsError(
            "the Pulumi CLI is not installed; install it (https://www.pulumi.com/docs/install/) "
            "or pass a saved `pulumi stack output --json` file"
        )
    command = ["pulumi", "stack", "output", "--json", *(["--stack", stack] if stack else [])]
    done = subprocess.run(command, cwd=INFRA_DIR, capture_output=True, text=True)
    if done.returncode != 0:
        raise OutputsError(f"`{' '.join(command)}` failed in {INFRA_DIR}: {done.stderr.strip()}")
    return parse_outputs(done.stdout, f"pulumi stack output ({stack or 'current stack'})")
