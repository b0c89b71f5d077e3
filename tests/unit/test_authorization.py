"""The browser leg as plain values: the authorize URL, the redirect target, and the judgement
of every request that can reach the loopback listener."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_oauth2_proxy.domain.authorization import (
    CallbackOutcome,
    Denied,
    Granted,
    RedirectTarget,
    Refused,
    authorize_url,
    judge_callback,
    redirect_target,
)
from mcp_oauth2_proxy.domain.config import OAuth2Config
from mcp_oauth2_proxy.domain.errors import ConfigError
from mcp_oauth2_proxy.domain.pkce import LoginSecrets

SECRETS = LoginSecrets.from_random(b"\x07" * 32, b"\x09" * 32)
ENDPOINT = "https://idp.example/oauth2/authorize"
REDIRECT = "http://127.0.0.1:53682/callback"


# --- authorize_url ----------------------------------------------------------------------


def build(oauth: OAuth2Config | None = None, **overrides: Any) -> str:
    oauth = oauth or OAuth2Config()
    arguments: dict[str, Any] = {
        "endpoint": ENDPOINT,
        "client_id": "app",
        "redirect_uri": REDIRECT,
        "secrets": SECRETS,
        "scope": oauth.scope,
        "resource": oauth.resource,
        **overrides,
    }
    return authorize_url(oauth, **arguments)


def query_pairs(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True, strict_parsing=True)


def query(url: str) -> dict[str, str]:
    pairs = query_pairs(url)
    names = [name for name, _ in pairs]
    assert len(names) == len(set(names)), f"a parameter is repeated: {names}"
    return dict(pairs)


def test_authorize_url_has_every_required_parameter() -> None:
    url = build()
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "idp.example", "/oauth2/authorize")
    assert query(url) == {
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": REDIRECT,
        "state": SECRETS.state,
        "code_challenge": SECRETS.challenge,
        "code_challenge_method": "S256",
    }


def test_authorize_url_never_carries_the_verifier() -> None:
    assert SECRETS.verifier not in build()


@pytest.mark.parametrize(
    ("setting", "name", "value"),
    [
        ("scope", "scope", "openid offline_access"),
        ("audience", "audience", "https://api.example"),
        ("resource", "resource", "https://mcp.example/mcp"),
    ],
)
def test_authorize_url_sends_scope_audience_and_resource_when_set(
    setting: str, name: str, value: str
) -> None:
    assert query(build(OAuth2Config.model_validate({setting: value})))[name] == value


def test_authorize_url_sends_all_optional_parameters_together() -> None:
    oauth = OAuth2Config(scope="read", audience="aud", resource="https://mcp.example/mcp")
    sent = query(build(oauth))
    assert (sent["scope"], sent["audience"], sent["resource"]) == (
        "read",
        "aud",
        "https://mcp.example/mcp",
    )


def test_authorize_url_adds_extra_params() -> None:
    oauth = OAuth2Config(extra_params={"prompt": "consent", "login_hint": "a@b.example"})
    sent = query(build(oauth))
    assert sent["prompt"] == "consent"
    assert sent["login_hint"] == "a@b.example"
    assert sent["response_type"] == "code"


def test_authorize_url_keeps_the_endpoints_own_query() -> None:
    url = build(endpoint="https://idp.example/authorize?tenant=acme&flag=")
    pairs = query_pairs(url)
    assert pairs[:2] == [("tenant", "acme"), ("flag", "")]
    assert query(url)["client_id"] == "app"
    assert urlsplit(url).path == "/authorize"


def test_authorize_url_encodes_values() -> None:
    oauth = OAuth2Config(scope="openid profile", extra_params={"hint": "a&b=c#d é"})
    url = build(oauth, client_id="app&client_id=evil")
    raw = urlsplit(url).query
    assert "client_id=app%26client_id%3Devil" in raw
    assert "redirect_uri=http%3A%2F%2F127.0.0.1%3A53682%2Fcallback" in raw
    assert " " not in url
    assert urlsplit(url).fragment == ""
    sent = query(url)  # also proves client_id is not repeated
    assert sent["client_id"] == "app&client_id=evil"
    assert sent["scope"] == "openid profile"
    assert sent["hint"] == "a&b=c#d é"


# --- redirect_target ---------------------------------------------------------------------


def test_default_redirect_target() -> None:
    target = redirect_target(OAuth2Config())
    assert target == RedirectTarget("127.0.0.1", 53682, "/callback")
    assert target.uri() == "http://127.0.0.1:53682/callback"


def test_redirect_target_from_callback_host_and_port() -> None:
    target = redirect_target(OAuth2Config(callback_host="localhost", callback_port=8765))
    assert target.uri() == "http://localhost:8765/callback"


def test_uri_uses_the_port_actually_bound() -> None:
    target = redirect_target(OAuth2Config(callback_port=0))
    assert target.uri(41234) == "http://127.0.0.1:41234/callback"


@pytest.mark.parametrize(
    ("redirect_uri", "expected"),
    [
        ("http://127.0.0.1:8765/oauth/done", ("127.0.0.1", 8765, "/oauth/done")),
        ("http://localhost:9000/cb", ("localhost", 9000, "/cb")),
        ("http://[::1]:9001/a/b", ("::1", 9001, "/a/b")),
        ("http://127.0.0.2:9002/callback", ("127.0.0.2", 9002, "/callback")),
    ],
)
def test_redirect_uri_is_honoured_with_its_path_and_port(
    redirect_uri: str, expected: tuple[str, int, str]
) -> None:
    # callbackHost/callbackPort are ignored once a redirect URI says where to listen.
    oauth = OAuth2Config(redirect_uri=redirect_uri, callback_port=1234)
    target = redirect_target(oauth)
    assert (target.host, target.port, target.path) == expected
    assert target.uri() == redirect_uri


@pytest.mark.parametrize(
    "redirect_uri",
    ["http://127.0.0.1:8765/callback?client=mcp", "http://127.0.0.1/callback"],
)
def test_configured_redirect_uri_is_sent_verbatim(redirect_uri: str) -> None:
    assert redirect_target(OAuth2Config(redirect_uri=redirect_uri)).uri() == redirect_uri


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://127.0.0.1:8765/callback",
        "https://app.example/callback",
        "http://app.example:8765/callback",
        "http://10.0.0.5:8765/callback",
        "http://127.0.0.1.nip.io:8765/callback",
        "http://0.0.0.0:8765/callback",
    ],
)
def test_redirect_uri_that_is_not_loopback_http_is_a_config_error(redirect_uri: str) -> None:
    with pytest.raises(ConfigError, match="OAUTH2_REDIRECT_URI") as caught:
        redirect_target(OAuth2Config(redirect_uri=redirect_uri))
    assert "oauth2.redirectUri" in str(caught.value)
    assert redirect_uri in str(caught.value)


NOT_LOOPBACK_HOSTS = [
    "0.0.0.0",  # noqa: S104 - the point is that it is refused
    "::",
    "192.168.1.10",
    "example.com",
    "localhost.evil",
]


@pytest.mark.parametrize("host", NOT_LOOPBACK_HOSTS)
def test_callback_host_that_is_not_loopback_is_a_config_error(host: str) -> None:
    with pytest.raises(ConfigError, match="OAUTH2_CALLBACK_HOST") as caught:
        redirect_target(OAuth2Config(callback_host=host))
    assert "oauth2.callbackHost" in str(caught.value)


def test_ipv6_loopback_gets_brackets_in_the_uri() -> None:
    target = redirect_target(OAuth2Config(callback_host="::1", callback_port=8765))
    assert target.host == "::1"  # bound without brackets
    assert target.uri() == "http://[::1]:8765/callback"
    assert target.uri(4321) == "http://[::1]:4321/callback"


# --- judge_callback ----------------------------------------------------------------------

HOST = "127.0.0.1:53682"
PATH = "/callback"
RIGHT = SECRETS.state


def callback(**params: str) -> str:
    return f"{PATH}?{urlencode(params)}"


def judge(
    target: str, *, method: str = "GET", host: str | None = HOST, expected_host: str = HOST
) -> CallbackOutcome:
    return judge_callback(
        method=method,
        target=target,
        host_header=host,
        expected_host=expected_host,
        expected_path=PATH,
        secrets=SECRETS,
    )


@pytest.mark.parametrize(
    ("method", "target", "host", "status"),
    [
        # DNS rebinding: the Host must be the listener's own authority, port included.
        ("GET", callback(code="c", state=RIGHT), None, 421),
        ("GET", callback(code="c", state=RIGHT), "", 421),
        ("GET", callback(code="c", state=RIGHT), "evil.example:53682", 421),
        ("GET", callback(code="c", state=RIGHT), "evil.example", 421),
        ("GET", callback(code="c", state=RIGHT), "127.0.0.1:53683", 421),
        ("GET", callback(code="c", state=RIGHT), "127.0.0.1", 421),
        ("GET", "/elsewhere", "evil.example", 421),  # the Host is checked first
        # Only the callback path.
        ("GET", "/", HOST, 404),
        ("GET", "/favicon.ico", HOST, 404),
        ("GET", f"/callback/more?code=c&state={RIGHT}", HOST, 404),
        ("GET", f"/Callback?code=c&state={RIGHT}", HOST, 404),
        ("POST", "/", HOST, 404),
        # Only GET.
        ("POST", callback(code="c", state=RIGHT), HOST, 405),
        ("PUT", callback(code="c", state=RIGHT), HOST, 405),
        ("HEAD", callback(code="c", state=RIGHT), HOST, 405),
        # The state must be this login's.
        ("GET", callback(code="c"), HOST, 400),
        ("GET", callback(code="c", state=""), HOST, 400),
        ("GET", callback(code="c", state="wrong"), HOST, 400),
        ("GET", callback(code="c", state=RIGHT[:-1]), HOST, 400),
        ("GET", callback(code="c", state=RIGHT + "x"), HOST, 400),
        ("GET", callback(code="c", state=RIGHT.upper()), HOST, 400),
        ("GET", callback(code="c", state="é" * 43), HOST, 400),
        # An error with a wrong or missing state is not ours: refused, not reported.
        ("GET", callback(error="access_denied", state="wrong"), HOST, 400),
        ("GET", callback(error="access_denied", error_description="no"), HOST, 400),
        # A callback with the right state but no code.
        ("GET", callback(state=RIGHT), HOST, 400),
        ("GET", callback(state=RIGHT, code=""), HOST, 400),
    ],
)
def test_refused_requests(method: str, target: str, host: str | None, status: int) -> None:
    outcome = judge(target, method=method, host=host)
    assert isinstance(outcome, Refused)
    assert outcome.status == status
    assert outcome.reason


def test_correct_callback_is_granted() -> None:
    assert judge(callback(code="the-code", state=RIGHT)) == Granted("the-code")


def test_code_is_url_decoded_and_extra_parameters_are_ignored() -> None:
    target = callback(code="a/b+c d", state=RIGHT, iss="https://idp.example", session_state="s")
    assert judge(target) == Granted("a/b+c d")


def test_host_header_is_compared_case_insensitively() -> None:
    outcome = judge(
        callback(code="c", state=RIGHT), host="LocalHost:8765", expected_host="localhost:8765"
    )
    assert outcome == Granted("c")


def test_error_with_the_right_state_is_denied_with_its_description() -> None:
    target = callback(state=RIGHT, error="access_denied", error_description="The user said no")
    assert judge(target) == Denied("access_denied", "The user said no")


def test_error_without_description_is_denied() -> None:
    assert judge(callback(state=RIGHT, error="invalid_scope")) == Denied("invalid_scope", None)


def test_error_wins_over_a_code() -> None:
    outcome = judge(callback(state=RIGHT, error="server_error", code="c"))
    assert outcome == Denied("server_error", None)


@given(st.text(max_size=60).filter(lambda state: state != RIGHT))
def test_any_other_state_is_refused(state: str) -> None:
    outcome = judge(callback(code="c", state=state, error="access_denied"))
    assert isinstance(outcome, Refused)
    assert outcome.status == 400
