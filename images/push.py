"""Push images to Azure Container Registry with Azure credentials: no admin user, no password."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from images.build import ImageError, docker_client

ARM_SCOPE = "https://management.azure.com/.default"
ACR_TOKEN_USER = "00000000-0000-0000-0000-000000000000"  # ACR's username for AAD refresh tokens


def acr_refresh_token(login_server: str, credential: Any = None, session: Any = None) -> str:
    """Exchange an Azure AD token for an ACR refresh token (what `az acr login` does)."""
    from azure.core.exceptions import ClientAuthenticationError

    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    try:
        aad_token = credential.get_token(ARM_SCOPE).token
    except ClientAuthenticationError as exc:
        raise ImageError(
            "not logged in to Azure: run `az login` (or set AZURE_CLIENT_ID/AZURE_TENANT_ID for a "
            f"workload identity) and try again ({str(exc).splitlines()[0][:160]})"
        ) from None
    if session is None:
        import requests

        session = requests.Session()
    response = session.post(
        f"https://{login_server}/oauth2/exchange",
        data={"grant_type": "access_token", "service": login_server, "access_token": aad_token},
        timeout=30,
    )
    if response.status_code != 200:
        raise ImageError(
            f"{login_server} refused the Azure token ({response.status_code}): is this the "
            "registry's login server, and do you have AcrPush on it?"
        )
    return response.json()["refresh_token"]


def push_image(
    tag: str,
    registry: str,
    *,
    client: Any = None,
    credential: Any = None,
    session: Any = None,
    echo: Callable[[str], None] = print,
) -> str:
    """Tag ``tag`` into ``registry`` and push it; returns the pushed reference."""
    client = client or docker_client()
    token = acr_refresh_token(registry, credential, session)
    # The token lives in memory and in this docker client's session, never in a file.
    client.login(username=ACR_TOKEN_USER, password=token, registry=registry, reauth=True)
    repository, _, version = tag.partition(":")
    target = f"{registry}/{repository.split('/')[-1]}"
    client.images.get(tag).tag(target, tag=version or "latest")
    reference = f"{target}:{version or 'latest'}"
    for line in client.images.push(target, tag=version or "latest", stream=True, decode=True):
        if "error" in line:
            raise ImageError(f"pushing {reference} failed: {line['error']}")
        if line.get("status") == "Pushed":
            echo(f"push: layer {line.get('id', '')} pushed")
    return reference
