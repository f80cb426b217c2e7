"""The credential in GitHub Actions asks GitHub for a fresh OIDC assertion for every Azure
token it acquires: a local fake of GitHub's token service counts the requests, and a fake
Entra ID token endpoint (under azure-core's real transport) records the assertions used."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from azure.core.pipeline.transport import RequestsTransport
from azure.identity import ClientAssertionCredential, DefaultAzureCredential

from client.credentials import GITHUB_AUDIENCE, azure_credential
from tests.client.conftest import FakeArm

TENANT = "99999999-8888-7777-6666-555555555555"


class GitHub(BaseHTTPRequestHandler):
    """GitHub Actions' OIDC token service: a new token per request, for a bearer only."""

    issued: ClassVar[list[str]] = []

    def do_GET(self):
        query = parse_qs(urlparse(self.path).query)
        ok = self.headers.get("Authorization") == "bearer request-token"
        ok = ok and query.get("audience") == [GITHUB_AUDIENCE]
        if not ok:
            self.send_response(403)
            self.end_headers()
            return
        GitHub.issued.append(f"github-jwt-{len(GitHub.issued) + 1}")
        body = json.dumps({"value": GitHub.issued[-1]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def github():
    GitHub.issued = []
    server = HTTPServer(("127.0.0.1", 0), GitHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/token?api-version=2.0"
    server.shutdown()


class EntraId(FakeArm):
    """login.microsoftonline.com: discovery documents, and tokens for assertions."""

    def __init__(self) -> None:
        super().__init__()
        self.assertions: list[str] = []

    def send(self, request, **kwargs):
        url = urlparse(request.url)
        if request.method == "POST" and url.path.endswith("/oauth2/v2.0/token"):
            form = parse_qs(
                request.body if isinstance(request.body, str) else request.body.decode()
            )
            self.assertions.append(form["client_assertion"][0])
            token = {
                "access_token": f"aad-{len(self.assertions)}",
                "expires_in": 3600,
                "token_type": "Bearer",
            }
            return self._answer(request, 200, token)
        if "openid-configuration" in url.path:
            base = f"https://login.microsoftonline.com/{TENANT}"
            return self._answer(request, 200, {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "issuer": f"{base}/v2.0",
            })  # fmt: skip
        if "discovery/instance" in url.path:
            return self._answer(request, 200, {
                "tenant_discovery_endpoint": f"https://login.microsoftonline.com/{TENANT}/v2.0/.well-known/openid-configuration",
                "metadata": [],
            })  # fmt: skip
        return self._answer(request, 404, {"error": "not_found"})


def actions_environment(url: str) -> dict[str, str]:
    return {
        "ACTIONS_ID_TOKEN_REQUEST_URL": url,
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "request-token",
        "AZURE_CLIENT_ID": "app-id",
        "AZURE_TENANT_ID": TENANT,
    }


def test_in_actions_every_new_azure_token_uses_a_fresh_github_assertion(github):
    entra, session = EntraId(), requests.Session()
    session.mount("https://", entra)
    credential = azure_credential(
        actions_environment(github), transport=RequestsTransport(session=session)
    )
    assert isinstance(credential, ClientAssertionCredential)
    arm = credential.get_token("https://management.azure.com/.default")
    storage = credential.get_token("https://storage.azure.com/.default")
    again = credential.get_token("https://management.azure.com/.default")
    assert GitHub.issued == ["github-jwt-1", "github-jwt-2"], "one assertion per new token"
    assert entra.assertions == GitHub.issued, "each Azure token came from its own assertion"
    assert (arm.token, storage.token, again.token) == ("aad-1", "aad-2", "aad-1")  # cached


def test_a_workflow_without_id_token_permission_is_told_so(github):
    environ = {**actions_environment(github), "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "wrong"}
    entra, session = EntraId(), requests.Session()
    session.mount("https://", entra)
    credential = azure_credential(environ, transport=RequestsTransport(session=session))
    with pytest.raises(
        Exception,
        match=r"GitHub's OIDC token service answered 403: does the workflow grant `permissions: id-token: write`\?",
    ):
        credential.get_token("https://management.azure.com/.default")


def test_outside_actions_it_is_the_default_credential_chain():
    assert isinstance(azure_credential({}), DefaultAzureCredential)
    half = {"ACTIONS_ID_TOKEN_REQUEST_URL": "http://x", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "t"}
    assert isinstance(azure_credential(half), DefaultAzureCredential), "no app named: az login"
