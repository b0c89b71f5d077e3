"""The IdP rows of the fault-handling matrix (docs/reliability.md), end to end.

Each fault is played by the token URL itself: respx answers at httpx's transport seam, or a
loopback port nobody listens on refuses the connection. Everything above it is the real
thing: `HttpTokenEndpoint` over the container's httpx client, `TokenClient`, `TokenManager`
and the bridge, assembled by `Proxy`; only the clock, the sleep between attempts (recorded,
never slept), the upstream MCP server, the token cache and the browser are fakes.

For every fault the tests pin down:

1. the error: its type, and that it says what happened and what to do;
2. the log: the logfmt lines the proxy writes, and that no secret is in any of them (nor in
   the error, nor in the line the MCP client gets);
3. the retries: how many requests reached the token endpoint, and the waits in between.

"At startup" is `proxy.access_token()`, the prefetch the command does before `ready` (its
error becomes the `cannot start:` line, exit 3); "while running" is a `tools/call` from the
MCP client, answered with a JSON-RPC error when no token can be had.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import anyio
import httpx
import pytest
import respx
from dependency_injector import providers
from pydantic import SecretStr

from mcp_oauth2_proxy import OAuth2Config, Proxy, ProxyConfig, UpstreamConfig
from mcp_oauth2_proxy.adapters.stderr_log import (
    LOGGER_NAME,
    TRACE,
    LogfmtFormatter,
    package_logger,
)
from mcp_oauth2_proxy.app.cli import EXIT_AUTH, main
from mcp_oauth2_proxy.domain.authorization import Granted
from mcp_oauth2_proxy.domain.cached_login import CachedLogin, cache_key
from mcp_oauth2_proxy.domain.errors import (
    IdpUnreachableError,
    OAuthError,
    TokenEndpointError,
)
from mcp_oauth2_proxy.domain.token_exchange import (
    MAX_TRANSIENT_ATTEMPTS,
    SLOW_DOWN_SECONDS,
)

from ..fakes import (
    Exchange,
    FakeClock,
    FakeEntropy,
    FakeReply,
    FakeTokenStore,
    FakeUpstream,
    MemoryByteReceive,
    MemoryByteSend,
    ScriptedBrowser,
    ScriptedCallbackListener,
    Sleeps,
    json_response,
)

TOKEN_URL = "https://idp.example/oauth2/token"
UPSTREAM_URL = "https://mcp.example/mcp"
CLIENT_SECRET = "cs-Sup3r-s3cret-value"
REFRESH_TOKEN = "rt-cached-s3cret-value"
SECRETS = (CLIENT_SECRET, REFRESH_TOKEN)
TOKEN = {"access_token": "at-fresh-value", "token_type": "Bearer", "expires_in": 3600}
# What the bridge puts before the token error in the line the MCP client gets.
NO_TOKEN = "could not obtain an access token for the upstream: "
RETRY_WARNING = 'msg="the IdP refused for now; asking again"'

# A corporate proxy's error page: markup first, the useful sentence late, a stray
# non-UTF-8 byte and line breaks in between.
PROXY_PAGE = (
    b"<!DOCTYPE html>\r\n<html><head><title>502 Bad Gateway</title>\n"
    b"<style>body{font-family:sans-serif}</style></head>\n<body><h1>Bad \xff Gateway</h1>\n"
    + b"<p>" + b"The proxy could not connect to idp.example. " * 40 + b"</p></body></html>"
)  # fmt: skip
LOGIN_PAGE = (
    "<html><head><title>Sign in</title></head><body><form method=post action=/login>"
    "<input name=username><input type=password name=password></form></body></html>"
)


# --- the harness ----------------------------------------------------------------------------


async def upstream_server(exchange: Exchange) -> FakeReply:
    """A 2025-wire MCP server that answers every request with the Authorization it got."""
    if exchange.method != "POST":
        return FakeReply(405 if exchange.method == "GET" else 200)
    document = exchange.document
    if "id" not in document:
        return FakeReply(202)
    auth = exchange.headers.get("Authorization")
    return json_response({"jsonrpc": "2.0", "id": document["id"], "result": {"auth": auth}})


@dataclass
class Harness:
    proxy: Proxy
    upstream: FakeUpstream
    sleeps: Sleeps
    browser: ScriptedBrowser
    answers: list[dict[str, Any]] = field(default_factory=list)

    async def startup_error(self) -> OAuthError:
        """The prefetch the command does before `ready`, expected to fail."""
        with pytest.raises(OAuthError) as caught:
            await self.proxy.access_token()
        return caught.value

    async def tool_call(self, request_id: int = 1) -> dict[str, Any]:
        """One `tools/call` from the MCP client, served to the end: the line it gets back."""
        line = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {}}
        stdin_send, stdin_receive = anyio.create_memory_object_stream[bytes](10)
        stdout_send, stdout_receive = anyio.create_memory_object_stream[bytes](10)
        async with stdin_send, stdin_receive, stdout_send, stdout_receive:
            await stdin_send.send(json.dumps(line).encode() + b"\n")
            await stdin_send.aclose()
            await self.proxy.serve(MemoryByteReceive(stdin_receive), MemoryByteSend(stdout_send))
            raw = await stdout_receive.receive()
        answer: dict[str, Any] = json.loads(raw)
        self.answers.append(answer)
        return answer

    async def tool_call_error(self, request_id: int = 1) -> str:
        """A `tools/call` the proxy must answer with its -32000 error; the message."""
        answer = await self.tool_call(request_id)
        assert answer["id"] == request_id
        assert answer["error"]["code"] == -32000
        message: str = answer["error"]["message"]
        return message


def client_credentials(token_url: str = TOKEN_URL) -> ProxyConfig:
    return ProxyConfig(
        upstream=UpstreamConfig(url=UPSTREAM_URL),
        oauth2=OAuth2Config(
            grant="client_credentials",
            client_id="app",
            client_secret=SecretStr(CLIENT_SECRET),
            token_url=token_url,
        ),
    )


def user_login(*, interactive: bool, token_url: str = TOKEN_URL) -> ProxyConfig:
    """The default grant, living on a login cached by `mcp-oauth2-proxy login`."""
    return ProxyConfig(
        upstream=UpstreamConfig(url=UPSTREAM_URL),
        oauth2=OAuth2Config(
            grant="authorization_code",
            client_id="app",
            token_url=token_url,
            authorization_url="https://idp.example/oauth2/authorize",
            interactive=interactive,
        ),
    )


def cached_login(token_url: str = TOKEN_URL) -> CachedLogin:
    return CachedLogin("app", token_url, REFRESH_TOKEN, saved_at=1.0)


@asynccontextmanager
async def harness(
    config: ProxyConfig, *, store: FakeTokenStore | None = None
) -> AsyncIterator[Harness]:
    """A running Proxy whose token requests go through the real HTTP adapter."""
    clock = FakeClock()
    sleeps = Sleeps(clock)
    upstream = FakeUpstream(upstream_server)
    store = store if store is not None else FakeTokenStore()
    listener = ScriptedCallbackListener()
    # The user logs in at once: the IdP redirects back with a code.
    browser = ScriptedBrowser(lambda url: listener.settle(Granted("the-code")))
    proxy = Proxy(
        config,
        clock=clock,
        upstream=upstream,
        token_store=store,
        browser=browser,
        callback_listener=listener,
        entropy=FakeEntropy(),
    )
    token_client = proxy.container.token_client
    assert isinstance(token_client, providers.Singleton)
    token_client.add_kwargs(sleep=sleeps)
    with anyio.fail_after(5):
        async with proxy:
            yield Harness(proxy, upstream, sleeps, browser)


class Logs:
    """The proxy's records as the logfmt lines stderr would show (timestamp cut off)."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog
        self._format = LogfmtFormatter()

    @property
    def lines(self) -> list[str]:
        return [
            self._format.format(record).split(" ", 1)[1]
            for record in self._caplog.records
            if record.name.startswith(LOGGER_NAME)
        ]

    def at(self, level: str) -> list[str]:
        """The lines at `level`, without their `level=` field."""
        prefix = f"level={level} "
        return [line.removeprefix(prefix) for line in self.lines if line.startswith(prefix)]


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Logs:
    # The CLI's log setup stops propagation; caplog listens on the root logger.
    monkeypatch.setattr(package_logger(), "propagate", True)
    caplog.set_level(TRACE, logger=LOGGER_NAME)
    return Logs(caplog)


def answered(error: OAuthError) -> str:
    """The bridge's warn line for a request it answered with this token error."""
    return (
        'msg="answering a request with an error" method=tools/call code=-32000 '
        f'reason="{NO_TOKEN}{error}"'
    )


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        shown = text if isinstance(text, str) else json.dumps(text)
        for secret in SECRETS:
            assert secret not in shown


def assert_clean(h: Harness, logs: Logs, *errors: object) -> None:
    """No secret in any log line, error text or line the MCP client got."""
    assert_no_secret(*logs.lines, *(str(error) for error in errors), *h.answers)


# --- 1. IdP down ----------------------------------------------------------------------------


@pytest.fixture
def refused_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A loopback token URL that refuses connections: the port is bound (so nobody else can
    take it) but never listened on."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound:
        bound.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{bound.getsockname()[1]}/token"


@pytest.mark.anyio
async def test_idp_down_is_one_attempt_and_names_the_token_url_setting(
    refused_url: str, logs: Logs
) -> None:
    async with harness(client_credentials(refused_url)) as h:
        error = await h.startup_error()
        message = await h.tool_call_error()
        again = await h.tool_call_error(2)
    assert isinstance(error, IdpUnreachableError)
    assert str(error) == (
        f"could not reach token endpoint {refused_url}: All connection attempts failed; check "
        "oauth2.tokenUrl / OAUTH2_TOKEN_URL and that the IdP is reachable from this machine "
        "(VPN, HTTPS_PROXY)"
    )
    assert message == NO_TOKEN + str(error)
    assert again == message  # the next request tries again, and fails the same way
    assert not h.upstream.exchanges
    # One connection attempt per token attempt: no retry loop, no waits.
    requests = [line for line in logs.lines if 'msg="requesting a token"' in line]
    assert len(requests) == 3
    assert h.sleeps.waits == []
    assert logs.at("warn") == [answered(error), answered(error)]
    assert_clean(h, logs, error)


@pytest.mark.anyio
async def test_idp_down_during_a_refresh_keeps_the_cached_login(
    refused_url: str, logs: Logs
) -> None:
    store = FakeTokenStore()
    store.save(cached_login(refused_url))
    async with harness(user_login(interactive=True, token_url=refused_url), store=store) as h:
        error = await h.startup_error()
    assert isinstance(error, IdpUnreachableError)
    assert "OAUTH2_TOKEN_URL" in str(error)
    # Not a rejection: the login stays cached for the next try, and no browser opens.
    assert store.load(cache_key("app", refused_url)) == cached_login(refused_url)
    assert h.browser.opened == []
    assert not any("rejected" in line for line in logs.lines)
    assert_clean(h, logs, error)


def test_idp_down_at_startup_is_a_fatal_line_and_exit_3(
    refused_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restored_logger: None,
) -> None:
    command_env(monkeypatch, OAUTH2_TOKEN_URL=refused_url)
    assert main([]) == EXIT_AUTH
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout is for JSON-RPC only
    (line,) = [line for line in captured.err.splitlines() if "level=fatal" in line]
    assert line.split(" ", 1)[1] == (
        f'level=fatal msg="cannot start: could not reach token endpoint {refused_url}: All '
        "connection attempts failed; check oauth2.tokenUrl / OAUTH2_TOKEN_URL and that the IdP "
        'is reachable from this machine (VPN, HTTPS_PROXY)"'
    )
    assert CLIENT_SECRET not in captured.err


@pytest.fixture
def restored_logger() -> Iterator[None]:
    """`main` sets up stderr logging on the package logger; put it back afterwards."""
    logger = package_logger()
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def command_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """The environment an MCP host would start the command with (client credentials)."""
    for name in list(os.environ):
        if name.startswith(("OAUTH2_", "UPSTREAM_", "MCP_PROXY_")) or name in (
            "LOG_LEVEL",
            "DISCOVERY_ENABLED",
            "ALLOW_INSECURE_HTTP",
        ):
            monkeypatch.delenv(name)
    settings = {
        "UPSTREAM_URL": UPSTREAM_URL,
        "OAUTH2_GRANT": "client_credentials",
        "OAUTH2_CLIENT_ID": "app",
        "OAUTH2_CLIENT_SECRET": CLIENT_SECRET,
        "OAUTH2_TOKEN_URL": TOKEN_URL,
        **env,
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)


# --- 2. IdP 5xx -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_500_html_page_is_not_retried_and_shows_status_and_excerpt(logs: Logs) -> None:
    page = "<html><body><h1>Internal Server Error</h1><p>database unavailable</p></body></html>"
    with respx.mock:
        route = respx.post(TOKEN_URL).respond(500, html=page)
        async with harness(client_credentials()) as h:
            error = await h.startup_error()
            message = await h.tool_call_error()
    assert isinstance(error, TokenEndpointError)
    assert (error.status, error.error) == (500, None)
    assert str(error) == (
        f"token request (client_credentials) to {TOKEN_URL} failed: the IdP answered HTTP 500 "
        f"(text/html; charset=utf-8) with a body that is not a JSON token response: '{page}'. "
        "The IdP is having trouble; try again shortly."
    )
    assert message == NO_TOKEN + str(error)
    assert route.call_count == 2  # once at startup, once for the tool call
    assert h.sleeps.waits == []
    assert not any(RETRY_WARNING in line for line in logs.lines)
    assert_clean(h, logs, error)


@pytest.mark.anyio
async def test_a_503_with_retry_after_2_is_asked_again_after_2_s(logs: Logs) -> None:
    with respx.mock:
        route = respx.post(TOKEN_URL)
        route.side_effect = [
            httpx.Response(503, headers={"Retry-After": "2"}, html="<h1>Service Unavailable</h1>"),
            httpx.Response(200, json=TOKEN),
        ]
        async with harness(client_credentials()) as h:
            token = await h.proxy.access_token()
            answer = await h.tool_call()
    assert token.value == "at-fresh-value"
    assert answer["result"] == {"auth": "Bearer at-fresh-value"}
    assert route.call_count == 2
    assert h.sleeps.waits == [2.0]
    assert logs.at("warn") == [f"{RETRY_WARNING} status=503 error=none in_s=2"]
    assert_clean(h, logs)


@pytest.mark.anyio
async def test_a_503_that_persists_is_tried_three_times_then_reported(logs: Logs) -> None:
    busy = {"error": "temporarily_unavailable", "error_description": "Try again in a moment"}
    with respx.mock:
        route = respx.post(TOKEN_URL).respond(503, json=busy, headers={"Retry-After": "2"})
        async with harness(client_credentials()) as h:
            error = await h.startup_error()
    assert isinstance(error, TokenEndpointError)
    assert str(error) == (
        f"token request (client_credentials) to {TOKEN_URL} failed: the IdP refused the "
        "request with HTTP 503: temporarily_unavailable: Try again in a moment. The IdP is "
        "having trouble; try again shortly."
    )
    assert route.call_count == MAX_TRANSIENT_ATTEMPTS == 3
    assert h.sleeps.waits == [2.0, 2.0]
    assert (
        logs.at("warn") == [f"{RETRY_WARNING} status=503 error=temporarily_unavailable in_s=2"] * 2
    )
    assert_clean(h, logs, error)


@pytest.mark.anyio
async def test_a_503_with_retry_after_120_is_not_waited_for(logs: Logs) -> None:
    with respx.mock:
        route = respx.post(TOKEN_URL).respond(
            503, headers={"Retry-After": "120"}, html="<h1>Service Unavailable</h1>"
        )
        async with harness(client_credentials()) as h:
            error = await h.startup_error()
            message = await h.tool_call_error()
    assert isinstance(error, TokenEndpointError)
    assert error.status == 503
    assert "HTTP 503" in str(error)
    assert str(error).endswith(
        "The IdP is having trouble; try again shortly. The IdP asked to wait 120 s "
        "(Retry-After), longer than the proxy holds a request (30 s)."
    )
    assert message == NO_TOKEN + str(error)
    # Neither the startup nor the tool call is held for two minutes: one request each.
    assert route.call_count == 2
    assert h.sleeps.waits == []
    assert not any(RETRY_WARNING in line for line in logs.lines)
    assert_clean(h, logs, error)


# --- 3. invalid_grant for a refresh token ---------------------------------------------------

INVALID_GRANT = {"error": "invalid_grant", "error_description": "Refresh token expired"}
LOG_IN_AGAIN = (
    "The refresh token is expired or revoked: log in again (`mcp-oauth2-proxy login`, for "
    "grants authorization_code and device_code), or set a new oauth2.refreshToken / "
    "OAUTH2_REFRESH_TOKEN."
)


def sent_forms(route: respx.Route) -> list[dict[str, str]]:
    """The form of each request the token endpoint received."""
    requests: list[httpx.Request] = [call.request for call in route.calls]
    return [dict(httpx.QueryParams(request.content.decode())) for request in requests]


@pytest.mark.anyio
async def test_a_rejected_cached_login_without_a_browser_says_to_run_login(logs: Logs) -> None:
    store = FakeTokenStore()
    store.save(cached_login())
    with respx.mock:
        route = respx.post(TOKEN_URL).respond(400, json=INVALID_GRANT)
        async with harness(user_login(interactive=False), store=store) as h:
            first = await h.tool_call_error(1)
            second = await h.tool_call_error(2)
    assert first == (
        f"{NO_TOKEN}token request (refresh_token) to {TOKEN_URL} failed: the IdP refused the "
        f"request with HTTP 400: invalid_grant: Refresh token expired. {LOG_IN_AGAIN}"
    )
    # The rejected login is gone, so the next request does not ask the IdP at all.
    assert route.call_count == 1
    assert store.load(cache_key("app", TOKEN_URL)) is None
    assert second.startswith(f"{NO_TOKEN}no way to obtain tokens: no refresh token is usable")
    assert "Log in once with `mcp-oauth2-proxy login`" in second
    assert h.browser.opened == []
    assert h.sleeps.waits == []
    assert sent_forms(route)[0]["refresh_token"] == REFRESH_TOKEN
    assert not any("getting new tokens with grant" in line for line in logs.lines)
    assert_clean(h, logs)


@pytest.mark.anyio
async def test_the_refresh_token_grant_says_to_set_a_new_refresh_token(logs: Logs) -> None:
    config = ProxyConfig(
        upstream=UpstreamConfig(url=UPSTREAM_URL),
        oauth2=OAuth2Config(
            grant="refresh_token",
            client_id="app",
            token_url=TOKEN_URL,
            refresh_token=SecretStr(REFRESH_TOKEN),
        ),
    )
    with respx.mock:
        route = respx.post(TOKEN_URL).respond(400, json=INVALID_GRANT)
        async with harness(config) as h:
            error = await h.startup_error()
    assert isinstance(error, TokenEndpointError)
    assert error.error == "invalid_grant"
    assert str(error).endswith(LOG_IN_AGAIN)
    assert "OAUTH2_REFRESH_TOKEN" in str(error)
    assert route.call_count == 1
    assert h.sleeps.waits == []
    assert_clean(h, logs, error)


@pytest.mark.anyio
async def test_a_rejected_cached_login_with_a_browser_logs_in_again_once(logs: Logs) -> None:
    store = FakeTokenStore()
    store.save(cached_login())
    with respx.mock:
        route = respx.post(TOKEN_URL)
        route.side_effect = [
            httpx.Response(400, json=INVALID_GRANT),
            httpx.Response(200, json={**TOKEN, "refresh_token": "rt-new-s3cret-value"}),
        ]
        async with harness(user_login(interactive=True), store=store) as h:
            answer = await h.tool_call()
    assert answer["result"] == {"auth": "Bearer at-fresh-value"}
    assert [form["grant_type"] for form in sent_forms(route)] == [
        "refresh_token",
        "authorization_code",
    ]
    assert len(h.browser.opened) == 1
    entry = store.load(cache_key("app", TOKEN_URL))
    assert entry is not None
    assert entry.refresh_token == "rt-new-s3cret-value"
    warnings = logs.at("warn")
    assert warnings[0] == (
        'msg="the refresh token was rejected (expired or revoked); getting new tokens with '
        'grant authorization_code (a browser login)" grant=authorization_code'
    )
    assert warnings[1].startswith('msg="log in with your browser to continue.')
    assert len(warnings) == 2
    assert h.sleeps.waits == []
    assert_clean(h, logs)
    assert "rt-new-s3cret-value" not in "\n".join(logs.lines)


@pytest.mark.anyio
async def test_a_new_login_that_is_refused_too_is_not_repeated_within_a_request(logs: Logs) -> None:
    store = FakeTokenStore()
    store.save(cached_login())
    with respx.mock:
        route = respx.post(TOKEN_URL).respond(400, json={"error": "invalid_grant"})
        async with harness(user_login(interactive=True), store=store) as h:
            error = await h.startup_error()
            # One refresh, one browser login, one code exchange: no login loop.
            assert route.call_count == 2
            assert len(h.browser.opened) == 1
            message = await h.tool_call_error()
    assert isinstance(error, TokenEndpointError)
    assert str(error).startswith(
        f"token request (authorization_code) to {TOKEN_URL} failed: the IdP refused the "
        "request with HTTP 400: invalid_grant. The authorization code is used, expired"
    )
    # The next request has no refresh token left and tries one more login (one per request).
    assert message == NO_TOKEN + str(error)
    assert [form["grant_type"] for form in sent_forms(route)] == [
        "refresh_token",
        "authorization_code",
        "authorization_code",
    ]
    assert len(h.browser.opened) == 2
    assert h.sleeps.waits == []
    assert_clean(h, logs, error)


# --- 4. invalid_client ----------------------------------------------------------------------

INVALID_CLIENT = {"error": "invalid_client", "error_description": "Client authentication failed"}
CHECK_CLIENT = (
    "Check oauth2.clientId / OAUTH2_CLIENT_ID and oauth2.clientSecret / OAUTH2_CLIENT_SECRET, "
    "and whether the IdP expects them in the form body or as HTTP Basic (oauth2.authStyle / "
    "OAUTH2_AUTH_STYLE = body or header)."
)


@pytest.mark.anyio
async def test_invalid_client_names_the_client_settings_and_is_not_retried(logs: Logs) -> None:
    with respx.mock:
        route = respx.post(TOKEN_URL).respond(401, json=INVALID_CLIENT)
        async with harness(client_credentials()) as h:
            error = await h.startup_error()
            message = await h.tool_call_error()
    assert isinstance(error, TokenEndpointError)
    assert (error.status, error.error) == (401, "invalid_client")
    assert str(error) == (
        f"token request (client_credentials) to {TOKEN_URL} failed: the IdP refused the "
        f"request with HTTP 401: invalid_client: Client authentication failed. {CHECK_CLIENT}"
    )
    assert message == NO_TOKEN + str(error)
    assert route.call_count == 2
    assert h.sleeps.waits == []
    assert logs.at("warn") == [answered(error)]
    assert_clean(h, logs, error)


@pytest.mark.anyio
async def test_invalid_client_on_a_refresh_keeps_the_cached_login(logs: Logs) -> None:
    store = FakeTokenStore()
    store.save(cached_login())
    with respx.mock:
        route = respx.post(TOKEN_URL).respond(401, json=INVALID_CLIENT)
        async with harness(user_login(interactive=True), store=store) as h:
            error = await h.startup_error()
    assert isinstance(error, TokenEndpointError)
    assert CHECK_CLIENT in str(error)
    assert route.call_count == 1
    assert store.load(cache_key("app", TOKEN_URL)) == cached_login()
    assert h.browser.opened == []
    assert_clean(h, logs, error)


def test_invalid_client_at_startup_is_a_fatal_line_and_exit_3(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restored_logger: None,
) -> None:
    command_env(monkeypatch)
    with respx.mock:
        route = respx.post(TOKEN_URL).respond(401, json=INVALID_CLIENT)
        assert main([]) == EXIT_AUTH
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = [line for line in captured.err.splitlines() if "level=fatal" in line]
    assert line.split(" ", 1)[1] == (
        f'level=fatal msg="cannot start: token request (client_credentials) to {TOKEN_URL} '
        "failed: the IdP refused the request with HTTP 401: invalid_client: Client "
        f'authentication failed. {CHECK_CLIENT}"'
    )
    assert route.call_count == 1
    assert CLIENT_SECRET not in captured.err


# --- 5. slow_down ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_slow_down_waits_5_then_10_s_and_gives_up_after_three_tries(logs: Logs) -> None:
    with respx.mock:
        route = respx.post(TOKEN_URL).respond(400, json={"error": "slow_down"})
        async with harness(client_credentials()) as h:
            error = await h.startup_error()
            message = await h.tool_call_error()
    assert isinstance(error, TokenEndpointError)
    assert (error.status, error.error) == (400, "slow_down")
    assert str(error) == (
        f"token request (client_credentials) to {TOKEN_URL} failed: the IdP refused the "
        "request with HTTP 400: slow_down. The IdP asks this client to slow down; try again in "
        "a little while."
    )
    assert message == NO_TOKEN + str(error)
    assert route.call_count == 2 * MAX_TRANSIENT_ATTEMPTS
    assert h.sleeps.waits == [SLOW_DOWN_SECONDS, 2 * SLOW_DOWN_SECONDS] * 2 == [5, 10, 5, 10]
    retries = [
        f"{RETRY_WARNING} status=400 error=slow_down in_s=5",
        f"{RETRY_WARNING} status=400 error=slow_down in_s=10",
    ]
    assert logs.at("warn") == [*retries, *retries, answered(error)]
    assert_clean(h, logs, error)


@pytest.mark.anyio
async def test_slow_down_then_a_token(logs: Logs) -> None:
    with respx.mock:
        route = respx.post(TOKEN_URL)
        route.side_effect = [
            # A Retry-After shorter than the slow_down floor does not shorten the wait.
            httpx.Response(400, json={"error": "slow_down"}, headers={"Retry-After": "1"}),
            httpx.Response(200, json=TOKEN),
        ]
        async with harness(client_credentials()) as h:
            answer = await h.tool_call()
    assert answer["result"] == {"auth": "Bearer at-fresh-value"}
    assert route.call_count == 2
    assert h.sleeps.waits == [SLOW_DOWN_SECONDS]
    assert logs.at("warn") == [f"{RETRY_WARNING} status=400 error=slow_down in_s=5"]
    assert_clean(h, logs)


# --- 6. a page that is not JSON -------------------------------------------------------------


@pytest.mark.anyio
async def test_a_proxy_error_page_shows_status_and_a_short_clean_excerpt(logs: Logs) -> None:
    with respx.mock:
        route = respx.post(TOKEN_URL).respond(
            502, content=PROXY_PAGE, headers={"Content-Type": "text/html"}
        )
        async with harness(client_credentials()) as h:
            error = await h.startup_error()
            message = await h.tool_call_error()
    assert isinstance(error, TokenEndpointError)
    assert (error.status, error.error) == (502, None)
    text = str(error)
    assert text.startswith(
        f"token request (client_credentials) to {TOKEN_URL} failed: the IdP answered HTTP 502 "
        "(text/html) with a body that is not a JSON token response: '<!DOCTYPE html> <html>"
    )
    excerpt = text.split("token response: ", 1)[1].rsplit(". A gateway", 1)[0]
    assert excerpt.endswith("…'")
    assert len(excerpt) <= 300 + 3  # 300 characters, the ellipsis and the quotes
    assert "\n" not in text
    assert "\r" not in text
    assert "\ufffd" in excerpt  # the stray byte is shown as a replacement, not a crash
    assert text.endswith(
        "A gateway or proxy between here and the IdP could not reach it; try again shortly, "
        "and check HTTPS_PROXY / NO_PROXY if it persists."
    )
    assert message == NO_TOKEN + text
    assert route.call_count == 2
    assert h.sleeps.waits == []
    assert_clean(h, logs, error)


@pytest.mark.anyio
async def test_a_login_page_with_200_points_at_the_token_url_setting(logs: Logs) -> None:
    with respx.mock:
        route = respx.post(TOKEN_URL).respond(200, html=LOGIN_PAGE)
        async with harness(client_credentials()) as h:
            error = await h.startup_error()
    assert isinstance(error, TokenEndpointError)
    assert (error.status, error.error) == (200, None)
    assert str(error) == (
        f"token request (client_credentials) to {TOKEN_URL} failed: the IdP answered HTTP 200 "
        "(text/html; charset=utf-8) with a body that is not a JSON token response: "
        f"'{LOGIN_PAGE}'. Check that oauth2.tokenUrl / OAUTH2_TOKEN_URL is the IdP's token "
        "endpoint, not its authorization endpoint or issuer page."
    )
    assert route.call_count == 1
    assert h.sleeps.waits == []
    assert_clean(h, logs, error)


# A gateway (WAF, corporate proxy) that blocks the request and quotes it back.
ECHO_PAGE = f"<p>Request blocked: grant_type=client_credentials&client_secret={CLIENT_SECRET}</p>"


@pytest.mark.anyio
async def test_an_error_page_that_echoes_the_secret_is_masked_in_the_log(logs: Logs) -> None:
    with respx.mock:
        respx.post(TOKEN_URL).respond(403, html=ECHO_PAGE)
        async with harness(client_credentials()) as h:
            await h.tool_call_error()
    (line,) = logs.at("warn")
    assert "client_secret=***" in line
    assert_no_secret(*logs.lines)


@pytest.mark.anyio
async def test_an_error_page_that_echoes_the_secret_does_not_show_it_to_the_client() -> None:
    with respx.mock:
        respx.post(TOKEN_URL).respond(403, html=ECHO_PAGE)
        async with harness(client_credentials()) as h:
            message = await h.tool_call_error()
    assert CLIENT_SECRET not in message


# --- 7. no access_token ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_token_response_without_access_token_is_a_clear_error(logs: Logs) -> None:
    with respx.mock:
        route = respx.post(TOKEN_URL).respond(200, json={"token_type": "Bearer"})
        async with harness(client_credentials()) as h:
            error = await h.startup_error()
            message = await h.tool_call_error()
    assert isinstance(error, TokenEndpointError)
    assert (error.status, error.error) == (200, None)
    assert str(error) == (
        f"token request (client_credentials) to {TOKEN_URL} failed: the IdP answered HTTP 200 "
        "without an access_token. Check that oauth2.tokenUrl / OAUTH2_TOKEN_URL is the IdP's "
        "token endpoint, not its authorization endpoint or issuer page."
    )
    assert message == NO_TOKEN + str(error)
    assert route.call_count == 2
    assert h.sleeps.waits == []
    assert_clean(h, logs, error)


# --- 8. 429 with an HTTP-date Retry-After ---------------------------------------------------


@pytest.mark.anyio
async def test_a_429_with_an_http_date_waits_until_that_date(logs: Logs) -> None:
    with respx.mock:
        route = respx.post(TOKEN_URL)
        async with harness(client_credentials()) as h:
            # Seven seconds after the fake clock's now; the same date twice, so the second
            # refusal names a moment that has passed by then.
            date = formatdate(h.sleeps.clock.now() + 7, usegmt=True)
            route.side_effect = [
                httpx.Response(429, json={"error": "rate_limited"}, headers={"Retry-After": date}),
                httpx.Response(429, json={"error": "rate_limited"}, headers={"Retry-After": date}),
                httpx.Response(200, json=TOKEN),
            ]
            answer = await h.tool_call()
    assert answer["result"] == {"auth": "Bearer at-fresh-value"}
    assert route.call_count == 3
    assert h.sleeps.waits == [7.0, 0.0]
    assert logs.at("warn") == [
        f"{RETRY_WARNING} status=429 error=rate_limited in_s=7",
        f"{RETRY_WARNING} status=429 error=rate_limited in_s=0",
    ]
    assert_clean(h, logs)


@pytest.mark.anyio
async def test_a_429_with_an_http_date_past_30_s_is_not_waited_for(logs: Logs) -> None:
    with respx.mock:
        route = respx.post(TOKEN_URL)
        async with harness(client_credentials()) as h:
            date = formatdate(h.sleeps.clock.now() + 300, usegmt=True)
            route.respond(429, json={"error": "rate_limited"}, headers={"Retry-After": date})
            error = await h.startup_error()
    assert isinstance(error, TokenEndpointError)
    assert (error.status, error.error) == (429, "rate_limited")
    assert str(error).endswith(
        "refused the request with HTTP 429: rate_limited. The IdP is having trouble; try "
        "again shortly. The IdP asked to wait 300 s (Retry-After), longer than the proxy "
        "holds a request (30 s)."
    )
    assert route.call_count == 1
    assert h.sleeps.waits == []
    assert_clean(h, logs, error)
