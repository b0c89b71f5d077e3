"""The device authorization grant (RFC 8628): logging in where no browser can reach the
proxy (an SSH host, a container), by showing a code the user enters on another device.

Here are the pure parts: reading the device authorization response, what the user is told,
and what each answer to a poll of the token endpoint means. The waiting and asking is done
by `app/device_login.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from .errors import OAuthError, TokenEndpointError

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_INTERVAL_SECONDS = 5  # RFC 8628 §3.2: when the server names none
SLOW_DOWN_STEP_SECONDS = 5  # §3.5: added to the interval at every slow_down, for good
DEFAULT_EXPIRES_SECONDS = 600
# Answers to a poll that are the login's progress, not failures (§3.5).
POLL_ANSWERS = frozenset({"authorization_pending", "slow_down"})
DEVICE_URL_SETTING = "oauth2.deviceAuthorizationUrl / OAUTH2_DEVICE_AUTHORIZATION_URL"


@dataclass(frozen=True)
class DeviceAuthorization:
    """What the IdP answered to the device authorization request (§3.2)."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float

    def __repr__(self) -> str:
        return f"DeviceAuthorization(user_code={self.user_code!r}, expires_in={self.expires_in})"


def read_device_authorization(status: int, body: bytes, url: str) -> DeviceAuthorization:
    """The response's fields, checked.

    Raises:
        OAuthError: the endpoint refused or answered something else; the message names the
            URL and the setting.
    """
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise OAuthError(
            f"the device authorization endpoint {url} answered HTTP {status} without JSON; "
            f"check {DEVICE_URL_SETTING}"
        )
    if status != 200 or "error" in document:
        code = document.get("error")
        said = document.get("error_description")
        raise OAuthError(
            f"the device authorization endpoint {url} refused (HTTP {status}"
            f"{f': {code}' if isinstance(code, str) else ''}"
            f"{f': {said}' if isinstance(said, str) else ''}); check oauth2.clientId / "
            "OAUTH2_CLIENT_ID (the client must be allowed the device grant at the IdP) and "
            "oauth2.scope / OAUTH2_SCOPE"
        )
    fields = {name: document.get(name) for name in ("device_code", "user_code", "verification_uri")}
    missing = [name for name, value in fields.items() if not isinstance(value, str) or not value]
    if missing:
        raise OAuthError(
            f"the device authorization endpoint {url} answered without {', '.join(missing)}; "
            f"check {DEVICE_URL_SETTING}"
        )
    complete = document.get("verification_uri_complete")
    return DeviceAuthorization(
        device_code=str(fields["device_code"]),
        user_code=str(fields["user_code"]),
        verification_uri=str(fields["verification_uri"]),
        verification_uri_complete=complete if isinstance(complete, str) and complete else None,
        expires_in=_positive(document.get("expires_in"), DEFAULT_EXPIRES_SECONDS),
        interval=_positive(document.get("interval"), DEFAULT_INTERVAL_SECONDS),
    )


def instructions(authorization: DeviceAuthorization) -> str:
    """The line the user reads on stderr: where to go and which code to enter."""
    text = (
        f"to log in, open {authorization.verification_uri} on any device and enter the code "
        f"{authorization.user_code}"
    )
    if authorization.verification_uri_complete is not None:
        text += f" (or open {authorization.verification_uri_complete}, which has the code)"
    minutes = max(1, round(authorization.expires_in / 60))
    return f"{text}; the code is valid for {minutes} min"


Poll = Literal["wait", "slower"]


def judge_poll(error: TokenEndpointError, waited: float, expires_in: float) -> Poll:
    """What an error answer to a poll means (§3.5): keep waiting, wait longer from now on,
    or (raised) stop.

    Raises:
        OAuthError: the user denied, the code expired, or the IdP refused for another reason.
    """
    if error.error == "authorization_pending":
        return "wait"
    if error.error == "slow_down":
        return "slower"
    if error.error == "access_denied":
        raise OAuthError(
            "the login was denied on the verification page; run `mcp-oauth2-proxy login` to "
            "try again"
        )
    if error.error == "expired_token":
        raise OAuthError(
            f"the device code expired after {waited:.0f} s (valid for {expires_in:.0f} s) "
            "before the login was approved; run `mcp-oauth2-proxy login` and enter the new "
            "code sooner"
        )
    raise error


def _positive(value: object, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return float(default)
