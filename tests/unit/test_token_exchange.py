"""Token requests (form bodies, client authentication) and token responses, as plain values."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import unquote_plus

import pytest
from pydantic import SecretStr

from mcp_oauth2_proxy.domain.config import OAuth2Config
from mcp_oauth2_proxy.domain.errors import TokenEndpointError
from mcp_oauth2_proxy.domain.token_exchange import (
    TokenReply,
    TokenRequest,
    TokenRequestBuilder,
    parse_token_reply,
)

from ..fakes import json_reply, token_reply

TOKEN_URL = "https://idp.example/token"


def builder(**settings: Any) -> TokenRequestBuilder:
    oauth = OAuth2Config(client_id="app", **settings)
    return TokenRequestBuilder(oauth, token_url=TOKEN_URL, client_id="app")


def test_client_credentials_body_style() -> None:
    request = builder(
        client_secret=SecretStr("s3cret"), scope="read write", audience="api"
    ).client_credentials()
    assert request.url == TOKEN_URL
    assert dict(request.form) == {
        "grant_type": "client_credentials",
        "scope": "read write",
        "audience": "api",
        "client_id": "app",
        "client_secret": "s3cret",
    }
    assert request.headers == ()


def test_header_style_form_urlencodes_id_and_secret_before_basic() -> None:
    oauth = OAuth2Config(
        client_id="my app:1", client_secret=SecretStr("p@ss word/+"), auth_style="header"
    )
    request = TokenRequestBuilder(
        oauth, token_url=TOKEN_URL, client_id="my app:1"
    ).client_credentials()
    ((name, value),) = request.headers
    assert name == "Authorization"
    decoded = base64.b64decode(value.removeprefix("Basic ")).decode()
    assert decoded == "my+app%3A1:p%40ss+word%2F%2B"
    user, password = decoded.split(":")
    assert (unquote_plus(user), unquote_plus(password)) == ("my app:1", "p@ss word/+")
    assert "client_id" not in dict(request.form)
    assert "client_secret" not in dict(request.form)


def test_public_client_sends_its_id_only_in_either_style() -> None:
    for style in ("body", "header"):
        request = builder(auth_style=style).client_credentials()
        assert dict(request.form)["client_id"] == "app"
        assert "client_secret" not in dict(request.form)
        assert request.headers == ()


def test_password_grant_fields() -> None:
    request = builder(client_secret="s", scope="openid").password("ann", "pw")
    assert dict(request.form) == {
        "grant_type": "password",
        "username": "ann",
        "password": "pw",
        "scope": "openid",
        "client_id": "app",
        "client_secret": "s",
    }


def test_refresh_sends_scope_and_resource_but_not_audience() -> None:
    request = builder(scope="openid", audience="api", resource="https://mcp.example/mcp").refresh(
        "rt"
    )
    assert dict(request.form) == {
        "grant_type": "refresh_token",
        "refresh_token": "rt",
        "scope": "openid",
        "resource": "https://mcp.example/mcp",
        "client_id": "app",
    }


def test_authorization_code_exchange_fields() -> None:
    request = builder(scope="openid", resource="https://mcp.example/mcp").authorization_code(
        "the-code", redirect_uri="http://127.0.0.1:53682/callback", code_verifier="verifier"
    )
    assert dict(request.form) == {
        "grant_type": "authorization_code",
        "code": "the-code",
        "redirect_uri": "http://127.0.0.1:53682/callback",
        "code_verifier": "verifier",
        "resource": "https://mcp.example/mcp",
        "client_id": "app",
    }
    bare = builder().authorization_code("c", redirect_uri=None, code_verifier=None)
    assert dict(bare.form) == {"grant_type": "authorization_code", "code": "c", "client_id": "app"}


def test_extra_params_are_added_to_every_request() -> None:
    requests = builder(client_secret="s", extra_params={"tenant": "t1"})
    for request in (requests.client_credentials(), requests.refresh("rt")):
        assert dict(request.form)["tenant"] == "t1"
        assert dict(request.form)["client_secret"] == "s"


def test_secret_values_and_repr() -> None:
    request = builder(client_secret="s3cret").refresh("refresh-value")
    assert set(request.secret_values()) == {"s3cret", "refresh-value"}
    assert "s3cret" not in repr(request)
    assert "refresh-value" not in repr(request)


REQUEST = TokenRequest(TOKEN_URL, "client_credentials", (("grant_type", "client_credentials"),))


def parse(reply: TokenReply) -> object:
    return parse_token_reply(REQUEST, reply, now=100.0, refresh_skew=30)


def test_successful_reply() -> None:
    issued = parse_token_reply(
        REQUEST, token_reply("at", expires_in=3600, refresh="rt"), now=100.0, refresh_skew=30
    )
    assert issued.access.value == "at"
    assert issued.access.renew_at == 100.0 + 3570
    assert issued.refresh_token == "rt"


def test_lenient_with_idp_quirks() -> None:
    reply = json_reply(
        200, {"access_token": "at", "token_type": "bearer", "expires_in": "60", "x": 1}
    )
    issued = parse_token_reply(REQUEST, reply, now=0.0, refresh_skew=30)
    assert issued.access.token_type == "Bearer"
    assert issued.access.renew_at == 30.0


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            json_reply(401, {"error": "invalid_client", "error_description": "Bad secret"}),
            ["invalid_client: Bad secret", "OAUTH2_CLIENT_SECRET", "OAUTH2_AUTH_STYLE", "HTTP 401"],
        ),
        (json_reply(400, {"error": "invalid_scope"}), ["invalid_scope", "OAUTH2_SCOPE"]),
        (json_reply(400, {"error": "unauthorized_client"}), ["OAUTH2_GRANT"]),
        (json_reply(400, {"error": "invalid_request"}), ["OAUTH2_EXTRA_PARAMS"]),
        (
            json_reply(400, {"error": "invalid_target"}),
            ["invalid_target", "oauth2.resource / OAUTH2_RESOURCE", "set it to none"],
        ),
        (json_reply(400, {"error": "access_denied"}), ["access_denied", "OAUTH2_SCOPE"]),
        (json_reply(503, {"error": "temporarily_unavailable"}), ["try again"]),
        (
            TokenReply(502, "text/html", b"<html>Bad Gateway</html>"),
            ["HTTP 502", "text/html", "Bad Gateway", "try again"],
        ),
        (
            TokenReply(200, "text/html", b"<html>login page</html>"),
            ["not a JSON token response", "OAUTH2_TOKEN_URL"],
        ),
        (json_reply(200, {"token_type": "Bearer"}), ["without an access_token"]),
        (
            json_reply(200, {"error": "invalid_grant"}),
            ["invalid_grant", "may use client_credentials"],
        ),
        (json_reply(200, {"access_token": 42}), ["malformed token response"]),
        (json_reply(200, ["access_token"]), ["not a JSON token response"]),
    ],
)
def test_error_replies_say_what_the_idp_said_and_what_to_check(
    reply: TokenReply, expected: list[str]
) -> None:
    with pytest.raises(TokenEndpointError) as caught:
        parse(reply)
    message = str(caught.value)
    assert TOKEN_URL in message
    for fragment in expected:
        assert fragment in message
    assert caught.value.status == reply.status


def test_error_code_is_kept_for_callers() -> None:
    with pytest.raises(TokenEndpointError) as caught:
        parse(json_reply(400, {"error": "invalid_grant"}))
    assert caught.value.error == "invalid_grant"


def test_idp_text_is_flattened_and_bounded() -> None:
    reply = json_reply(
        400, {"error": "invalid_request", "error_description": "line1\nline2\x1b[31m" + "x" * 1000}
    )
    with pytest.raises(TokenEndpointError) as caught:
        parse(reply)
    message = str(caught.value)
    assert "\n" not in message
    assert "\x1b" not in message
    assert len(message) < 1000


def test_an_error_page_quoting_the_request_does_not_put_its_secrets_in_the_error() -> None:
    request = builder(
        client_secret=SecretStr("s3cr3t-value!"), auth_style="header"
    ).client_credentials()
    page = b"<p>blocked: client_secret=s3cr3t-value%21 auth=" + request.headers[0][1].encode()
    reply = TokenReply(status=403, content_type="text/html", body=page)
    with pytest.raises(TokenEndpointError) as caught:
        parse_token_reply(request, reply, now=0.0, refresh_skew=30)
    message = str(caught.value)
    assert "s3cr3t-value" not in message
    assert request.headers[0][1].split()[-1] not in message
    assert "blocked" in message
