"""The token manager with a fake IdP and a fake clock: caching, sharing, invalidation,
rotation and what each grant does when its refresh token is rejected."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from pydantic import SecretStr

from mcp_oauth2_proxy.app.grants import build_grant, build_token_requests
from mcp_oauth2_proxy.app.token_client import TokenClient
from mcp_oauth2_proxy.app.token_manager import TokenManager
from mcp_oauth2_proxy.domain.config import OAuth2Config
from mcp_oauth2_proxy.domain.errors import OAuthError, TokenEndpointError
from mcp_oauth2_proxy.domain.redaction import Redactor
from mcp_oauth2_proxy.domain.token_lifecycle import AccessToken

from ..fakes import FakeClock, FakeTokenEndpoint, json_reply, token_reply

pytestmark = pytest.mark.anyio

INVALID_GRANT = json_reply(400, {"error": "invalid_grant"})


def manager(endpoint: FakeTokenEndpoint, clock: FakeClock, **settings: Any) -> TokenManager:
    oauth = OAuth2Config(client_id="app", token_url="https://idp.example/token", **settings)
    client = TokenClient(
        endpoint, clock, Redactor(), refresh_skew_seconds=oauth.refresh_skew_seconds
    )
    builder = build_token_requests(oauth)
    return TokenManager(build_grant(oauth, client, builder), client, builder, clock)


def cc(endpoint: FakeTokenEndpoint, clock: FakeClock) -> TokenManager:
    return manager(endpoint, clock, grant="client_credentials", client_secret="s3cret")


async def test_caches_until_the_renewal_moment() -> None:
    endpoint = FakeTokenEndpoint(token_reply("one", expires_in=100), token_reply("two"))
    clock = FakeClock()
    tokens = cc(endpoint, clock)
    first = await tokens.token()
    clock.advance(69)
    assert await tokens.token() is first
    clock.advance(1)
    assert (await tokens.token()).value == "two"
    assert len(endpoint.requests) == 2


async def test_concurrent_callers_share_one_request() -> None:
    endpoint = FakeTokenEndpoint(token_reply("shared"))
    endpoint.gate = anyio.Event()
    tokens = cc(endpoint, FakeClock())
    got: list[AccessToken] = []

    async def caller() -> None:
        got.append(await tokens.token())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for _ in range(10):
                group.start_soon(caller)
            await endpoint.arrived.wait()
            await wait_all_tasks_blocked()
            endpoint.gate.set()
    assert len(endpoint.requests) == 1
    assert [token.value for token in got] == ["shared"] * 10


async def test_invalidate_drops_the_failed_token_only() -> None:
    endpoint = FakeTokenEndpoint(token_reply("old"), token_reply("new"))
    tokens = cc(endpoint, FakeClock())
    old = await tokens.token()
    tokens.invalidate(old)
    new = await tokens.token()
    assert new.value == "new"
    tokens.invalidate(old)  # a late 401 for the old token
    assert await tokens.token() is new
    assert len(endpoint.requests) == 2


async def test_rotated_refresh_tokens_are_kept() -> None:
    endpoint = FakeTokenEndpoint(
        token_reply("a1", expires_in=60, refresh="r2"),
        token_reply("a2", expires_in=60),
        token_reply("a3", expires_in=60, refresh="r3"),
    )
    clock = FakeClock()
    tokens = manager(endpoint, clock, grant="refresh_token", refresh_token="r1")
    for _ in range(3):
        await tokens.token()
        clock.advance(60)
    sent = [form["refresh_token"] for form in endpoint.forms]
    assert sent == ["r1", "r2", "r2"]


async def test_client_credentials_starts_over_when_its_refresh_token_is_rejected() -> None:
    endpoint = FakeTokenEndpoint(
        token_reply("a1", expires_in=60, refresh="r1"), INVALID_GRANT, token_reply("a2")
    )
    clock = FakeClock()
    tokens = cc(endpoint, clock)
    await tokens.token()
    clock.advance(60)
    assert (await tokens.token()).value == "a2"
    assert [form["grant_type"] for form in endpoint.forms] == [
        "client_credentials",
        "refresh_token",
        "client_credentials",
    ]


async def test_refresh_token_grant_fails_with_the_setting_to_renew() -> None:
    tokens = manager(
        FakeTokenEndpoint(INVALID_GRANT), FakeClock(), grant="refresh_token", refresh_token="r1"
    )
    with pytest.raises(TokenEndpointError, match="OAUTH2_REFRESH_TOKEN"):
        await tokens.token()


async def test_one_shot_code_is_exchanged_once_then_its_refresh_token_carries_on() -> None:
    endpoint = FakeTokenEndpoint(
        token_reply("a1", expires_in=60, refresh="r1"), token_reply("a2", expires_in=60)
    )
    clock = FakeClock()
    tokens = manager(
        endpoint,
        clock,
        authorization_code="code-1",
        code_verifier="v" * 43,
        redirect_uri="http://127.0.0.1:53682/callback",
    )
    await tokens.token()
    clock.advance(60)
    assert (await tokens.token()).value == "a2"
    first, second = endpoint.forms
    assert (first["grant_type"], first["code"], first["code_verifier"]) == (
        "authorization_code",
        "code-1",
        "v" * 43,
    )
    assert (second["grant_type"], second["refresh_token"]) == ("refresh_token", "r1")


async def test_a_used_code_without_refresh_token_explains_itself() -> None:
    endpoint = FakeTokenEndpoint(token_reply("a1", expires_in=60))
    clock = FakeClock()
    tokens = manager(endpoint, clock, authorization_code="code-1", interactive=False)
    await tokens.token()
    clock.advance(60)
    with pytest.raises(OAuthError, match="single-use") as caught:
        await tokens.token()
    assert "OAUTH2_AUTHORIZATION_CODE" in str(caught.value)


async def test_a_rejected_refresh_token_falls_back_to_an_unused_code() -> None:
    endpoint = FakeTokenEndpoint(INVALID_GRANT, token_reply("from-code"))
    tokens = manager(endpoint, FakeClock(), refresh_token="stale", authorization_code="code-1")
    assert (await tokens.token()).value == "from-code"
    assert [form["grant_type"] for form in endpoint.forms] == [
        "refresh_token",
        "authorization_code",
    ]


async def test_other_idp_errors_are_not_retried() -> None:
    endpoint = FakeTokenEndpoint(json_reply(401, {"error": "invalid_client"}))
    tokens = manager(endpoint, FakeClock(), refresh_token="r1", authorization_code="code-1")
    with pytest.raises(TokenEndpointError) as caught:
        await tokens.token()
    assert caught.value.error == "invalid_client"
    assert len(endpoint.requests) == 1


async def test_password_grant_warns_that_it_is_deprecated(caplog: pytest.LogCaptureFixture) -> None:
    endpoint = FakeTokenEndpoint(token_reply("a1"))
    with caplog.at_level(logging.WARNING, logger="mcp_oauth2_proxy"):
        tokens = manager(endpoint, FakeClock(), grant="password", username="ann", password="pw12")
    assert (await tokens.token()).value == "a1"
    assert any("deprecated" in record.getMessage() for record in caplog.records)
    assert endpoint.forms[0]["username"] == "ann"


async def test_tokens_are_registered_for_redaction() -> None:
    endpoint = FakeTokenEndpoint(token_reply("access-value", refresh="refresh-value"))
    redactor = Redactor()
    oauth = OAuth2Config(
        client_id="app",
        token_url="https://idp.example/token",
        grant="client_credentials",
        client_secret=SecretStr("client-secret"),
    )
    client = TokenClient(endpoint, FakeClock(), redactor, refresh_skew_seconds=30)
    builder = build_token_requests(oauth)
    await TokenManager(build_grant(oauth, client, builder), client, builder, FakeClock()).token()
    text = redactor.redact("access-value refresh-value client-secret")
    assert "access-value" not in text
    assert "refresh-value" not in text
    assert "client-secret" not in text
