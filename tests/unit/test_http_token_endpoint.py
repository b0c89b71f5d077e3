"""The httpx token endpoint adapter, driven through `Proxy` with respx at the transport seam:
the exact bytes each grant puts on the wire, and every way an IdP can fail."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qsl

import anyio
import httpx
import pytest
import respx
from anyio.abc import SocketAttribute, SocketStream

from mcp_oauth2_proxy import (
    IdpUnreachableError,
    OAuth2Config,
    Proxy,
    ProxyConfig,
    TokenEndpointError,
    UpstreamConfig,
)
from mcp_oauth2_proxy.adapters.http_client import build_http_client
from mcp_oauth2_proxy.adapters.http_token_endpoint import MAX_REPLY_BYTES, HttpTokenEndpoint
from mcp_oauth2_proxy.domain.token_exchange import TokenRequest

pytestmark = pytest.mark.anyio

TOKEN_URL = "https://idp.example/oauth/token"
TOKEN = {"access_token": "at-1", "token_type": "Bearer", "expires_in": 3600}


def config(**oauth: Any) -> ProxyConfig:
    return ProxyConfig(
        upstream=UpstreamConfig(url="https://mcp.example/mcp"),
        oauth2=OAuth2Config(client_id="app", token_url=TOKEN_URL, **oauth),
    )


async def fetch(proxy_config: ProxyConfig) -> httpx.Request:
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(TOKEN_URL).respond(200, json=TOKEN)
        async with Proxy(proxy_config) as proxy:
            token = await proxy.access_token()
        assert token.authorization == "Bearer at-1"
        request: httpx.Request = route.calls.last.request
        return request


def form(request: httpx.Request) -> dict[str, str]:
    return dict(parse_qsl(request.content.decode(), keep_blank_values=True))


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"grant": "client_credentials", "client_secret": "s3 cr/t", "scope": "a b"},
            {
                "grant_type": "client_credentials",
                "scope": "a b",
                "client_id": "app",
                "client_secret": "s3 cr/t",
            },
        ),
        (
            {
                "grant": "refresh_token",
                "refresh_token": "rt-1",
                "resource": "https://mcp.example/mcp",
            },
            {
                "grant_type": "refresh_token",
                "refresh_token": "rt-1",
                "resource": "https://mcp.example/mcp",
                "client_id": "app",
            },
        ),
        (
            {
                "grant": "password",
                "username": "ann",
                "password": "pw-1",
                "audience": "api",
                "extra_params": {"tenant": "t1"},
            },
            {
                "grant_type": "password",
                "username": "ann",
                "password": "pw-1",
                "audience": "api",
                "client_id": "app",
                "tenant": "t1",
            },
        ),
        (
            {
                "grant": "authorization_code",
                "authorization_code": "code-1",
                "interactive": False,
                "code_verifier": "ver-1",
                "redirect_uri": "http://127.0.0.1:53682/callback",
            },
            {
                "grant_type": "authorization_code",
                "code": "code-1",
                "redirect_uri": "http://127.0.0.1:53682/callback",
                "code_verifier": "ver-1",
                "client_id": "app",
            },
        ),
    ],
)
async def test_each_grant_posts_its_exact_form(
    settings: dict[str, Any], expected: dict[str, str]
) -> None:
    request = await fetch(config(**settings))
    assert form(request) == expected
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["accept"] == "application/json"
    assert "authorization" not in request.headers


async def test_header_style_sends_basic_and_no_secret_in_the_body() -> None:
    request = await fetch(
        config(grant="client_credentials", client_secret="a:b c", auth_style="header")
    )
    scheme, encoded = request.headers["authorization"].split(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded) == b"app:a%3Ab+c"
    assert form(request) == {"grant_type": "client_credentials"}


async def test_idp_error_becomes_a_token_endpoint_error() -> None:
    with respx.mock:
        respx.post(TOKEN_URL).respond(
            401,
            json={"error": "invalid_client", "error_description": "Client authentication failed"},
        )
        async with Proxy(config(grant="client_credentials", client_secret="wrong")) as proxy:
            with pytest.raises(TokenEndpointError, match="Client authentication failed") as caught:
                await proxy.access_token()
    assert caught.value.error == "invalid_client"
    assert "wrong" not in str(caught.value)


async def test_redirects_are_not_followed() -> None:
    with respx.mock:
        respx.post(TOKEN_URL).respond(302, headers={"Location": "https://elsewhere.example/t"})
        route = respx.post("https://elsewhere.example/t").respond(200, json=TOKEN)
        async with Proxy(config(grant="client_credentials", client_secret="s")) as proxy:
            with pytest.raises(TokenEndpointError, match="HTTP 302"):
                await proxy.access_token()
        assert not route.called


@pytest.mark.parametrize(
    ("failure", "fragment"),
    [
        (httpx.ConnectTimeout("timed out"), "did not answer within"),
        (httpx.ReadTimeout("timed out"), "did not answer within"),
        (httpx.ConnectError("Connection refused"), "Connection refused"),
        (httpx.RemoteProtocolError("peer closed connection"), "peer closed"),
    ],
)
async def test_no_answer_becomes_idp_unreachable(failure: Exception, fragment: str) -> None:
    with respx.mock:
        respx.post(TOKEN_URL).mock(side_effect=failure)
        async with Proxy(config(grant="client_credentials", client_secret="s")) as proxy:
            with pytest.raises(IdpUnreachableError) as caught:
                await proxy.access_token()
    assert fragment in str(caught.value)
    assert TOKEN_URL in str(caught.value)


async def test_oversized_replies_are_cut() -> None:
    request = TokenRequest(TOKEN_URL, "client_credentials", (("grant_type", "client_credentials"),))
    with respx.mock:
        respx.post(TOKEN_URL).respond(200, content=b"x" * (MAX_REPLY_BYTES * 2))
        async with build_http_client() as client:
            reply = await HttpTokenEndpoint(client).post(request)
    assert len(reply.body) == MAX_REPLY_BYTES


async def test_a_real_loopback_timeout() -> None:
    """A socket that accepts and never answers: the adapter's own timeout fires."""
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(SocketAttribute.local_port)

        async def hold(stream: SocketStream) -> None:
            async with stream:
                await anyio.sleep_forever()

        async with anyio.create_task_group() as group:
            group.start_soon(listener.serve, hold)
            request = TokenRequest(f"http://127.0.0.1:{port}/token", "client_credentials", ())
            async with build_http_client() as client:
                with pytest.raises(IdpUnreachableError, match=r"within 0\.2 s"):
                    await HttpTokenEndpoint(client, timeout_seconds=0.2).post(request)
            group.cancel_scope.cancel()
