"""Pushing to ACR: the token exchange and the docker calls, at the HTTP and SDK boundary."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from azure.core.exceptions import ClientAuthenticationError

from images.build import ImageError
from images.push import ACR_TOKEN_USER, ARM_SCOPE, push_image


class FakeCredential:
    def __init__(self, fail: bool = False) -> None:
        self.fail, self.scopes = fail, []

    def get_token(self, *scopes: str):
        self.scopes.append(scopes)
        if self.fail:
            raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token")
        return SimpleNamespace(token="aad-token", expires_on=0)


class FakeSession:
    def __init__(self, status: int = 200) -> None:
        self.status, self.posts = status, []

    def post(self, url: str, data: dict, timeout: int):
        self.posts.append((url, data))
        return SimpleNamespace(
            status_code=self.status, json=lambda: {"refresh_token": "acr-refresh"}
        )


class FakeDocker:
    def __init__(self, push_lines: list[dict]) -> None:
        self.calls: list[tuple] = []
        self.images = SimpleNamespace(get=self._get, push=self._push)
        self._push_lines = push_lines

    def login(self, **kwargs):
        self.calls.append(("login", kwargs))

    def _get(self, name):
        return SimpleNamespace(tag=lambda repo, tag: self.calls.append(("tag", name, repo, tag)))

    def _push(self, repo, tag, stream, decode):
        self.calls.append(("push", repo, tag))
        return iter(self._push_lines)


def test_push_exchanges_an_azure_token_and_logs_in_without_a_password_file():
    credential, session = FakeCredential(), FakeSession()
    docker = FakeDocker([{"status": "Pushed", "id": "abc"}])
    reference = push_image(
        "aml-rl:cpu",
        "myacr.azurecr.io",
        client=docker,
        credential=credential,
        session=session,
        echo=lambda _: None,
    )
    assert reference == "myacr.azurecr.io/aml-rl:cpu"
    assert credential.scopes == [(ARM_SCOPE,)]
    assert session.posts == [
        (
            "https://myacr.azurecr.io/oauth2/exchange",
            {
                "grant_type": "access_token",
                "service": "myacr.azurecr.io",
                "access_token": "aad-token",
            },
        )
    ]
    assert docker.calls == [
        (
            "login",
            {
                "username": ACR_TOKEN_USER,
                "password": "acr-refresh",
                "registry": "myacr.azurecr.io",
                "reauth": True,
            },
        ),
        ("tag", "aml-rl:cpu", "myacr.azurecr.io/aml-rl", "cpu"),
        ("push", "myacr.azurecr.io/aml-rl", "cpu"),
    ]


def test_not_logged_in_to_azure_says_how_to_log_in():
    with pytest.raises(ImageError, match=r"not logged in to Azure: run `az login`"):
        push_image(
            "aml-rl:cpu",
            "myacr.azurecr.io",
            client=FakeDocker([]),
            credential=FakeCredential(fail=True),
            session=FakeSession(),
        )


def test_a_registry_that_refuses_the_token_is_named():
    with pytest.raises(
        ImageError, match=r"myacr\.azurecr\.io refused the Azure token \(401\).*AcrPush"
    ):
        push_image(
            "aml-rl:cpu",
            "myacr.azurecr.io",
            client=FakeDocker([]),
            credential=FakeCredential(),
            session=FakeSession(401),
        )


def test_a_push_error_is_reported():
    docker = FakeDocker([{"error": "denied: requested access to the resource is denied"}])
    with pytest.raises(ImageError, match=r"pushing myacr\.azurecr\.io/aml-rl:cpu failed: denied"):
        push_image(
            "aml-rl:cpu",
            "myacr.azurecr.io",
            client=docker,
            credential=FakeCredential(),
            session=FakeSession(),
        )
