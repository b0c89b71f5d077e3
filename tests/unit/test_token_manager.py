"""The token manager with a fake IdP and a fake clock: caching, sharing, invalidation,
rotation and what each grant does when its refresh token is rejected."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from pydantic import SecretStr

from mcp_oauth2_proxy.app.device_login import DeviceLogin
from mcp_oauth2_proxy.app.grants import build_grant, build_token_requests
from mcp_oauth2_proxy.app.interactive_login import InteractiveLogin
from mcp_oauth2_proxy.app.token_client import TokenClient
from mcp_oauth2_proxy.app.token_manager import TokenManager
from mcp_oauth2_proxy.domain.authorization import Granted
from mcp_oauth2_proxy.domain.cached_login import CachedLogin, cache_key
from mcp_oauth2_proxy.domain.config import OAuth2Config
from mcp_oauth2_proxy.domain.errors import OAuthError, TokenEndpointError
from mcp_oauth2_proxy.domain.ports import TokenCommand
from mcp_oauth2_proxy.domain.redaction import Redactor
from mcp_oauth2_proxy.domain.token_exchange import TokenReply, TokenRequest
from mcp_oauth2_proxy.domain.token_lifecycle import AccessToken

from ..fakes import (
    FakeClock,
    FakeEntropy,
    FakeTokenEndpoint,
    FakeTokenStore,
    ScriptedBrowser,
    ScriptedCallbackListener,
    json_reply,
    token_reply,
)

pytestmark = pytest.mark.anyio

INVALID_GRANT = json_reply(400, {"error": "invalid_grant"})
TOKEN_URL = "https://idp.example/token"


def unused_login() -> InteractiveLogin:
    raise AssertionError("this grant has no browser login")


def unused_device_login() -> DeviceLogin:
    raise AssertionError("this grant has no device login")


def unused_command() -> TokenCommand:
    raise AssertionError("no token command is configured")


class Sleeps:
    """A stand-in for anyio.sleep that only records how long it was asked to wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def manager(
    endpoint: FakeTokenEndpoint,
    clock: FakeClock,
    *,
    store: FakeTokenStore | None = None,
    browser: ScriptedBrowser | None = None,
    listener: ScriptedCallbackListener | None = None,
    sleeps: Sleeps | None = None,
    **settings: Any,
) -> TokenManager:
    settings.setdefault("authorization_url", "https://idp.example/authorize")
    oauth = OAuth2Config(client_id="app", token_url="https://idp.example/token", **settings)
    client = TokenClient(
        endpoint,
        clock,
        Redactor(),
        refresh_skew_seconds=oauth.refresh_skew_seconds,
        sleep=sleeps or Sleeps(),
    )
    builder = build_token_requests(oauth)

    def login() -> InteractiveLogin:
        return InteractiveLogin(
            oauth,
            client,
            builder,
            listener or ScriptedCallbackListener(),
            browser or ScriptedBrowser(),
            FakeEntropy(),
        )

    def device_login() -> DeviceLogin:
        return DeviceLogin(oauth, client, builder, clock, sleep=sleeps or Sleeps())

    grant = build_grant(
        oauth, client, builder, login, device_login, unused_command, clock, Redactor()
    )
    return TokenManager(grant, client, builder, clock, store)


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
    grant = build_grant(
        oauth,
        client,
        builder,
        unused_login,
        unused_device_login,
        unused_command,
        FakeClock(),
        redactor,
    )
    await TokenManager(grant, client, builder, FakeClock()).token()
    text = redactor.redact("access-value refresh-value client-secret")
    assert "access-value" not in text
    assert "refresh-value" not in text
    assert "client-secret" not in text


def cached(refresh_token: str) -> CachedLogin:
    return CachedLogin("app", TOKEN_URL, refresh_token, saved_at=1.0)


def approving(listener: ScriptedCallbackListener, code: str = "the-code") -> ScriptedBrowser:
    """A browser whose user logs in at once: the IdP redirects back with `code`."""
    return ScriptedBrowser(lambda url: listener.settle(Granted(code)))


async def test_obtained_and_rotated_refresh_tokens_are_cached() -> None:
    store = FakeTokenStore()
    endpoint = FakeTokenEndpoint(
        token_reply("a1", expires_in=60, refresh="r2"), token_reply("a2", expires_in=60)
    )
    clock = FakeClock()
    tokens = manager(endpoint, clock, store=store, grant="refresh_token", refresh_token="r1")
    await tokens.token()
    assert store.load(cache_key("app", TOKEN_URL)) == CachedLogin(
        "app", TOKEN_URL, "r2", clock.now()
    )
    clock.advance(60)
    await tokens.token()
    assert [form["refresh_token"] for form in endpoint.forms] == ["r1", "r2"]
    assert tokens.cached_login() is not None


async def test_a_refresh_token_another_process_rotated_is_used_not_burned() -> None:
    store = FakeTokenStore()
    store.save(cached("r-from-another-process"))
    endpoint = FakeTokenEndpoint(token_reply("a1", refresh="r-next"))
    tokens = manager(endpoint, FakeClock(), store=store, grant="refresh_token", refresh_token="r1")
    await tokens.token()
    assert endpoint.forms[0]["refresh_token"] == "r-from-another-process"
    assert store.load(cache_key("app", TOKEN_URL)) is not None


async def test_a_rejected_cached_login_is_dropped_and_the_browser_runs_once() -> None:
    store = FakeTokenStore()
    store.save(cached("r-stale"))
    listener = ScriptedCallbackListener()
    browser = approving(listener)
    endpoint = FakeTokenEndpoint(INVALID_GRANT, token_reply("fresh", refresh="r-fresh"))
    tokens = manager(endpoint, FakeClock(), store=store, browser=browser, listener=listener)
    results: list[AccessToken] = []

    async def caller() -> None:
        results.append(await tokens.token())

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(caller)
    assert [token.value for token in results] == ["fresh"] * 5
    assert len(browser.opened) == 1
    exchange = endpoint.forms[1]
    assert (exchange["grant_type"], exchange["code"]) == ("authorization_code", "the-code")
    assert listener.secrets is not None
    assert exchange["code_verifier"] == listener.secrets.verifier
    assert exchange["redirect_uri"] == "http://127.0.0.1:53682/callback"
    cached_now = store.load(cache_key("app", TOKEN_URL))
    assert cached_now is not None
    assert cached_now.refresh_token == "r-fresh"


async def test_an_entry_another_process_replaced_is_not_deleted() -> None:
    store = FakeTokenStore()
    endpoint = FakeTokenEndpoint(token_reply("a1", expires_in=60, refresh="r1"))
    clock = FakeClock()
    tokens = manager(endpoint, clock, store=store, grant="refresh_token", refresh_token="r0")
    await tokens.token()

    def rejected_after_another_process_saved(request: TokenRequest) -> TokenReply:
        store.save(cached("r-newer"))
        return INVALID_GRANT

    endpoint.replies = [rejected_after_another_process_saved]
    clock.advance(60)
    with pytest.raises(TokenEndpointError):
        await tokens.token()
    entry = store.load(cache_key("app", TOKEN_URL))
    assert entry is not None
    assert entry.refresh_token == "r-newer"


async def test_without_interactive_login_the_error_says_how_to_log_in() -> None:
    store = FakeTokenStore()
    store.save(cached("r-stale"))
    tokens = manager(FakeTokenEndpoint(INVALID_GRANT), FakeClock(), store=store, interactive=False)
    with pytest.raises(TokenEndpointError, match="mcp-oauth2-proxy login"):
        await tokens.token()
    assert store.load(cache_key("app", TOKEN_URL)) is None


async def test_with_no_login_at_all_the_error_says_how_to_log_in() -> None:
    tokens = manager(FakeTokenEndpoint(), FakeClock(), store=FakeTokenStore(), interactive=False)
    with pytest.raises(OAuthError, match="mcp-oauth2-proxy login"):
        await tokens.token()


async def test_login_runs_the_browser_even_when_a_login_is_cached() -> None:
    store = FakeTokenStore()
    store.save(cached("r-old"))
    listener = ScriptedCallbackListener()
    browser = approving(listener)
    endpoint = FakeTokenEndpoint(token_reply("fresh", refresh="r-new"))
    tokens = manager(endpoint, FakeClock(), store=store, browser=browser, listener=listener)
    assert (await tokens.login()).value == "fresh"
    assert len(browser.opened) == 1
    entry = store.load(cache_key("app", TOKEN_URL))
    assert entry is not None
    assert entry.refresh_token == "r-new"
    assert tokens.forget_login() is True
    assert tokens.forget_login() is False


async def test_login_is_refused_for_a_grant_without_a_browser() -> None:
    with pytest.raises(
        OAuthError, match=r"login is only for oauth2\.grant / OAUTH2_GRANT=authorization_code"
    ):
        await cc(FakeTokenEndpoint(), FakeClock()).login()


async def test_a_temporary_refusal_is_asked_again_after_retry_after() -> None:
    busy = TokenReply(503, "application/json", b'{"error":"temporarily_unavailable"}', "2")
    sleeps = Sleeps()
    endpoint = FakeTokenEndpoint(busy, json_reply(429, {"error": "slow"}), token_reply("ok"))
    tokens = manager(
        endpoint,
        FakeClock(),
        sleeps=sleeps,
        grant="client_credentials",
        client_secret=SecretStr("s"),
    )
    assert (await tokens.token()).value == "ok"
    assert sleeps.waits == [2.0, 1.0]


async def test_a_long_retry_after_is_not_waited_for() -> None:
    busy = TokenReply(429, "application/json", b'{"error":"rate_limited"}', "120")
    sleeps = Sleeps()
    tokens = manager(
        FakeTokenEndpoint(busy),
        FakeClock(),
        sleeps=sleeps,
        grant="client_credentials",
        client_secret=SecretStr("s"),
    )
    with pytest.raises(TokenEndpointError, match="try again"):
        await tokens.token()
    assert sleeps.waits == []


async def test_a_temporary_refusal_is_not_asked_forever() -> None:
    busy = json_reply(503, {"error": "temporarily_unavailable"})
    sleeps = Sleeps()
    endpoint = FakeTokenEndpoint(busy, busy, busy)
    tokens = manager(
        endpoint,
        FakeClock(),
        sleeps=sleeps,
        grant="client_credentials",
        client_secret=SecretStr("s"),
    )
    with pytest.raises(TokenEndpointError):
        await tokens.token()
    assert len(endpoint.requests) == 3
    assert sleeps.waits == [0.5, 1.0]


async def test_a_new_configured_refresh_token_is_tried_when_the_cached_one_is_revoked() -> None:
    store = FakeTokenStore()
    store.save(cached("r-revoked"))
    endpoint = FakeTokenEndpoint(INVALID_GRANT, token_reply("a1", refresh="r-next"))
    tokens = manager(
        endpoint, FakeClock(), store=store, grant="refresh_token", refresh_token="r-new"
    )
    assert (await tokens.token()).value == "a1"
    assert [form["refresh_token"] for form in endpoint.forms] == ["r-revoked", "r-new"]


async def test_a_spent_configured_refresh_token_is_never_sent_again() -> None:
    store = FakeTokenStore()
    endpoint = FakeTokenEndpoint(token_reply("a1", expires_in=60, refresh="r1"), INVALID_GRANT)
    clock = FakeClock()
    tokens = manager(endpoint, clock, store=store, grant="refresh_token", refresh_token="r0")
    await tokens.token()
    clock.advance(60)
    with pytest.raises(TokenEndpointError):
        await tokens.token()
    assert [form["refresh_token"] for form in endpoint.forms] == ["r0", "r1"]


async def test_a_spent_configured_code_falls_back_to_the_browser() -> None:
    listener = ScriptedCallbackListener()
    browser = approving(listener, code="fresh-code")
    endpoint = FakeTokenEndpoint(INVALID_GRANT, token_reply("a1"))
    tokens = manager(
        endpoint, FakeClock(), browser=browser, listener=listener, authorization_code="spent"
    )
    assert (await tokens.token()).value == "a1"
    assert [form["code"] for form in endpoint.forms] == ["spent", "fresh-code"]


async def test_with_an_idp_that_does_not_rotate_the_working_token_is_kept_and_cached() -> None:
    store = FakeTokenStore()
    store.save(cached("r-revoked"))
    endpoint = FakeTokenEndpoint(
        INVALID_GRANT, token_reply("a1", expires_in=60), token_reply("a2", expires_in=60)
    )
    clock = FakeClock()
    tokens = manager(endpoint, clock, store=store, grant="refresh_token", refresh_token="r-new")
    await tokens.token()
    clock.advance(60)
    await tokens.token()
    assert [form["refresh_token"] for form in endpoint.forms] == ["r-revoked", "r-new", "r-new"]
    entry = store.load(cache_key("app", TOKEN_URL))
    assert entry is not None
    assert entry.refresh_token == "r-new"
