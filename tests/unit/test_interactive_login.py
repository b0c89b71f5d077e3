"""The browser login use case with a scripted listener and browser: the URL it shows, the
exchange it makes, and how each way of failing is explained."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from mcp_oauth2_proxy import ConfigError, OAuthError
from mcp_oauth2_proxy.app.grants import build_token_requests
from mcp_oauth2_proxy.app.interactive_login import InteractiveLogin
from mcp_oauth2_proxy.app.token_client import TokenClient
from mcp_oauth2_proxy.domain.authorization import Denied, Granted
from mcp_oauth2_proxy.domain.config import OAuth2Config
from mcp_oauth2_proxy.domain.redaction import Redactor

from ..fakes import (
    FakeClock,
    FakeEntropy,
    FakeTokenEndpoint,
    ScriptedBrowser,
    ScriptedCallbackListener,
    token_reply,
)

pytestmark = pytest.mark.anyio


def login(
    listener: ScriptedCallbackListener,
    browser: ScriptedBrowser,
    endpoint: FakeTokenEndpoint,
    **settings: Any,
) -> InteractiveLogin:
    settings.setdefault("authorization_url", "https://idp.example/authorize?tenant=t1")
    oauth = OAuth2Config(client_id="app", token_url="https://idp.example/token", **settings)
    client = TokenClient(endpoint, FakeClock(), Redactor(), refresh_skew_seconds=30)
    return InteractiveLogin(
        oauth, client, build_token_requests(oauth), listener, browser, FakeEntropy()
    )


async def test_the_url_is_shown_and_opened_and_the_code_exchanged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    listener = ScriptedCallbackListener()
    browser = ScriptedBrowser(lambda url: listener.settle(Granted("code-1")))
    endpoint = FakeTokenEndpoint(token_reply("at", refresh="rt"))
    with caplog.at_level(logging.WARNING, logger="mcp_oauth2_proxy"):
        issued = await login(listener, browser, endpoint, scope="read").run()
    assert issued.refresh_token == "rt"
    (url,) = browser.opened
    assert url in caplog.text
    query = parse_qs(urlsplit(url).query)
    assert query["tenant"] == ["t1"]
    assert query["scope"] == ["read"]
    assert listener.secrets is not None
    assert query["state"] == [listener.secrets.state]
    form = endpoint.forms[0]
    assert form["code"] == "code-1"
    assert form["code_verifier"] == listener.secrets.verifier
    assert form["redirect_uri"] == "http://127.0.0.1:53682/callback"


async def test_a_browser_that_cannot_open_still_leaves_the_url_to_copy() -> None:
    listener = ScriptedCallbackListener()
    browser = ScriptedBrowser(lambda url: listener.settle(Granted("code-1")), opens=False)
    endpoint = FakeTokenEndpoint(token_reply("at"))
    assert (await login(listener, browser, endpoint).run()).access.value == "at"


async def test_a_refusal_by_the_idp_is_reported_with_its_words() -> None:
    listener = ScriptedCallbackListener()
    browser = ScriptedBrowser(
        lambda url: listener.settle(Denied("access_denied", "the user said no"))
    )
    with pytest.raises(OAuthError) as caught:
        await login(listener, browser, FakeTokenEndpoint()).run()
    assert str(caught.value) == (
        "the IdP refused the login (access_denied: the user said no). If you cancelled, run "
        "mcp-oauth2-proxy login again; for invalid_scope check oauth2.scope / OAUTH2_SCOPE; for "
        "a redirect_uri error register http://127.0.0.1:53682/callback with the IdP"
    )


async def test_an_unfinished_login_names_the_timeout_setting() -> None:
    listener = ScriptedCallbackListener()
    with pytest.raises(OAuthError) as caught:
        await login(
            listener, ScriptedBrowser(), FakeTokenEndpoint(), callback_timeout_seconds=1
        ).run()
    message = str(caught.value)
    assert "within 1 s" in message
    assert "OAUTH2_CALLBACK_TIMEOUT_SECONDS" in message
    assert "http://127.0.0.1:53682/callback" in message


async def test_no_authorization_endpoint_names_the_setting() -> None:
    with pytest.raises(ConfigError) as caught:
        await login(
            ScriptedCallbackListener(),
            ScriptedBrowser(),
            FakeTokenEndpoint(),
            authorization_url=None,
        ).run()
    assert str(caught.value) == (
        "configuration error: oauth2.authorizationUrl / OAUTH2_AUTHORIZATION_URL: interactive "
        "login needs the IdP's authorization endpoint; set it, or turn discovery on "
        "(discovery.enabled / DISCOVERY_ENABLED=true) so it is found from the MCP server"
    )
