"""The Azure credential every client task uses, fresh for as long as a job runs.

In GitHub Actions, `azure/login` hands one GitHub OIDC token to the Azure CLI, which cannot
renew it: it lasts minutes, and a training workflow runs for hours (a storage token for the
code upload after a long image build, an ARM token renewed during `--wait`). So when a job
can ask GitHub for OIDC tokens (the workflow has ``id-token: write``) and names its Azure app
(``AZURE_CLIENT_ID``, ``AZURE_TENANT_ID``), the credential is a ``ClientAssertionCredential``
that asks GitHub for a new assertion each time it needs an Azure token. Anywhere else it is
``DefaultAzureCredential`` (`az login`, a managed identity, environment variables).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

GITHUB_AUDIENCE = "api://AzureADTokenExchange"  # what Azure's federated credentials expect


def github_oidc_token(
    url: str, request_token: str, session: Any = None, audience: str = GITHUB_AUDIENCE
) -> str:
    """A new OIDC token from GitHub Actions' token service (for this job, this audience)."""
    import requests

    response = (session or requests).get(
        url,
        params={"audience": audience},
        headers={"Authorization": f"bearer {request_token}"},
        timeout=30,
    )
    if response.status_code != 200:
        raise RuntimeError(
            f"GitHub's OIDC token service answered {response.status_code}: does the workflow "
            "grant `permissions: id-token: write`?"
        )
    return response.json()["value"]


def azure_credential(
    environ: Mapping[str, str] | None = None, session: Any = None, **kwargs: Any
) -> Any:
    """GitHub-refreshed federated credential in Actions, else DefaultAzureCredential."""
    environ = os.environ if environ is None else environ
    url = environ.get("ACTIONS_ID_TOKEN_REQUEST_URL")
    request_token = environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    client_id, tenant_id = environ.get("AZURE_CLIENT_ID"), environ.get("AZURE_TENANT_ID")
    if url and request_token and client_id and tenant_id:
        from azure.identity import ClientAssertionCredential

        assertion: Callable[[], str] = lambda: github_oidc_token(url, request_token, session)  # noqa: E731
        return ClientAssertionCredential(tenant_id, client_id, assertion, **kwargs)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(**kwargs)
