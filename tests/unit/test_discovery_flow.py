"""Discovery end to end: `Discovery.resolve` over the real HttpDiscovery with respx route
tables for every URL order and validation case, dynamic client registration and its
registry, `Proxy` startup discovery, the browser login's PKCE and RFC 9207 rules, the
resource indicator Entra ID refuses, and step-up authorization through the bridge."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import anyio
import httpx
import pytest
import respx
from dependency_injector import providers
from pydantic import SecretStr

from mcp_oauth2_proxy import (
    ConfigError,
    DiscoveryConfig,
    IdpUnreachableError,
    InsecureUrlError,
    LoadedConfig,
    OAuth2Config,
    OAuthError,
    Proxy,
    ProxyConfig,
    SecurityConfig,
    TokenEndpointError,
    UpstreamConfig,
)
from mcp_oauth2_proxy.adapters import http_discovery
from mcp_oauth2_proxy.adapters.callback_listener import LoopbackCallbackListener
from mcp_oauth2_proxy.adapters.client_registry import FileClientRegistry
from mcp_oauth2_proxy.adapters.http_discovery import HttpDiscovery, Reply
from mcp_oauth2_proxy.app import discovery as discovery_module
from mcp_oauth2_proxy.app.discovery import Discovery, Registrar, needs_discovery
from mcp_oauth2_proxy.app.grants import build_token_requests
from mcp_oauth2_proxy.app.interactive_login import InteractiveLogin
from mcp_oauth2_proxy.app.token_client import TokenClient
from mcp_oauth2_proxy.domain.authorization import Granted, RedirectTarget
from mcp_oauth2_proxy.domain.cached_login import CachedLogin
from mcp_oauth2_proxy.domain.client_registration import RegisteredClient
from mcp_oauth2_proxy.domain.config_merge import Source, merge_config
from mcp_oauth2_proxy.domain.discovery import Discovered, DiscoveryError
from mcp_oauth2_proxy.domain.jsonrpc import JsonId
from mcp_oauth2_proxy.domain.pkce import LoginSecrets
from mcp_oauth2_proxy.domain.ports import ClientRegistry
from mcp_oauth2_proxy.domain.redaction import Redactor

from ..conftest import warnings
from ..fakes import (
    Exchange,
    FakeClock,
    FakeEntropy,
    FakeReply,
    FakeTokenEndpoint,
    FakeTokenStore,
    FakeUpstream,
    Handler,
    MemoryByteReceive,
    MemoryByteSend,
    ScriptedBrowser,
    ScriptedCallbackListener,
    json_reply,
    json_response,
    token_reply,
)

pytestmark = pytest.mark.anyio

UPSTREAM = "https://mcp.example/mcp"
ISSUER = "https://idp.example"
PRM_PATH = "https://mcp.example/.well-known/oauth-protected-resource/mcp"
PRM_ROOT = "https://mcp.example/.well-known/oauth-protected-resource"
AS_META = f"{ISSUER}/.well-known/oauth-authorization-server"
OIDC_META = f"{ISSUER}/.well-known/openid-configuration"
TOKEN_URL = f"{ISSUER}/oauth/token"
AUTHORIZE_URL = f"{ISSUER}/oauth/authorize"
REGISTER_URL = f"{ISSUER}/oauth/register"
REDIRECT = "http://127.0.0.1:53682/callback"
CHALLENGE = f'Bearer realm="mcp", resource_metadata="{PRM_PATH}"'


def prm(
    resource: str = UPSTREAM,
    servers: tuple[str, ...] = (ISSUER,),
    scopes: list[str] | None = None,
) -> dict[str, object]:
    document: dict[str, object] = {"resource": resource, "authorization_servers": list(servers)}
    if scopes is not None:
        document["scopes_supported"] = scopes
    return document


def as_metadata(issuer: str = ISSUER, **changes: object) -> dict[str, object]:
    document: dict[str, object] = {
        "issuer": issuer,
        "authorization_endpoint": AUTHORIZE_URL,
        "token_endpoint": TOKEN_URL,
        "registration_endpoint": REGISTER_URL,
        "scopes_supported": ["mcp:read", "mcp:write", "offline_access"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
    }
    document.update(changes)
    return {name: value for name, value in document.items() if value is not None}


def standard_idp(
    mock: respx.MockRouter,
    *,
    challenge: str | None = CHALLENGE,
    scopes: list[str] | None = None,
    metadata: dict[str, object] | None = None,
) -> respx.Route:
    """The common case: a 401 naming the path-aware metadata, which names the IdP whose
    metadata route is returned."""
    headers = {"WWW-Authenticate": challenge} if challenge is not None else {}
    mock.post(UPSTREAM).respond(401, headers=headers)
    mock.get(PRM_PATH).respond(200, json=prm(scopes=scopes))
    return mock.get(AS_META).respond(200, json=metadata if metadata is not None else as_metadata())


def called(mock: respx.MockRouter) -> list[str]:
    """The requests made so far (respx forgets them when its block ends)."""
    return [f"{call.request.method} {call.request.url}" for call in mock.calls]


class MemoryRegistry:
    """The ClientRegistry port in memory."""

    def __init__(self, *clients: RegisteredClient) -> None:
        self.clients = {client.issuer: client for client in clients}
        self.saved: list[RegisteredClient] = []
        self.forgotten: list[str] = []

    def load(self, issuer: str) -> RegisteredClient | None:
        return self.clients.get(issuer)

    def save(self, client: RegisteredClient) -> None:
        self.saved.append(client)
        self.clients[client.issuer] = client

    def forget(self, issuer: str) -> None:
        self.forgotten.append(issuer)
        self.clients.pop(issuer, None)


def loaded(
    upstream: str = UPSTREAM, *, allow_insecure_http: bool = False, **oauth: Any
) -> LoadedConfig:
    return LoadedConfig(
        ProxyConfig(
            upstream=UpstreamConfig(url=upstream),
            oauth2=OAuth2Config(**oauth),
            security=SecurityConfig(allow_insecure_http=allow_insecure_http),
        )
    )


async def resolve(
    config: LoadedConfig, registry: ClientRegistry | None = None
) -> tuple[LoadedConfig, Discovered]:
    allow = config.config.security.allow_insecure_http
    async with httpx.AsyncClient() as client:
        discovery = Discovery(
            HttpDiscovery(client, allow_insecure_http=allow), registry or MemoryRegistry()
        )
        resolved, found = await discovery.resolve(config)
    assert found is not None
    return resolved, found


# --- the URL orders ---------------------------------------------------------------------


async def test_path_aware_metadata_then_the_authorization_server() -> None:
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock, challenge="Bearer", scopes=["mcp:read", "mcp:write"])
        resolved, found = await resolve(loaded(client_id="app"))
        assert called(mock) == [f"POST {UPSTREAM}", f"GET {PRM_PATH}", f"GET {AS_META}"]
    oauth = resolved.config.oauth2
    assert (oauth.token_url, oauth.authorization_url) == (TOKEN_URL, AUTHORIZE_URL)
    assert oauth.scope == "mcp:read mcp:write offline_access"
    assert oauth.resource == UPSTREAM
    assert oauth.client_id == "app"
    assert found.issuer == ISSUER
    assert found.registration_url == REGISTER_URL
    assert found.s256_advertised
    assert found.iss_parameter_supported
    assert found.tried == (
        f"POST {UPSTREAM} (no token) → 401",
        f"GET {PRM_PATH} → 200",
        f"GET {AS_META} → 200",
    )


async def test_the_probe_carries_no_token() -> None:
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock)
        await resolve(loaded(client_id="app"))
        requests = [call.request for call in mock.calls]
    probe = requests[0]
    assert probe.method == "POST"
    assert probe.headers["accept"] == "application/json, text/event-stream"
    assert json.loads(probe.content)["method"] == "ping"
    assert len(requests) == 3
    assert all("authorization" not in request.headers for request in requests)


async def test_the_401s_resource_metadata_is_tried_first() -> None:
    hinted = "https://mcp.example/meta/prm.json"
    with respx.mock(assert_all_called=False) as mock:
        standard_idp(mock, challenge=f'Bearer error="invalid_token", resource_metadata="{hinted}"')
        mock.get(hinted).respond(200, json=prm())
        await resolve(loaded(client_id="app"))
        assert called(mock) == [f"POST {UPSTREAM}", f"GET {hinted}", f"GET {AS_META}"]


async def test_a_hinted_url_that_fails_falls_back_to_the_well_known_ones() -> None:
    hinted = "https://mcp.example/meta/prm.json"
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock, challenge=f'Bearer resource_metadata="{hinted}"')
        mock.get(hinted).respond(404)
        _, found = await resolve(loaded(client_id="app"))
        assert called(mock) == [
            f"POST {UPSTREAM}",
            f"GET {hinted}",
            f"GET {PRM_PATH}",
            f"GET {AS_META}",
        ]
    assert f"GET {hinted} → 404" in found.tried


async def test_the_root_metadata_when_the_path_aware_one_is_missing() -> None:
    with respx.mock(assert_all_called=True) as mock:
        mock.post(UPSTREAM).respond(401, headers={"WWW-Authenticate": 'Bearer realm="x"'})
        mock.get(PRM_PATH).respond(404)
        mock.get(PRM_ROOT).respond(200, json=prm(resource="https://mcp.example/"))
        mock.get(AS_META).respond(200, json=as_metadata())
        resolved, _ = await resolve(loaded(client_id="app"))
        assert called(mock) == [
            f"POST {UPSTREAM}",
            f"GET {PRM_PATH}",
            f"GET {PRM_ROOT}",
            f"GET {AS_META}",
        ]
    # The resource indicator is the identifier the server published (RFC 9728 §1.2).
    assert resolved.config.oauth2.resource == "https://mcp.example/"


async def test_openid_configuration_when_rfc_8414_metadata_is_missing() -> None:
    with respx.mock(assert_all_called=True) as mock:
        mock.post(UPSTREAM).respond(401, headers={"WWW-Authenticate": CHALLENGE})
        mock.get(PRM_PATH).respond(200, json=prm())
        mock.get(AS_META).respond(404)
        mock.get(OIDC_META).respond(200, json=as_metadata())
        resolved, found = await resolve(loaded(client_id="app"))
        assert called(mock)[-2:] == [f"GET {AS_META}", f"GET {OIDC_META}"]
    assert resolved.config.oauth2.token_url == TOKEN_URL
    assert found.tried[-2:] == (f"GET {AS_META} → 404", f"GET {OIDC_META} → 200")


async def test_an_issuer_with_a_path_is_asked_in_all_three_places() -> None:
    issuer = "https://idp.example/tenants/t1"
    inserted_as = "https://idp.example/.well-known/oauth-authorization-server/tenants/t1"
    inserted_oidc = "https://idp.example/.well-known/openid-configuration/tenants/t1"
    appended_oidc = "https://idp.example/tenants/t1/.well-known/openid-configuration"
    with respx.mock(assert_all_called=True) as mock:
        mock.post(UPSTREAM).respond(401, headers={"WWW-Authenticate": CHALLENGE})
        mock.get(PRM_PATH).respond(200, json=prm(servers=(issuer, "https://backup.example")))
        mock.get(inserted_as).respond(404)
        mock.get(inserted_oidc).respond(200, content=b"<html>not json</html>")
        mock.get(appended_oidc).respond(
            200, json=as_metadata(issuer, token_endpoint=f"{issuer}/token")
        )
        resolved, found = await resolve(loaded(client_id="app"))
        assert called(mock)[2:] == [
            f"GET {inserted_as}",
            f"GET {inserted_oidc}",
            f"GET {appended_oidc}",
        ]
    assert found.issuer == issuer
    assert resolved.config.oauth2.token_url == f"{issuer}/token"
    assert resolved.source_of("oauth2.tokenUrl") == Source("discovery", issuer)


async def test_without_resource_metadata_the_upstreams_origin_is_the_issuer() -> None:
    origin_meta = "https://mcp.example/.well-known/oauth-authorization-server"
    with respx.mock(assert_all_called=True) as mock:
        mock.post(UPSTREAM).respond(200, json={"jsonrpc": "2.0", "id": 1, "result": {}})
        mock.get(PRM_PATH).respond(404)
        mock.get(PRM_ROOT).respond(404)
        mock.get(origin_meta).respond(200, json=as_metadata("https://mcp.example"))
        resolved, found = await resolve(loaded(client_id="app"))
    assert found.issuer == "https://mcp.example"
    # No resource metadata: nothing says the server takes a resource indicator.
    assert resolved.config.oauth2.resource is None
    assert found.resource is None
    assert resolved.config.oauth2.scope is None


# --- what is refused --------------------------------------------------------------------


async def test_metadata_for_another_resource_is_refused() -> None:
    with respx.mock(assert_all_called=False) as mock:
        idp = standard_idp(mock)
        mock.get(PRM_PATH).respond(
            200, json=prm(resource="https://other.example/mcp", servers=("https://evil.example",))
        )
        evil = mock.get(url__startswith="https://evil.example").respond(200, json={})
        with pytest.raises(DiscoveryError) as caught:
            await resolve(loaded(client_id="app"))
    assert "'https://other.example/mcp'" in str(caught.value)
    assert "DISCOVERY_ENABLED=false" in str(caught.value)
    assert not evil.called
    assert not idp.called


async def test_metadata_claiming_another_issuer_is_refused() -> None:
    with respx.mock(assert_all_called=False) as mock:
        standard_idp(mock, metadata=as_metadata("https://evil.example"))
        oidc = mock.get(OIDC_META).respond(200, json=as_metadata())
        with pytest.raises(DiscoveryError, match=r"says its issuer is 'https://evil\.example'"):
            await resolve(loaded(client_id="app"))
    assert not oidc.called


async def test_a_server_without_s256_is_found_but_flagged() -> None:
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(
            mock,
            metadata=as_metadata(
                code_challenge_methods_supported=["plain"],
                authorization_response_iss_parameter_supported=None,
            ),
        )
        _, found = await resolve(loaded(client_id="app"))
    assert found.s256_advertised is False
    assert found.iss_parameter_supported is False


@pytest.mark.parametrize(
    "endpoint", ["token_endpoint", "authorization_endpoint", "registration_endpoint"]
)
async def test_a_cleartext_endpoint_off_loopback_is_refused(endpoint: str) -> None:
    metadata = as_metadata(**{endpoint: "http://idp.example/endpoint"})
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock, metadata=metadata)
        with pytest.raises(InsecureUrlError) as caught:
            await resolve(loaded(client_id="app"))
    message = str(caught.value)
    assert message.startswith(
        f"configuration error: authorization server metadata ({AS_META}): "
        f"{endpoint} http://idp.example/endpoint is cleartext"
    )
    assert "ask the server's operator for https" in message
    assert "DISCOVERY_ENABLED=false" in message


async def test_cleartext_endpoints_are_accepted_on_loopback_or_when_allowed() -> None:
    metadata = as_metadata(
        token_endpoint="http://127.0.0.1:9000/token", authorization_endpoint=AUTHORIZE_URL
    )
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock, metadata=metadata)
        resolved, _ = await resolve(loaded(client_id="app"))
    assert resolved.config.oauth2.token_url == "http://127.0.0.1:9000/token"
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock, metadata=as_metadata(token_endpoint="http://idp.example/token"))
        resolved, _ = await resolve(loaded(client_id="app", allow_insecure_http=True))
    assert resolved.config.oauth2.token_url == "http://idp.example/token"


async def test_a_cleartext_issuer_off_loopback_is_not_asked() -> None:
    with respx.mock(assert_all_called=False) as mock:
        standard_idp(mock)
        mock.get(PRM_PATH).respond(200, json=prm(servers=("http://idp.example",)))
        cleartext = mock.get(url__startswith="http://idp.example").respond(404)
        with pytest.raises(InsecureUrlError, match="discovered authorization server"):
            await resolve(loaded(client_id="app"))
    assert not cleartext.called


async def test_a_cleartext_resource_metadata_hint_is_skipped() -> None:
    hinted = "http://evil.example/prm"
    with respx.mock(assert_all_called=False) as mock:
        standard_idp(mock, challenge=f'Bearer resource_metadata="{hinted}"')
        evil = mock.get(hinted).respond(200, json=prm(servers=("https://evil.example",)))
        _, found = await resolve(loaded(client_id="app"))
    assert not evil.called
    assert found.issuer == ISSUER
    assert found.tried[1].startswith(f"skipped {hinted}: is cleartext http://")


async def test_a_redirect_to_cleartext_http_is_not_followed() -> None:
    with respx.mock(assert_all_called=False) as mock:
        standard_idp(mock)
        mock.get(PRM_PATH).respond(302, headers={"Location": "http://evil.example/prm"})
        evil = mock.get(url__startswith="http://evil.example").respond(
            200, json=prm(servers=("https://evil.example",))
        )
        mock.get(PRM_ROOT).respond(200, json=prm())
        _, found = await resolve(loaded(client_id="app"))
    assert not evil.called
    assert found.issuer == ISSUER
    assert (
        f"GET {PRM_PATH} → redirected to http://evil.example/prm, refused: is cleartext "
        "http:// to 'evil.example', which is not loopback" in " ".join(found.tried)
    )
    assert f"GET {PRM_ROOT} → 200" in found.tried


async def test_a_redirect_to_another_origin_is_followed_but_still_checked() -> None:
    elsewhere = "https://cdn.example/mcp-metadata.json"
    with respx.mock(assert_all_called=False) as mock:
        idp = standard_idp(mock)
        mock.get(PRM_PATH).respond(301, headers={"Location": elsewhere})
        mock.get(elsewhere).respond(200, json=prm(resource="https://cdn.example/mcp"))
        with pytest.raises(DiscoveryError, match="not the upstream"):
            await resolve(loaded(client_id="app"))
        assert called(mock) == [f"POST {UPSTREAM}", f"GET {PRM_PATH}", f"GET {elsewhere}"]
    assert not idp.called


async def test_a_redirected_issuer_document_from_another_issuer_is_refused() -> None:
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock)
        mock.get(AS_META).respond(
            302, headers={"Location": "https://evil.example/.well-known/openid-configuration"}
        )
        mock.get("https://evil.example/.well-known/openid-configuration").respond(
            200, json=as_metadata("https://evil.example")
        )
        with pytest.raises(DiscoveryError, match="RFC 8414"):
            await resolve(loaded(client_id="app"))


async def test_when_nothing_is_found_the_error_lists_what_was_tried() -> None:
    with respx.mock(assert_all_called=True) as mock:
        mock.post(UPSTREAM).respond(401)
        mock.get(PRM_PATH).respond(404)
        mock.get(PRM_ROOT).respond(500)
        origin_as = mock.get("https://mcp.example/.well-known/oauth-authorization-server")
        origin_as.respond(404)
        mock.get("https://mcp.example/.well-known/openid-configuration").respond(403)
        with pytest.raises(DiscoveryError) as caught:
            await resolve(loaded(client_id="app"))
    message = str(caught.value)
    for attempt in (
        f"POST {UPSTREAM} (no token) → 401",
        f"GET {PRM_PATH} → 404",
        f"GET {PRM_ROOT} → 500",
        "GET https://mcp.example/.well-known/oauth-authorization-server → 404",
        "GET https://mcp.example/.well-known/openid-configuration → 403",
    ):
        assert attempt in message
    assert message.endswith(
        ". The MCP server publishes no usable OAuth metadata: ask the server's operator to fix "
        "its OAuth metadata, or turn discovery off (discovery.enabled / DISCOVERY_ENABLED=false) "
        "and set oauth2.tokenUrl / OAUTH2_TOKEN_URL and oauth2.clientId / OAUTH2_CLIENT_ID "
        "yourself (and oauth2.authorizationUrl / OAUTH2_AUTHORIZATION_URL for the browser login)"
    )


async def test_an_unreachable_upstream_names_the_url() -> None:
    with respx.mock(assert_all_called=True) as mock:
        mock.post(UPSTREAM).mock(side_effect=httpx.ConnectError("connection refused"))
        with pytest.raises(IdpUnreachableError, match=re.escape(f"could not reach {UPSTREAM}")):
            await resolve(loaded(client_id="app"))


class NeverAnswers:
    """A DiscoveryTransport whose first request never comes back."""

    async def probe(self, url: str) -> Reply:
        await anyio.sleep_forever()
        raise AssertionError

    async def get_json(self, url: str) -> Reply:
        raise AssertionError

    async def post_json(self, url: str, document: Mapping[str, object]) -> Reply:
        raise AssertionError


async def test_discovery_is_bounded_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(discovery_module, "DISCOVERY_TIMEOUT_SECONDS", 0.05)
    with anyio.fail_after(5), pytest.raises(DiscoveryError, match="did not finish") as caught:
        await Discovery(NeverAnswers(), MemoryRegistry()).resolve(loaded(client_id="app"))
    assert "DISCOVERY_ENABLED=false" in str(caught.value)


# --- what is filled in, and what wins ---------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "challenge", "scopes", "expected"),
    [
        ("custom", 'Bearer scope="from:401"', ["from:prm"], "custom"),
        (None, 'Bearer scope="from:401"', ["from:prm"], "from:401 offline_access"),
        (None, "Bearer", ["from:prm", "more"], "from:prm more offline_access"),
        (None, "Bearer", None, None),
    ],
)
async def test_scope_comes_from_config_then_the_401_then_scopes_supported(
    configured: str | None, challenge: str, scopes: list[str] | None, expected: str | None
) -> None:
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock, challenge=f'{challenge}, resource_metadata="{PRM_PATH}"')
        mock.get(PRM_PATH).respond(200, json=prm(scopes=scopes))
        resolved, _ = await resolve(loaded(client_id="app", scope=configured))
    assert resolved.config.oauth2.scope == expected


async def test_offline_access_is_only_added_when_the_server_lists_it() -> None:
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock, scopes=["mcp:read"], metadata=as_metadata(scopes_supported=["mcp:read"]))
        resolved, _ = await resolve(loaded(client_id="app"))
    assert resolved.config.oauth2.scope == "mcp:read"


async def test_explicit_settings_win_and_discovered_ones_say_where_they_came_from() -> None:
    env = {
        "UPSTREAM_URL": UPSTREAM,
        "OAUTH2_CLIENT_ID": "app",
        "OAUTH2_TOKEN_URL": "https://sso.example/token",
        "OAUTH2_RESOURCE": "none",
    }
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock, scopes=["mcp:read"])
        resolved, _ = await resolve(merge_config(env))
    oauth = resolved.config.oauth2
    assert oauth.token_url == "https://sso.example/token"
    assert oauth.resource == "none"
    assert oauth.authorization_url == AUTHORIZE_URL
    assert oauth.scope == "mcp:read offline_access"
    assert resolved.source_of("oauth2.tokenUrl") == Source("env", "OAUTH2_TOKEN_URL")
    assert resolved.source_of("oauth2.resource") == Source("env", "OAUTH2_RESOURCE")
    assert resolved.source_of("oauth2.clientId") == Source("env", "OAUTH2_CLIENT_ID")
    for path in ("oauth2.authorizationUrl", "oauth2.scope"):
        assert resolved.source_of(path) == Source("discovery", ISSUER)
        assert resolved.source_of(path).describe() == f"discovered from {ISSUER}"
    # Settings of the configuration that discovery has nothing to say about stay as they were.
    assert resolved.source_of("upstream.url") == Source("env", "UPSTREAM_URL")


async def test_the_resource_indicator_is_the_canonical_upstream_url() -> None:
    upstream = "https://mcp.example/mcp/"
    with respx.mock(assert_all_called=True) as mock:
        probe = mock.post(upstream).respond(401, headers={"WWW-Authenticate": CHALLENGE})
        mock.get(PRM_PATH).respond(200, json=prm())
        mock.get(AS_META).respond(200, json=as_metadata())
        resolved, found = await resolve(loaded(upstream, client_id="app"))
    assert probe.calls.last.request.url == upstream
    assert resolved.config.oauth2.resource == UPSTREAM
    assert found.resource == UPSTREAM
    assert resolved.source_of("oauth2.resource").kind == "discovery"


@pytest.mark.parametrize(
    ("oauth", "enabled", "needed"),
    [
        ({}, True, True),
        ({}, False, False),
        (
            {"client_id": "a", "token_url": TOKEN_URL, "authorization_url": AUTHORIZE_URL},
            True,
            False,
        ),
        ({"client_id": "a", "token_url": TOKEN_URL}, True, True),
        ({"client_id": "a", "token_url": TOKEN_URL, "interactive": False}, True, False),
        ({"token_url": TOKEN_URL, "authorization_url": AUTHORIZE_URL}, True, True),
        ({"client_id": "a", "grant": "client_credentials", "client_secret": "s"}, True, True),
        (
            {"client_id": "a", "grant": "client_credentials", "token_url": TOKEN_URL},
            True,
            False,
        ),
    ],
)
def test_needs_discovery(oauth: dict[str, Any], enabled: bool, needed: bool) -> None:
    config = ProxyConfig(
        upstream=UpstreamConfig(url=UPSTREAM),
        oauth2=OAuth2Config(**oauth),
        discovery=DiscoveryConfig(enabled=enabled),
    )
    assert needs_discovery(config) is needed


async def test_nothing_is_asked_when_nothing_is_missing() -> None:
    config = loaded(client_id="a", token_url=TOKEN_URL, authorization_url=AUTHORIZE_URL)
    with respx.mock(assert_all_called=False) as mock:
        async with httpx.AsyncClient() as client:
            discovery = Discovery(
                HttpDiscovery(client, allow_insecure_http=False), MemoryRegistry()
            )
            resolved, found = await discovery.resolve(config)
    assert (resolved, found) == (config, None)
    assert not mock.calls


# --- dynamic client registration --------------------------------------------------------

REGISTRATION = {
    "client_name": "mcp-oauth2-proxy",
    "application_type": "native",
    "redirect_uris": [REDIRECT],
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "none",
    "scope": "mcp:read offline_access",
}


def registered(client_id: str, redirect_uri: str = REDIRECT) -> RegisteredClient:
    return RegisteredClient(ISSUER, client_id, None, redirect_uri)


async def test_registration_sends_what_a_native_public_client_is() -> None:
    registry = MemoryRegistry()
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock, scopes=["mcp:read"])
        route = mock.post(REGISTER_URL).respond(201, json={"client_id": "dyn-1"})
        resolved, _ = await resolve(loaded(), registry)
    request = route.calls.last.request
    assert json.loads(request.content) == REGISTRATION
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    assert resolved.config.oauth2.client_id == "dyn-1"
    assert resolved.source_of("oauth2.clientId").kind == "discovery"
    assert registry.saved == [registered("dyn-1")]


async def test_registration_names_the_exact_redirect_uri() -> None:
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock)
        route = mock.post(REGISTER_URL).respond(201, json={"client_id": "dyn-1"})
        await resolve(loaded(redirect_uri="http://localhost:8765/oauth/cb"))
        await resolve(loaded(callback_host="::1", callback_port=50001))
    first, second = (json.loads(call.request.content) for call in route.calls)
    assert first["redirect_uris"] == ["http://localhost:8765/oauth/cb"]
    assert second["redirect_uris"] == ["http://[::1]:50001/callback"]
    assert "scope" not in first


async def test_a_registration_is_saved_per_issuer_and_reused(tmp_path: Path) -> None:
    registry = FileClientRegistry(tmp_path / "registrations")
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock)
        route = mock.post(REGISTER_URL).respond(201, json={"client_id": "dyn-1"})
        first, _ = await resolve(loaded(), registry)
        second, _ = await resolve(loaded(), FileClientRegistry(tmp_path / "registrations"))
    assert route.call_count == 1
    assert first.config.oauth2.client_id == second.config.oauth2.client_id == "dyn-1"
    assert second.source_of("oauth2.clientId").kind == "discovery"
    assert registry.load(ISSUER) == registered("dyn-1")
    assert registry.load("https://other-idp.example") is None


async def test_a_registration_for_another_redirect_uri_is_replaced() -> None:
    registry = MemoryRegistry(registered("dyn-old", "http://127.0.0.1:40000/callback"))
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock)
        route = mock.post(REGISTER_URL).respond(201, json={"client_id": "dyn-new"})
        resolved, _ = await resolve(loaded(), registry)
    assert route.call_count == 1
    assert resolved.config.oauth2.client_id == "dyn-new"
    assert registry.load(ISSUER) == registered("dyn-new")


async def test_a_configured_client_id_is_never_replaced_by_a_registration() -> None:
    with respx.mock(assert_all_called=False) as mock:
        standard_idp(mock)
        route = mock.post(REGISTER_URL).respond(201, json={"client_id": "dyn-1"})
        resolved, _ = await resolve(loaded(client_id="mine"))
    assert not route.called
    assert resolved.config.oauth2.client_id == "mine"


CIMD_URL = "https://tools.example/mcp-oauth2-proxy/client.json"


async def test_a_client_id_metadata_document_replaces_registration_where_supported() -> None:
    registry = MemoryRegistry(registered("dyn-old"))
    with respx.mock(assert_all_called=False) as mock:
        standard_idp(mock, metadata=as_metadata(client_id_metadata_document_supported=True))
        route = mock.post(REGISTER_URL).respond(201, json={"client_id": "dyn-1"})
        resolved, _ = await resolve(loaded(client_metadata_url=CIMD_URL), registry)
    assert not route.called
    assert resolved.config.oauth2.client_id == CIMD_URL
    assert resolved.config.oauth2.client_secret is None
    assert resolved.source_of("oauth2.clientId") == Source(
        "discovery", "client id metadata document"
    )
    assert registry.saved == []


async def test_a_metadata_document_client_is_never_registered_again() -> None:
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock, metadata=as_metadata(client_id_metadata_document_supported=True))
        async with proxy_for(loaded(client_metadata_url=CIMD_URL), login_ports()) as proxy:
            assert proxy.config.oauth2.client_id == CIMD_URL
            assert proxy.container.registrar() is None


async def test_a_server_without_metadata_document_support_gets_a_registration() -> None:
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock, metadata=as_metadata(client_id_metadata_document_supported=False))
        mock.post(REGISTER_URL).respond(201, json={"client_id": "dyn-1"})
        resolved, _ = await resolve(loaded(client_metadata_url=CIMD_URL))
    assert resolved.config.oauth2.client_id == "dyn-1"
    assert resolved.source_of("oauth2.clientId").where == "dynamic client registration"


@pytest.mark.parametrize(
    "url",
    [
        "http://tools.example/client.json",
        "https://tools.example",
        "https://tools.example/",
        "https://tools.example/client.json#me",
    ],
)
def test_a_metadata_document_url_must_be_https_with_a_path(url: str) -> None:
    with pytest.raises(ConfigError, match="OAUTH2_CLIENT_METADATA_URL") as caught:
        Proxy.load_config({"UPSTREAM_URL": UPSTREAM, "OAUTH2_CLIENT_METADATA_URL": url})
    assert "https:// URL, with a path" in str(caught.value)


async def test_registration_asks_for_the_configured_scope() -> None:
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock, scopes=["mcp:read"])
        route = mock.post(REGISTER_URL).respond(201, json={"client_id": "dyn-1"})
        await resolve(loaded(scope="custom:scope"))
    assert json.loads(route.calls.last.request.content)["scope"] == "custom:scope"


@pytest.mark.parametrize(
    ("status", "body", "fragments"),
    [
        (
            400,
            {"error": "invalid_redirect_uri", "error_description": "loopback not allowed"},
            ["HTTP 400: invalid_redirect_uri: loopback not allowed"],
        ),
        (403, {"error": "access_denied"}, ["HTTP 403: access_denied."]),
        (500, "oops", ["HTTP 500."]),
    ],
)
async def test_a_refused_registration_says_what_to_set(
    status: int, body: object, fragments: list[str]
) -> None:
    registry = MemoryRegistry()
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock)
        mock.post(REGISTER_URL).respond(status, json=body)
        with pytest.raises(DiscoveryError) as caught:
            await resolve(loaded(), registry)
    message = str(caught.value)
    assert f"client registration at {REGISTER_URL} failed with" in message
    for fragment in fragments:
        assert fragment in message
    assert "OAUTH2_CLIENT_ID" in message
    assert registry.saved == []


async def test_a_registration_without_a_client_id_is_refused() -> None:
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock)
        mock.post(REGISTER_URL).respond(201, json={"client_secret": "x"})
        with pytest.raises(DiscoveryError, match="returned no client_id"):
            await resolve(loaded())


async def test_without_a_registration_endpoint_the_client_id_must_be_set() -> None:
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock, metadata=as_metadata(registration_endpoint=None))
        with pytest.raises(OAuthError, match="OAUTH2_CLIENT_ID") as caught:
            await resolve(loaded())
    assert ISSUER in str(caught.value)
    assert "no dynamic client registration" in str(caught.value)


async def test_the_registrar_registers_again_and_identifies_as_the_new_client() -> None:
    registry = MemoryRegistry()
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock)
        route = mock.post(REGISTER_URL)
        route.side_effect = [
            httpx.Response(201, json={"client_id": "dyn-1"}),
            httpx.Response(201, json={"client_id": "dyn-2", "client_secret": "s-2"}),
        ]
        async with httpx.AsyncClient() as client:
            discovery = Discovery(HttpDiscovery(client, allow_insecure_http=False), registry)
            resolved, found = await discovery.resolve(loaded())
            assert found is not None
            oauth = resolved.config.oauth2
            builder = build_token_requests(oauth)
            assert builder.client_id == "dyn-1"
            await Registrar(discovery, found, oauth, builder).register_again()
    assert registry.forgotten == [ISSUER]
    assert registry.load(ISSUER) == RegisteredClient(
        ISSUER, "dyn-2", "s-2", REDIRECT, "client_secret_post"
    )
    assert builder.client_id == "dyn-2"
    form = dict(builder.refresh("rt").form)
    assert (form["client_id"], form["client_secret"]) == ("dyn-2", "s-2")


# --- the client registry: the fake and the file agree -----------------------------------


@pytest.fixture(params=["memory", "file"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> ClientRegistry:
    if request.param == "memory":
        return MemoryRegistry()
    return FileClientRegistry(tmp_path / "cache")


def test_registry_contract(registry: ClientRegistry) -> None:
    other = RegisteredClient("https://other.example", "o-1", "secret", REDIRECT)
    assert registry.load(ISSUER) is None
    registry.save(registered("dyn-1"))
    registry.save(other)
    assert registry.load(ISSUER) == registered("dyn-1")
    assert registry.load("https://other.example") == other
    registry.save(registered("dyn-2"))
    assert registry.load(ISSUER) == registered("dyn-2")
    registry.forget(ISSUER)
    registry.forget(ISSUER)
    assert registry.load(ISSUER) is None
    assert registry.load("https://other.example") == other


def test_an_unreadable_registration_file_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = FileClientRegistry(tmp_path)
    registry.save(registered("dyn-1"))
    (path,) = tmp_path.glob("client-*.json")
    assert path.stat().st_mode & 0o077 == 0
    path.write_text('{"issuer": "https://idp.example"}')
    with caplog.at_level(logging.WARNING, logger="mcp_oauth2_proxy"):
        assert registry.load(ISSUER) is None
    assert "registering again" in caplog.text
    path.write_text("not json")
    assert registry.load(ISSUER) is None


# --- the HTTP adapter's redirect policy -------------------------------------------------


async def fetch(url: str, *, allow_insecure_http: bool = False) -> Reply:
    async with httpx.AsyncClient() as client:
        return await HttpDiscovery(client, allow_insecure_http=allow_insecure_http).get_json(url)


async def test_redirects_are_followed_only_where_the_guard_allows() -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock.get(PRM_PATH).respond(302, headers={"Location": "http://evil.example/prm"})
        evil = mock.get("http://evil.example/prm").respond(200, json=prm())
        reply = await fetch(PRM_PATH)
        assert (reply.status, reply.document, reply.challenge) == (302, None, None)
        assert reply.note is not None
        assert reply.note.startswith(
            "redirected to http://evil.example/prm, refused: is cleartext http:// to "
            "'evil.example', which is not loopback"
        )
        assert not evil.called
        followed = await fetch(PRM_PATH, allow_insecure_http=True)
    assert (followed.status, followed.document) == (200, prm())
    assert evil.call_count == 1


@pytest.mark.parametrize(
    "location", ["http://127.0.0.1:8080/prm", "/relocated/prm", "https://cdn.example/prm"]
)
async def test_redirects_to_safe_urls_are_followed(location: str) -> None:
    with respx.mock(assert_all_called=True) as mock:
        mock.get(PRM_PATH).respond(307, headers={"Location": location})
        target = httpx.URL(PRM_PATH).join(location)
        mock.get(str(target)).respond(200, json={"found": True})
        reply = await fetch(PRM_PATH)
    assert (reply.status, reply.document) == (200, {"found": True})


async def test_a_303_turns_a_registration_post_into_a_get() -> None:
    with respx.mock(assert_all_called=True) as mock:
        mock.post(REGISTER_URL).respond(303, headers={"Location": f"{ISSUER}/clients/1"})
        landing = mock.get(f"{ISSUER}/clients/1").respond(200, json={"client_id": "c"})
        async with httpx.AsyncClient() as client:
            reply = await HttpDiscovery(client, allow_insecure_http=False).post_json(
                REGISTER_URL, {"client_name": "x"}
            )
    assert reply.document == {"client_id": "c"}
    assert landing.calls.last.request.content == b""


async def test_a_307_keeps_the_registration_post_and_its_body() -> None:
    with respx.mock(assert_all_called=True) as mock:
        mock.post(REGISTER_URL).respond(307, headers={"Location": f"{ISSUER}/v2/register"})
        moved = mock.post(f"{ISSUER}/v2/register").respond(201, json={"client_id": "c"})
        async with httpx.AsyncClient() as client:
            reply = await HttpDiscovery(client, allow_insecure_http=False).post_json(
                REGISTER_URL, {"client_name": "x"}
            )
    assert reply.status == 201
    assert json.loads(moved.calls.last.request.content) == {"client_name": "x"}


async def test_redirect_loops_end() -> None:
    with respx.mock(assert_all_called=True) as mock:
        loop = mock.get(PRM_PATH).respond(302, headers={"Location": PRM_PATH})
        reply = await fetch(PRM_PATH)
    assert reply.status == 310
    assert reply.note == "more than 5 redirects"
    assert reply.document is None
    assert loop.call_count == http_discovery.MAX_REDIRECTS + 1


async def test_an_oversized_or_non_json_document_is_no_document() -> None:
    with respx.mock(assert_all_called=True) as mock:
        big = b'{"pad": "' + b"x" * http_discovery.MAX_DOCUMENT_BYTES + b'"}'
        mock.get(PRM_PATH).respond(200, content=big)
        mock.get(PRM_ROOT).respond(200, text="<html></html>")
        assert (await fetch(PRM_PATH)).document is None
        assert (await fetch(PRM_ROOT)).document is None


async def test_the_probe_reports_the_challenge() -> None:
    with respx.mock(assert_all_called=True) as mock:
        mock.post(UPSTREAM).respond(401, headers={"WWW-Authenticate": CHALLENGE})
        async with httpx.AsyncClient() as client:
            reply = await HttpDiscovery(client, allow_insecure_http=False).probe(UPSTREAM)
    assert (reply.status, reply.challenge) == (401, CHALLENGE)


# --- Proxy: discovery at startup --------------------------------------------------------


def approving(listener: ScriptedCallbackListener) -> ScriptedBrowser:
    """A browser whose user approves every login at once, with code-1, code-2, ..."""
    opened: list[str] = []

    def approve(url: str) -> None:
        opened.append(url)
        listener.settle(Granted(f"code-{len(opened)}"))

    return ScriptedBrowser(approve)


def form(request: httpx.Request) -> dict[str, str]:
    return dict(parse_qsl(request.content.decode(), keep_blank_values=True))


def query(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


@dataclass
class Login:
    listener: ScriptedCallbackListener
    browser: ScriptedBrowser
    store: FakeTokenStore
    clock: FakeClock


def login_ports() -> Login:
    listener = ScriptedCallbackListener()
    return Login(listener, approving(listener), FakeTokenStore(), FakeClock())


def proxy_for(config: ProxyConfig | LoadedConfig, ports: Login) -> Proxy:
    return Proxy(
        config,
        browser=ports.browser,
        callback_listener=ports.listener,
        entropy=FakeEntropy(),
        token_store=ports.store,
        clock=ports.clock,
    )


async def test_a_proxy_with_only_an_upstream_url_discovers_registers_and_logs_in(
    tmp_path: Path,
) -> None:
    env = {"UPSTREAM_URL": UPSTREAM, "OAUTH2_TOKEN_CACHE_DIR": str(tmp_path)}
    ports = login_ports()
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock, scopes=["mcp:read"])
        mock.post(REGISTER_URL).respond(201, json={"client_id": "dyn-1"})
        token = mock.post(TOKEN_URL).respond(
            200, json={"access_token": "at-1", "token_type": "Bearer", "refresh_token": "rt-1"}
        )
        async with proxy_for(Proxy.load_config(env), ports) as proxy:
            assert len(mock.calls) == 4  # discovered and registered before any token
            assert (await proxy.access_token()).value == "at-1"
            loaded_now = proxy.container.loaded_config()
    oauth = proxy.config.oauth2
    assert (oauth.token_url, oauth.authorization_url, oauth.client_id) == (
        TOKEN_URL,
        AUTHORIZE_URL,
        "dyn-1",
    )
    assert loaded_now.source_of("oauth2.tokenUrl") == Source("discovery", ISSUER)
    assert loaded_now.source_of("oauth2.clientId").kind == "discovery"
    assert loaded_now.source_of("oauth2.tokenCacheDir").kind == "env"
    assert FileClientRegistry(tmp_path).load(ISSUER) == registered("dyn-1")
    (url,) = ports.browser.opened
    assert url.startswith(AUTHORIZE_URL + "?")
    shown = query(url)
    assert shown["client_id"] == "dyn-1"
    assert shown["scope"] == "mcp:read offline_access"
    assert shown["resource"] == UPSTREAM
    assert shown["code_challenge_method"] == "S256"
    assert shown["redirect_uri"] == REDIRECT
    secrets = ports.listener.secrets
    assert secrets is not None
    assert (secrets.issuer, secrets.issuer_required) == (ISSUER, True)
    sent = form(token.calls.last.request)
    assert sent["grant_type"] == "authorization_code"
    assert (sent["client_id"], sent["code"], sent["resource"]) == ("dyn-1", "code-1", UPSTREAM)
    assert sent["code_verifier"] == secrets.verifier
    assert "client_secret" not in sent


async def test_a_secret_issued_at_registration_is_used_from_the_start() -> None:
    ports = login_ports()
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock)
        mock.post(REGISTER_URL).respond(
            201, json={"client_id": "dyn-1", "client_secret": "dyn-secret"}
        )
        token = mock.post(TOKEN_URL).respond(
            200, json={"access_token": "at-1", "token_type": "Bearer"}
        )
        async with proxy_for(loaded(), ports) as proxy:
            await proxy.access_token()
    assert form(token.calls.last.request).get("client_secret") == "dyn-secret"


NEW_ISSUER = "https://idp2.example"


async def test_a_move_to_another_authorization_server_is_followed_with_a_new_client() -> None:
    ports = login_ports()
    with respx.mock(assert_all_called=True) as mock:
        mock.post(UPSTREAM).respond(401, headers={"WWW-Authenticate": CHALLENGE})
        resource_metadata = mock.get(PRM_PATH).respond(200, json=prm())
        mock.get(AS_META).respond(200, json=as_metadata())
        mock.post(REGISTER_URL).respond(201, json={"client_id": "dyn-1"})
        mock.post(TOKEN_URL).respond(
            200, json={"access_token": "at-1", "token_type": "Bearer", "refresh_token": "rt-1"}
        )
        async with proxy_for(loaded(), ports) as proxy:
            tokens = proxy.container.token_manager()
            assert (await proxy.access_token()).value == "at-1"
            assert not await tokens.follow_move(tokens.moves)  # the same server: nothing to do

            resource_metadata.respond(200, json=prm(servers=(NEW_ISSUER,)))
            mock.get(f"{NEW_ISSUER}/.well-known/oauth-authorization-server").respond(
                200,
                json=as_metadata(
                    NEW_ISSUER,
                    authorization_endpoint=f"{NEW_ISSUER}/authorize",
                    token_endpoint=f"{NEW_ISSUER}/token",
                    registration_endpoint=f"{NEW_ISSUER}/register",
                ),
            )
            mock.post(f"{NEW_ISSUER}/register").respond(201, json={"client_id": "dyn-2"})
            new_token = mock.post(f"{NEW_ISSUER}/token").respond(
                200, json={"access_token": "at-2", "token_type": "Bearer"}
            )
            assert await tokens.follow_move(tokens.moves)
            assert (await proxy.access_token()).value == "at-2"
            assert not await tokens.follow_move(tokens.moves)
    first, second = ports.browser.opened
    assert query(first)["client_id"] == "dyn-1"
    assert second.startswith(f"{NEW_ISSUER}/authorize?")
    assert query(second)["client_id"] == "dyn-2"
    sent = form(new_token.calls.last.request)
    assert (sent["grant_type"], sent["client_id"], sent["code"]) == (
        "authorization_code",
        "dyn-2",
        "code-2",
    )
    assert ports.listener.secrets is not None
    assert ports.listener.secrets.issuer == NEW_ISSUER


def moved_to_new_issuer(mock: respx.MockRouter) -> None:
    mock.get(PRM_PATH).respond(200, json=prm(servers=(NEW_ISSUER,)))
    mock.get(f"{NEW_ISSUER}/.well-known/oauth-authorization-server").respond(
        200, json=as_metadata(NEW_ISSUER, token_endpoint=f"{NEW_ISSUER}/token")
    )


@pytest.mark.parametrize(
    ("oauth", "reason"),
    [
        (
            {"grant": "client_credentials", "client_id": "app", "client_secret": "s3cret"},
            "oauth2.clientSecret / OAUTH2_CLIENT_SECRET is for the old one and not sent there",
        ),
        (
            {"grant": "password", "client_id": "app", "username": "u", "password": "pw"},
            "oauth2.password / OAUTH2_PASSWORD is for the old one and not sent there",
        ),
        (
            {"client_id": "app", "token_url": TOKEN_URL},
            "oauth2.tokenUrl / OAUTH2_TOKEN_URL is for the old one and not sent there",
        ),
        (
            {"grant": "refresh_token", "client_id": "app", "refresh_token": "r-0"},
            "grant refresh_token cannot log in there by itself",
        ),
    ],
    ids=["client-secret", "password", "token-url", "no-browser"],
)
async def test_a_configuration_for_the_old_server_does_not_follow_a_move(
    oauth: dict[str, Any], reason: str, caplog_warnings: pytest.LogCaptureFixture
) -> None:
    ports = login_ports()
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock)
        mock.post(TOKEN_URL).respond(200, json={"access_token": "at-1", "token_type": "Bearer"})
        async with proxy_for(loaded(**oauth), ports) as proxy:
            assert (await proxy.access_token()).value == "at-1"
            moved_to_new_issuer(mock)
            tokens = proxy.container.token_manager()
            assert not await tokens.follow_move(0)
            assert not await tokens.follow_move(0)
            assert proxy.container.token_requests().token_url == TOKEN_URL
            proxy.invalidate(await proxy.access_token())
            assert (await proxy.access_token()).value == "at-1"  # from the old server
    assert caplog_warnings.text.count(reason) == 1
    assert all(url.startswith(AUTHORIZE_URL + "?") for url in ports.browser.opened)


async def test_a_server_still_listed_is_not_a_move() -> None:
    ports = login_ports()
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock)
        mock.post(REGISTER_URL).respond(201, json={"client_id": "dyn-1"})
        mock.post(TOKEN_URL).respond(200, json={"access_token": "at-1", "token_type": "Bearer"})
        async with proxy_for(loaded(), ports) as proxy:
            await proxy.access_token()
            mock.get(PRM_PATH).respond(200, json=prm(servers=(NEW_ISSUER, ISSUER)))
            mock.get(f"{NEW_ISSUER}/.well-known/oauth-authorization-server").respond(
                200, json=as_metadata(NEW_ISSUER)
            )
            assert not await proxy.container.token_manager().follow_move(0)
    assert len(ports.browser.opened) == 1


async def test_when_the_server_cannot_be_asked_again_nothing_moves(
    caplog_warnings: pytest.LogCaptureFixture,
) -> None:
    ports = login_ports()
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock)
        mock.post(REGISTER_URL).respond(201, json={"client_id": "dyn-1"})
        mock.post(TOKEN_URL).respond(200, json={"access_token": "at-1", "token_type": "Bearer"})
        async with proxy_for(loaded(), ports) as proxy:
            assert (await proxy.access_token()).value == "at-1"
            mock.post(UPSTREAM).mock(side_effect=httpx.ConnectError("refused"))
            assert not await proxy.container.token_manager().follow_move(0)
            assert (await proxy.access_token()).value == "at-1"
    (warning,) = warnings(caplog_warnings)
    assert warning.getMessage() == "could not discover the authorization server again"
    assert len(ports.browser.opened) == 1


async def test_a_proxy_that_discovers_nothing_does_not_start() -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock.post(UPSTREAM).respond(404)
        mock.get(url__startswith="https://mcp.example/.well-known/").respond(404)
        with pytest.raises(DiscoveryError) as caught:
            async with proxy_for(ProxyConfig(upstream=UpstreamConfig(url=UPSTREAM)), login_ports()):
                raise AssertionError("the proxy started")
    message = str(caught.value)
    assert f"GET {PRM_PATH} → 404" in message
    assert "https://mcp.example/.well-known/openid-configuration → 404" in message
    assert "DISCOVERY_ENABLED=false" in message


async def test_with_discovery_off_missing_endpoints_are_config_errors() -> None:
    config = ProxyConfig(
        upstream=UpstreamConfig(url=UPSTREAM),
        oauth2=OAuth2Config(client_id="app"),
        discovery=DiscoveryConfig(enabled=False),
    )
    with respx.mock(assert_all_called=False) as mock:
        with pytest.raises(ConfigError, match="OAUTH2_TOKEN_URL"):
            Proxy(config)
        assert not mock.calls


async def test_what_discovery_did_not_find_is_a_config_error_at_startup() -> None:
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock, metadata=as_metadata(token_endpoint=None))
        with pytest.raises(ConfigError, match="discovery did not find it") as caught:
            async with proxy_for(loaded(client_id="app"), login_ports()):
                raise AssertionError("the proxy started")
    assert "OAUTH2_TOKEN_URL" in str(caught.value)


async def test_a_cleartext_discovered_endpoint_stops_the_proxy() -> None:
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock, metadata=as_metadata(token_endpoint="http://idp.example/token"))
        with pytest.raises(InsecureUrlError, match="token_endpoint"):
            async with proxy_for(loaded(client_id="app"), login_ports()):
                raise AssertionError("the proxy started")


async def test_the_browser_login_refuses_a_server_without_s256() -> None:
    ports = login_ports()
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock, metadata=as_metadata(code_challenge_methods_supported=None))
        async with proxy_for(loaded(client_id="app"), ports) as proxy:
            with pytest.raises(OAuthError, match="OAUTH2_ASSUME_PKCE") as caught:
                await proxy.access_token()
    assert "S256" in str(caught.value)
    assert ports.browser.opened == []


async def test_assume_pkce_lets_the_browser_login_go_ahead() -> None:
    ports = login_ports()
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock, metadata=as_metadata(code_challenge_methods_supported=["plain"]))
        mock.post(TOKEN_URL).respond(200, json={"access_token": "at-1", "token_type": "Bearer"})
        async with proxy_for(loaded(client_id="app", assume_pkce=True), ports) as proxy:
            assert (await proxy.access_token()).value == "at-1"
    assert query(ports.browser.opened[0])["code_challenge_method"] == "S256"


async def test_the_iss_check_follows_what_the_server_advertises() -> None:
    ports = login_ports()
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(
            mock, metadata=as_metadata(authorization_response_iss_parameter_supported=False)
        )
        mock.post(TOKEN_URL).respond(200, json={"access_token": "at-1", "token_type": "Bearer"})
        async with proxy_for(loaded(client_id="app"), ports) as proxy:
            await proxy.access_token()
    assert ports.listener.secrets is not None
    assert (ports.listener.secrets.issuer, ports.listener.secrets.issuer_required) == (
        ISSUER,
        False,
    )


async def test_the_real_listener_refuses_a_callback_from_another_issuer() -> None:
    login = LoginSecrets.from_random(
        b"\x01" * 32, b"\x02" * 32, issuer=ISSUER, issuer_required=True
    )
    target = RedirectTarget("127.0.0.1", 0, "/callback")
    with anyio.fail_after(10):
        async with (
            LoopbackCallbackListener().listening(target, login) as pending,
            httpx.AsyncClient(trust_env=False) as browser,
        ):

            async def visit(**params: str) -> int:
                url = f"{pending.redirect_uri}?{urlencode({'state': login.state, **params})}"
                return (await browser.get(url)).status_code

            assert await visit(error="access_denied", iss="https://evil.example") == 400
            assert await visit(code="evil-code", iss="https://evil.example") == 400
            assert await visit(code="no-iss") == 400
            assert await visit(code="the-code", iss=ISSUER) == 200
            outcome = await pending.result()
    assert outcome == Granted("the-code")


# --- Proxy: a registration the server forgot -------------------------------------------


def invalid_client() -> httpx.Response:
    return httpx.Response(401, json={"error": "invalid_client"})


def issued(access: str, refresh: str) -> httpx.Response:
    body = {"access_token": access, "token_type": "Bearer", "expires_in": 60}
    return httpx.Response(200, json={**body, "refresh_token": refresh})


async def test_invalid_client_registers_again_and_logs_in_as_the_new_client(
    tmp_path: Path,
) -> None:
    FileClientRegistry(tmp_path).save(registered("dyn-1"))
    ports = login_ports()
    ports.store.save(CachedLogin("dyn-1", TOKEN_URL, "rt-old", 1.0))
    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock)
        registration = mock.post(REGISTER_URL).respond(201, json={"client_id": "dyn-2"})
        token = mock.post(TOKEN_URL)
        token.side_effect = [invalid_client(), issued("at-2", "rt-2")]
        async with proxy_for(loaded(token_cache_dir=str(tmp_path)), ports) as proxy:
            assert proxy.config.oauth2.client_id == "dyn-1"
            assert not registration.called  # the saved registration was reused at startup
            assert (await proxy.access_token()).value == "at-2"
    assert registration.call_count == 1
    assert FileClientRegistry(tmp_path).load(ISSUER) == registered("dyn-2")
    refresh, exchange = (form(call.request) for call in token.calls)
    assert (refresh["grant_type"], refresh["client_id"]) == ("refresh_token", "dyn-1")
    assert (exchange["grant_type"], exchange["client_id"]) == ("authorization_code", "dyn-2")
    (url,) = ports.browser.opened
    assert query(url)["client_id"] == "dyn-2"


async def test_without_a_registration_invalid_client_is_an_error() -> None:
    ports = login_ports()
    ports.store.save(CachedLogin("app", TOKEN_URL, "rt-old", 1.0))
    with respx.mock(assert_all_called=False) as mock:
        standard_idp(mock)
        registration = mock.post(REGISTER_URL).respond(201, json={"client_id": "dyn-2"})
        token = mock.post(TOKEN_URL).mock(return_value=invalid_client())
        async with proxy_for(loaded(client_id="app"), ports) as proxy:
            with pytest.raises(TokenEndpointError) as caught:
                await proxy.access_token()
    assert caught.value.error == "invalid_client"
    assert not registration.called
    assert token.call_count == 1
    assert ports.browser.opened == []


async def test_after_registering_again_renewal_uses_the_new_refresh_token(
    tmp_path: Path,
) -> None:
    FileClientRegistry(tmp_path).save(registered("dyn-1"))
    ports = login_ports()
    ports.store.save(CachedLogin("dyn-1", TOKEN_URL, "rt-old", 1.0))

    def answer(request: httpx.Request) -> httpx.Response:
        sent = form(request)
        if sent.get("refresh_token") == "rt-old":
            return (
                invalid_client()
                if sent["client_id"] == "dyn-1"
                else httpx.Response(400, json={"error": "invalid_grant"})
            )
        if sent["grant_type"] == "authorization_code":
            return issued("at-2", "rt-2")
        return issued("at-3", "rt-3")

    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock)
        mock.post(REGISTER_URL).respond(201, json={"client_id": "dyn-2"})
        token = mock.post(TOKEN_URL).mock(side_effect=answer)
        async with proxy_for(loaded(token_cache_dir=str(tmp_path)), ports) as proxy:
            assert (await proxy.access_token()).value == "at-2"
            ports.clock.advance(60)
            await proxy.access_token()
    sent = [form(call.request) for call in token.calls]
    assert [
        (f["grant_type"], f.get("refresh_token", f.get("code")), f["client_id"]) for f in sent
    ] == [
        ("refresh_token", "rt-old", "dyn-1"),
        ("authorization_code", "code-1", "dyn-2"),
        ("refresh_token", "rt-2", "dyn-2"),
    ]
    assert len(ports.browser.opened) == 1


# --- a resource indicator the IdP refuses (Microsoft Entra ID) --------------------------

AADSTS9010010 = {
    "error": "invalid_request",
    "error_description": "AADSTS9010010: The resource parameter provided in the request "
    "doesn't match with the requested scopes. Trace ID: 1 Correlation ID: 2",
}


async def test_the_token_client_asks_once_more_without_the_resource_and_stops_sending_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    oauth = OAuth2Config(
        grant="client_credentials",
        client_id="app",
        client_secret=SecretStr("s"),
        token_url=TOKEN_URL,
        authorization_url=AUTHORIZE_URL,
        scope="api://mcp/.default",
        resource=UPSTREAM,
    )
    builder = build_token_requests(oauth)
    endpoint = FakeTokenEndpoint(json_reply(400, AADSTS9010010), token_reply("at-1"))
    client = TokenClient(
        endpoint, FakeClock(), Redactor(), refresh_skew_seconds=30, requests=builder
    )
    with caplog.at_level(logging.WARNING, logger="mcp_oauth2_proxy"):
        assert (await client.exchange(builder.client_credentials())).access.value == "at-1"
    first, second = endpoint.forms
    assert first["resource"] == UPSTREAM
    assert "resource" not in second
    assert {k: v for k, v in first.items() if k != "resource"} == second
    assert builder.resource is None
    assert "resource" not in dict(builder.refresh("rt").form)
    assert "OAUTH2_RESOURCE=none" in caplog.text
    # The browser login asks without it too.
    listener = ScriptedCallbackListener()
    browser = ScriptedBrowser(lambda url: listener.settle(Granted("c")))
    endpoint.replies.append(token_reply("at-2"))
    login = InteractiveLogin(oauth, client, builder, listener, browser, FakeEntropy())
    await login.run()
    assert "resource" not in query(browser.opened[0])
    assert "resource" not in endpoint.forms[-1]


async def test_the_resource_is_dropped_only_once() -> None:
    oauth = OAuth2Config(
        grant="client_credentials",
        client_id="app",
        client_secret=SecretStr("s"),
        token_url=TOKEN_URL,
        resource=UPSTREAM,
    )
    builder = build_token_requests(oauth)
    endpoint = FakeTokenEndpoint(json_reply(400, AADSTS9010010), json_reply(400, AADSTS9010010))
    client = TokenClient(
        endpoint, FakeClock(), Redactor(), refresh_skew_seconds=30, requests=builder
    )
    with pytest.raises(TokenEndpointError, match="AADSTS9010010"):
        await client.exchange(builder.client_credentials())
    assert len(endpoint.requests) == 2


async def test_a_discovered_resource_entra_refuses_is_dropped_for_good() -> None:
    config = loaded(grant="client_credentials", client_id="app", client_secret="s")

    def entra(request: httpx.Request) -> httpx.Response:
        if "resource" in form(request):
            return httpx.Response(400, json=AADSTS9010010)
        return httpx.Response(200, json={"access_token": "at", "token_type": "Bearer"})

    with respx.mock(assert_all_called=True) as mock:
        standard_idp(mock)
        token = mock.post(TOKEN_URL).mock(side_effect=entra)
        async with Proxy(config) as proxy:
            assert proxy.config.oauth2.resource == UPSTREAM
            first = await proxy.access_token()
            proxy.invalidate(first)
            await proxy.access_token()
            assert proxy.container.token_requests().resource is None
    assert ["resource" in form(call.request) for call in token.calls] == [True, False, False]


# --- step-up authorization through the bridge -------------------------------------------

STEP_UP_CONFIG = ProxyConfig(
    upstream=UpstreamConfig(url=UPSTREAM, timeout_ms=5000, open_server_stream=False),
    oauth2=OAuth2Config(
        client_id="app",
        token_url=TOKEN_URL,
        authorization_url=AUTHORIZE_URL,
        scope="files:read",
    ),
)
INSUFFICIENT = 'Bearer error="insufficient_scope", scope="files:write", resource_metadata="x"'


def request(request_id: JsonId, method: str = "tools/call") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {"name": "save"}}


@dataclass
class Bridged:
    upstream: FakeUpstream
    endpoint: FakeTokenEndpoint
    stdin: anyio.abc.ObjectSendStream[bytes]
    stdout: anyio.abc.ObjectReceiveStream[bytes]

    async def send(self, document: object) -> None:
        await self.stdin.send(json.dumps(document).encode() + b"\n")

    async def receive(self) -> Any:
        return json.loads(await self.stdout.receive())

    async def call(self, document: object) -> Any:
        await self.send(document)
        return await self.receive()

    def authorizations(self) -> list[str]:
        return [post.headers["Authorization"] for post in self.upstream.posts()]


@asynccontextmanager
async def bridged(
    handler: Handler,
    config: ProxyConfig,
    endpoint: FakeTokenEndpoint,
    ports: Login,
    rediscovery: object = None,
) -> AsyncIterator[Bridged]:
    upstream = FakeUpstream(handler)
    stdin_send, stdin_receive = anyio.create_memory_object_stream[bytes](100)
    stdout_send, stdout_receive = anyio.create_memory_object_stream[bytes](100)
    proxy = proxy_for(config, ports)
    proxy.container.rediscovery.override(providers.Object(rediscovery))
    proxy.container.token_endpoint.override(providers.Object(endpoint))
    proxy.container.upstream.override(providers.Object(upstream))
    # No HTTP at all is expected here: respx refuses anything that would reach a network.
    with anyio.fail_after(15), respx.mock(assert_all_called=False) as mock:
        async with (
            stdin_send,
            stdin_receive,
            stdout_send,
            stdout_receive,
            proxy,
            anyio.create_task_group() as tasks,
        ):
            tasks.start_soon(
                proxy.serve, MemoryByteReceive(stdin_receive), MemoryByteSend(stdout_send)
            )
            yield Bridged(upstream, endpoint, stdin_send, stdout_receive)
            await stdin_send.aclose()
        assert not mock.calls


def ok(exchange: Exchange) -> FakeReply:
    return json_response({"jsonrpc": "2.0", "id": exchange.document["id"], "result": "saved"})


async def refuse_the_first_token(exchange: Exchange) -> FakeReply:
    if exchange.headers["Authorization"] == "Bearer token-1":
        return FakeReply(403, {"www-authenticate": INSUFFICIENT})
    return ok(exchange)


def two_logins() -> FakeTokenEndpoint:
    return FakeTokenEndpoint(
        token_reply("token-1", refresh="r-1"), token_reply("token-2", refresh="r-2")
    )


async def test_insufficient_scope_logs_in_again_with_the_union_and_resends_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ports = login_ports()
    async with bridged(refuse_the_first_token, STEP_UP_CONFIG, two_logins(), ports) as session:
        answer = await session.call(request(1))
    assert answer == {"jsonrpc": "2.0", "id": 1, "result": "saved"}
    assert session.authorizations() == ["Bearer token-1", "Bearer token-2"]
    first, second = ports.browser.opened
    assert query(first)["scope"] == "files:read"
    assert query(second)["scope"] == "files:read files:write"
    assert [f["code"] for f in session.endpoint.forms] == ["code-1", "code-2"]
    assert "needs more permissions (scope files:read files:write)" in caplog.text


async def test_requests_refused_together_cause_one_step_up_login() -> None:
    ports = login_ports()
    both_refused = anyio.Event()
    refused = 0

    async def refuse_both_first(exchange: Exchange) -> FakeReply:
        nonlocal refused
        if exchange.headers["Authorization"] == "Bearer token-1":
            refused += 1
            if refused == 2:
                both_refused.set()
            await both_refused.wait()
            return FakeReply(403, {"www-authenticate": INSUFFICIENT})
        return ok(exchange)

    async with bridged(refuse_both_first, STEP_UP_CONFIG, two_logins(), ports) as session:
        await session.send(request(1))
        await session.send(request(2))
        answers = [await session.receive(), await session.receive()]
    assert sorted(answer["id"] for answer in answers) == [1, 2]
    assert all(answer["result"] == "saved" for answer in answers)
    assert len(ports.browser.opened) == 2
    assert len(session.endpoint.requests) == 2
    assert sorted(session.authorizations()) == ["Bearer token-1"] * 2 + ["Bearer token-2"] * 2


OLD_SERVERS_TOKENS = ("Bearer token-1", "Bearer token-2")
UNAUTHORIZED = FakeReply(401, {"www-authenticate": 'Bearer realm="mcp"'})


def three_tokens() -> FakeTokenEndpoint:
    """A login and a refresh at the old server, then a login at the new one."""
    return FakeTokenEndpoint(
        token_reply("token-1", refresh="r-1"),
        token_reply("token-2", refresh="r-2"),
        token_reply("token-3"),
    )


class MovesOnce:
    """Rediscovery that finds, once, that the server moved to another authorization server."""

    def __init__(self) -> None:
        self.asked = 0

    async def moved(self, login: object) -> bool:
        self.asked += 1
        return self.asked == 1


async def test_a_persistent_401_asks_whether_the_server_moved_and_logs_in_there() -> None:
    async def refuse_the_old_servers_tokens(exchange: Exchange) -> FakeReply:
        refused = exchange.headers["Authorization"] in OLD_SERVERS_TOKENS
        return UNAUTHORIZED if refused else ok(exchange)

    ports = login_ports()
    endpoint = three_tokens()
    move = MovesOnce()
    async with bridged(refuse_the_old_servers_tokens, STEP_UP_CONFIG, endpoint, ports, move) as s:
        answer = await s.call(request(1))
        assert answer == {"jsonrpc": "2.0", "id": 1, "result": "saved"}
        refused = await s.call(request(2, "tools/list"))
    assert s.authorizations() == ["Bearer token-1", "Bearer token-2"] + ["Bearer token-3"] * 2
    assert [form["grant_type"] for form in endpoint.forms] == [
        "authorization_code",
        "refresh_token",
        "authorization_code",
    ]
    assert "r-2" not in endpoint.forms[2].values()
    assert len(ports.browser.opened) == 2
    assert move.asked == 1
    assert refused == {"jsonrpc": "2.0", "id": 2, "result": "saved"}


async def test_requests_refused_together_follow_one_move() -> None:
    both_refused = anyio.Event()
    refused = 0

    async def refuse_the_old_servers_tokens(exchange: Exchange) -> FakeReply:
        nonlocal refused
        if exchange.headers["Authorization"] == "Bearer token-1":
            refused += 1
            if refused == 2:
                both_refused.set()
            await both_refused.wait()
        refused_old = exchange.headers["Authorization"] in OLD_SERVERS_TOKENS
        return UNAUTHORIZED if refused_old else ok(exchange)

    ports = login_ports()
    endpoint = three_tokens()
    move = MovesOnce()
    async with bridged(refuse_the_old_servers_tokens, STEP_UP_CONFIG, endpoint, ports, move) as s:
        await s.send(request(1))
        await s.send(request(2))
        answers = [await s.receive(), await s.receive()]
    assert sorted(answer["id"] for answer in answers) == [1, 2]
    assert all(answer.get("result") == "saved" for answer in answers)
    assert move.asked == 1
    assert len(ports.browser.opened) == 2


async def test_a_persistent_401_is_explained_when_the_server_did_not_move() -> None:
    async def always_refused(exchange: Exchange) -> FakeReply:
        return UNAUTHORIZED

    endpoint = FakeTokenEndpoint(
        token_reply("token-1", refresh="r-1"), token_reply("token-2", refresh="r-2")
    )
    move = MovesOnce()
    move.asked = 1
    async with bridged(always_refused, STEP_UP_CONFIG, endpoint, login_ports(), move) as s:
        answer = await s.call(request(3))
    assert answer["error"]["data"] == {"status": 401}
    assert move.asked == 2
    assert len(s.upstream.posts()) == 2


async def test_a_step_up_that_does_not_help_is_not_repeated() -> None:
    async def always_insufficient(exchange: Exchange) -> FakeReply:
        return FakeReply(403, {"www-authenticate": INSUFFICIENT}, [b"forbidden"])

    ports = login_ports()
    async with bridged(always_insufficient, STEP_UP_CONFIG, two_logins(), ports) as session:
        answer = await session.call(request(7))
    assert answer["id"] == 7
    assert answer["error"]["code"] == -32001
    assert answer["error"]["data"]["status"] == 403
    assert len(session.upstream.posts()) == 2
    assert len(ports.browser.opened) == 2


@pytest.mark.parametrize(
    "oauth",
    [
        OAuth2Config(
            grant="client_credentials",
            client_id="app",
            client_secret=SecretStr("s"),
            token_url=TOKEN_URL,
        ),
        OAuth2Config(
            grant="refresh_token",
            client_id="app",
            refresh_token=SecretStr("r-0"),
            token_url=TOKEN_URL,
        ),
    ],
    ids=["client_credentials", "refresh_token"],
)
async def test_without_a_browser_login_insufficient_scope_names_the_missing_scope(
    oauth: OAuth2Config,
) -> None:
    config = STEP_UP_CONFIG.model_copy(update={"oauth2": oauth})
    ports = login_ports()
    async with bridged(refuse_the_first_token, config, two_logins(), ports) as session:
        answer = await session.call(request("a"))
    error = answer["error"]
    assert (answer["id"], error["code"]) == ("a", -32001)
    assert "'files:write'" in error["message"]
    assert "insufficient_scope" in error["message"]
    assert "OAUTH2_SCOPE" in error["message"]
    assert error["data"] == {"status": 403, "scope": "files:write"}
    assert len(session.upstream.posts()) == 1
    assert ports.browser.opened == []
