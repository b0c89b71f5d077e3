"""RFC 8628, the pure parts: the device authorization response, the user's instructions, and
every answer a poll of the token endpoint can get."""

from __future__ import annotations

import json

import pytest

from mcp_oauth2_proxy.domain.device_flow import (
    DeviceAuthorization,
    instructions,
    judge_poll,
    read_device_authorization,
)
from mcp_oauth2_proxy.domain.errors import OAuthError, TokenEndpointError

URL = "https://idp.example.com/oauth2/device"
ANSWER: dict[str, object] = {
    "device_code": "GmRhmhcxhwAzkoEqiMEg_DnyEysNkuNhszIySk9eS",
    "user_code": "WDJB-MJHT",
    "verification_uri": "https://idp.example.com/device",
    "verification_uri_complete": "https://idp.example.com/device?user_code=WDJB-MJHT",
    "expires_in": 1800,
    "interval": 5,
}


def read(document: object, status: int = 200) -> DeviceAuthorization:
    return read_device_authorization(status, json.dumps(document).encode(), URL)


def test_a_complete_answer() -> None:
    authorization = read(ANSWER)
    assert authorization.user_code == "WDJB-MJHT"
    assert authorization.expires_in == 1800
    assert authorization.interval == 5
    assert str(ANSWER["device_code"]) not in repr(authorization)


def test_the_interval_defaults_to_five_seconds_and_bad_numbers_are_ignored() -> None:
    authorization = read({**ANSWER, "interval": None, "expires_in": "soon"})
    assert authorization.interval == 5
    assert authorization.expires_in == 600


@pytest.mark.parametrize("missing", ["device_code", "user_code", "verification_uri"])
def test_a_missing_field_is_named(missing: str) -> None:
    with pytest.raises(OAuthError, match=f"answered without {missing}"):
        read({key: value for key, value in ANSWER.items() if key != missing})


def test_a_refusal_names_the_client_setting() -> None:
    with pytest.raises(OAuthError, match="HTTP 400: unauthorized_client") as raised:
        read({"error": "unauthorized_client"}, status=400)
    assert "OAUTH2_CLIENT_ID" in str(raised.value)


def test_an_answer_that_is_not_json_names_the_url_setting() -> None:
    with pytest.raises(OAuthError, match="OAUTH2_DEVICE_AUTHORIZATION_URL"):
        read_device_authorization(404, b"<html>not found</html>", URL)


def test_the_instructions_give_the_page_and_the_code() -> None:
    shown = instructions(read(ANSWER))
    assert "open https://idp.example.com/device on any device and enter the code WDJB-MJHT" in (
        shown
    )
    assert "user_code=WDJB-MJHT" in shown
    assert "valid for 30 min" in shown
    assert str(ANSWER["device_code"]) not in shown


def refusal(code: str) -> TokenEndpointError:
    return TokenEndpointError(f"the IdP said {code}", status=400, error=code)


def test_pending_means_wait_and_slow_down_means_slower() -> None:
    assert judge_poll(refusal("authorization_pending"), 5, 600) == "wait"
    assert judge_poll(refusal("slow_down"), 5, 600) == "slower"


def test_denied_and_expired_stop_with_what_to_do() -> None:
    with pytest.raises(OAuthError, match="denied on the verification page"):
        judge_poll(refusal("access_denied"), 20, 600)
    with pytest.raises(OAuthError, match="expired after 600 s") as raised:
        judge_poll(refusal("expired_token"), 600, 600)
    assert "mcp-oauth2-proxy login" in str(raised.value)


def test_any_other_refusal_is_the_idps_own_error() -> None:
    error = refusal("invalid_client")
    with pytest.raises(TokenEndpointError) as raised:
        judge_poll(error, 5, 600)
    assert raised.value is error
