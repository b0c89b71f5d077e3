"""Token requests and responses as plain values: which form fields each grant sends, how the
client authenticates, and what an IdP's answer means.

Building the exact form body here (and not in the HTTP adapter) keeps RFC details testable
without a network: RFC 6749 §4.3-4.4 and §6 for the grants, §2.3.1 for client
authentication, RFC 7636 §4.5 for the PKCE verifier, RFC 8707 §2.2 for `resource`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import quote_plus

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .client_assertion import CLIENT_ASSERTION_TYPE
from .config import AuthStyle, OAuth2Config
from .device_flow import DEVICE_CODE_GRANT
from .errors import TokenEndpointError
from .redaction import Redactor
from .retry_after import MAX_RETRY_WAIT_SECONDS, retry_after_seconds
from .token_lifecycle import AccessToken, IssuedTokens, normalise_token_type, renew_at

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
_SHOWN_BODY_CHARS = 300
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")
SECRET_FORM_FIELDS = frozenset(
    {
        "client_secret",
        "password",
        "refresh_token",
        "code",
        "code_verifier",
        "device_code",
    }
)


@dataclass(frozen=True)
class TokenRequest:
    """One POST to the token endpoint. `grant` names it in messages; values are never shown."""

    url: str
    grant: str
    form: tuple[tuple[str, str], ...]
    headers: tuple[tuple[str, str], ...] = ()

    def secret_values(self) -> list[str]:
        """The values in this request that must never be logged."""
        values = [value for name, value in self.form if name in SECRET_FORM_FIELDS]
        return values + [value for _, value in self.headers]

    def __repr__(self) -> str:
        fields = ", ".join(name for name, _ in self.form)
        return f"TokenRequest(url={self.url!r}, grant={self.grant!r}, fields=[{fields}])"

    @property
    def needs_assertion(self) -> bool:
        """Whether the client authenticates with private_key_jwt, so each POST of this
        request must carry a freshly signed `client_assertion` (`with_assertion`)."""
        return ("client_assertion_type", CLIENT_ASSERTION_TYPE) in self.form

    def with_assertion(self, assertion: str) -> TokenRequest:
        form = [(name, value) for name, value in self.form if name != "client_assertion"]
        return replace(self, form=(*form, ("client_assertion", assertion)))


@dataclass(frozen=True)
class TokenReply:
    """The token endpoint's raw answer, as the HTTP adapter received it."""

    status: int
    content_type: str
    body: bytes
    retry_after: str | None = None
    date: str | None = None  # the IdP's clock, for `doctor`'s skew check


@dataclass(frozen=True)
class ClientCredentials:
    """Who the proxy is to the IdP (RFC 6749 §2.3): a public client has no secret."""

    client_id: str
    client_secret: str | None
    style: AuthStyle

    def apply(self, form: dict[str, str]) -> tuple[tuple[str, str], ...]:
        """Add this client's authentication to `form`; return any headers it needs. For
        private_key_jwt the assertion itself is added per POST (`TokenRequest.with_assertion`),
        since each one may be used once."""
        if self.style == "private_key_jwt":
            form["client_id"] = self.client_id
            form["client_assertion_type"] = CLIENT_ASSERTION_TYPE
            return ()
        if self.client_secret is not None and self.style == "header":
            # RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
            pair = f"{quote_plus(self.client_id)}:{quote_plus(self.client_secret)}"
            return (("Authorization", "Basic " + base64.b64encode(pair.encode()).decode()),)
        form["client_id"] = self.client_id
        if self.client_secret is not None:
            form["client_secret"] = self.client_secret
        return ()


class TokenRequestBuilder:
    """Builds the form body of every grant from one OAuth2 configuration.

    What may change while the proxy runs is held here, once, for the token requests and the
    browser login alike: the client (a dynamically registered client can be registered
    again), the scope (step-up authorization widens it) and the resource indicator (dropped
    for an IdP that refuses it).
    """

    def __init__(self, oauth: OAuth2Config, *, token_url: str, client_id: str) -> None:
        secret = oauth.client_secret.get_secret_value() if oauth.client_secret else None
        self.token_url = token_url
        self._style = oauth.auth_style
        self._client = ClientCredentials(client_id, secret, oauth.auth_style)
        self.scope = oauth.scope
        self.resource = resource_indicator(oauth.resource)
        self._audience = oauth.audience
        self._extra = dict(oauth.extra_params)

    @property
    def client_id(self) -> str:
        return self._client.client_id

    def identify(self, client_id: str, client_secret: str | None, style: AuthStyle) -> None:
        """Act as another client from now on (after a new dynamic registration)."""
        self._style = style
        self._client = ClientCredentials(client_id, client_secret, style)

    def client_credentials(self) -> TokenRequest:
        return self._build("client_credentials", {}, requested=True)

    def password(self, username: str, password: str) -> TokenRequest:
        return self._build("password", {"username": username, "password": password}, requested=True)

    def refresh(self, refresh_token: str) -> TokenRequest:
        return self._build("refresh_token", {"refresh_token": refresh_token}, scope=True)

    def authorization_code(
        self, code: str, *, redirect_uri: str | None, code_verifier: str | None
    ) -> TokenRequest:
        fields = {"code": code}
        if redirect_uri is not None:
            fields["redirect_uri"] = redirect_uri
        if code_verifier is not None:
            fields["code_verifier"] = code_verifier
        return self._build("authorization_code", fields)

    def device_authorization(self, url: str) -> TokenRequest:
        """RFC 8628 §3.1: the client and what it asks for; no grant_type, since this is
        not yet a token request."""
        form: dict[str, str] = {}
        if self.scope is not None:
            form["scope"] = self.scope
        if self.resource is not None:
            form["resource"] = self.resource
        if self._audience is not None:
            form["audience"] = self._audience
        headers = self._client.apply(form)
        form.update(self._extra)
        return TokenRequest(url, "device_authorization", tuple(form.items()), headers)

    def device_code(self, device_code: str) -> TokenRequest:
        """RFC 8628 §3.4: one poll of the token endpoint."""
        return self._build(DEVICE_CODE_GRANT, {"device_code": device_code})

    def _build(
        self,
        grant: str,
        fields: Mapping[str, str],
        *,
        requested: bool = False,
        scope: bool = False,
    ) -> TokenRequest:
        form = {"grant_type": grant, **fields}
        if (requested or scope) and self.scope is not None:
            form["scope"] = self.scope
        if requested and self._audience is not None:
            form["audience"] = self._audience
        if self.resource is not None:
            form["resource"] = self.resource
        headers = self._client.apply(form)
        # extraParams cannot name the grant's own fields (config.RESERVED_PARAMS).
        form.update(self._extra)
        return TokenRequest(self.token_url, grant, tuple(form.items()), headers)


RESOURCE_OFF = "none"


def resource_indicator(configured: str | None) -> str | None:
    """The RFC 8707 `resource` to send: the setting, or nothing when it says `none` (for an
    IdP that refuses the parameter)."""
    if configured is None or configured.lower() == RESOURCE_OFF:
        return None
    return configured


class _TokenResponse(BaseModel):
    """RFC 6749 §5.1, read leniently: IdPs differ in small ways and none of them is ours."""

    model_config = ConfigDict(extra="ignore")

    access_token: str
    token_type: str | None = None
    expires_in: float | None = None
    refresh_token: str | None = None
    scope: str | None = None

    @field_validator("expires_in", mode="before")
    @classmethod
    def _number_or_numeric_text(cls, value: object) -> object:
        if isinstance(value, str):
            return float(value) if value.strip() else None
        return value


def parse_token_reply(
    request: TokenRequest, reply: TokenReply, *, now: float, refresh_skew: float
) -> IssuedTokens:
    """Turn the token endpoint's answer into tokens, or raise a TokenEndpointError that says
    what the IdP said and what to check."""
    document = _json_object(reply.body)
    ok = 200 <= reply.status < 300
    if ok and document is not None and "access_token" in document:
        try:
            parsed = _TokenResponse.model_validate(document)
        except ValidationError:
            raise _error(request, reply, "answered with a malformed token response", None) from None
        access = AccessToken(
            value=parsed.access_token,
            token_type=normalise_token_type(parsed.token_type),
            renew_at=renew_at(now, parsed.expires_in, refresh_skew, parsed.access_token),
            scope=parsed.scope,
        )
        return IssuedTokens(access=access, refresh_token=parsed.refresh_token)
    if document is None:
        kind = reply.content_type or "no content type"
        raise _error(
            request,
            reply,
            f"answered HTTP {reply.status} ({kind}) with a body that "
            f"is not a JSON token response: {_shown(reply.body)}",
            None,
        )
    code = document.get("error")
    if isinstance(code, str):
        description = document.get("error_description")
        said = f"{code}: {_clean(description)}" if isinstance(description, str) else code
        raise _error(request, reply, f"refused the request with HTTP {reply.status}: {said}", code)
    raise _error(request, reply, f"answered HTTP {reply.status} without an access_token", None)


def _json_object(body: bytes) -> dict[str, object] | None:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return document if isinstance(document, dict) else None


def _error(
    request: TokenRequest, reply: TokenReply, what: str, code: str | None
) -> TokenEndpointError:
    hint = _hint(request.grant, code, reply.status)
    if code == "invalid_client" and request.needs_assertion:
        hint = _PRIVATE_KEY_JWT_HINT
    message = f"token request ({request.grant}) to {request.url} failed: the IdP {what}. {hint}"
    # An error page may quote the request back (a gateway, a WAF): the message goes to the
    # MCP client and to library callers, so the request's own secrets are masked here.
    masking = Redactor()
    masking.register(*request.secret_values())
    return TokenEndpointError(masking.redact(message), status=reply.status, error=code)


_HINTS = {
    "invalid_client": "Check oauth2.clientId / OAUTH2_CLIENT_ID and oauth2.clientSecret / "
    "OAUTH2_CLIENT_SECRET, and whether the IdP expects them in the form body or as HTTP Basic "
    "(oauth2.authStyle / OAUTH2_AUTH_STYLE = body or header).",
    "invalid_scope": "Check oauth2.scope / OAUTH2_SCOPE against the scopes this client may "
    "request.",
    "unauthorized_client": "This client is not allowed to use this grant: check oauth2.grant / "
    "OAUTH2_GRANT and the client's settings at the IdP.",
    "unsupported_grant_type": "The IdP does not support this grant: check oauth2.grant / "
    "OAUTH2_GRANT.",
    "invalid_request": "Check oauth2.extraParams / OAUTH2_EXTRA_PARAMS, oauth2.audience / "
    "OAUTH2_AUDIENCE and oauth2.resource / OAUTH2_RESOURCE.",
    "invalid_target": "The IdP refused the resource indicator: check oauth2.resource / "
    "OAUTH2_RESOURCE, or set it to none to send none.",
    "access_denied": "The IdP denied access: check the client's and the user's permissions, "
    "and oauth2.scope / OAUTH2_SCOPE.",
    "slow_down": "The IdP asks this client to slow down; try again in a little while.",
}
_PRIVATE_KEY_JWT_HINT = (
    "The IdP did not accept the signed client assertion (private_key_jwt): check that it "
    "holds the public key of oauth2.clientAssertionKeyFile / OAUTH2_CLIENT_ASSERTION_KEY_FILE "
    "for oauth2.clientId / OAUTH2_CLIENT_ID, under the key id oauth2.clientAssertionKid / "
    "OAUTH2_CLIENT_ASSERTION_KID if it needs one, with oauth2.clientAssertionAlg / "
    "OAUTH2_CLIENT_ASSERTION_ALG; and that this machine's clock is right "
    "(`mcp-oauth2-proxy doctor` checks it)."
)
_INVALID_GRANT_HINTS = {
    "refresh_token": "The refresh token is expired or revoked: log in again (`mcp-oauth2-proxy "
    "login`, for grants authorization_code and device_code), or set a new "
    "oauth2.refreshToken / OAUTH2_REFRESH_TOKEN.",
    "urn:ietf:params:oauth:grant-type:device_code": "The device code is unknown or was "
    "already used: run `mcp-oauth2-proxy login` for a new one.",
    "authorization_code": "The authorization code is used, expired, or does not match "
    "oauth2.redirectUri / OAUTH2_REDIRECT_URI and oauth2.codeVerifier / OAUTH2_CODE_VERIFIER.",
    "password": "Check oauth2.username / OAUTH2_USERNAME and oauth2.password / OAUTH2_PASSWORD.",
    "client_credentials": "The IdP refused client credentials for this client: check at the "
    "IdP that it may use client_credentials, and oauth2.scope / OAUTH2_SCOPE and "
    "oauth2.audience / OAUTH2_AUDIENCE.",
}


def _hint(grant: str, code: str | None, status: int) -> str:
    if code == "invalid_grant":
        return _INVALID_GRANT_HINTS.get(grant, "Check the grant's credentials.")
    if code in _HINTS:
        return _HINTS[code]
    if status in (502, 504) and code is None:
        return (
            "A gateway or proxy between here and the IdP could not reach it; try again "
            "shortly, and check HTTPS_PROXY / NO_PROXY if it persists."
        )
    if code == "temporarily_unavailable" or status >= 500 or status == 429:
        return "The IdP is having trouble; try again shortly."
    if code is None and status < 500:
        return (
            "Check that oauth2.tokenUrl / OAUTH2_TOKEN_URL is the IdP's token endpoint, "
            "not its authorization endpoint or issuer page."
        )
    return "See the IdP's documentation for this error."


def _clean(text: str) -> str:
    """IdP text goes into our logs: one line, bounded, no control characters."""
    flat = _UNPRINTABLE.sub(" ", text).strip()
    return flat if len(flat) <= _SHOWN_BODY_CHARS else flat[:_SHOWN_BODY_CHARS] + "…"


def _shown(body: bytes) -> str:
    return repr(_clean(body[: _SHOWN_BODY_CHARS * 4].decode("utf-8", "replace")))


MAX_TRANSIENT_ATTEMPTS = 3
# RFC 8628 §3.5: after `slow_down` the client waits five seconds more than it did.
SLOW_DOWN_SECONDS = 5.0


def transient_delay(
    error: TokenEndpointError, reply: TokenReply, attempt: int, *, now: float
) -> float | None:
    """How long to wait before asking again, when the IdP's refusal is temporary (429, 503,
    `temporarily_unavailable`, `slow_down`) and asking again is worth it; None otherwise.

    A `Retry-After` (seconds or an HTTP date) is honoured up to 30 s; past that the error
    stands rather than holding a request that long. `attempt` counts from 0.
    """
    slow_down = error.error == "slow_down"
    transient = reply.status in (429, 503) or error.error == "temporarily_unavailable"
    if not (transient or slow_down) or attempt + 1 >= MAX_TRANSIENT_ATTEMPTS:
        return None
    delay = retry_after_seconds(reply.retry_after, now)
    if delay is None:
        delay = 0.5 * 2**attempt
    if slow_down:
        delay = max(delay, SLOW_DOWN_SECONDS * (attempt + 1))
    return delay if delay <= MAX_RETRY_WAIT_SECONDS else None


def naming_the_wait(
    error: TokenEndpointError, reply: TokenReply, *, now: float
) -> TokenEndpointError:
    """`error`, saying so when the IdP asked for a wait longer than a request is held: the
    user then knows when trying again makes sense."""
    asked = retry_after_seconds(reply.retry_after, now)
    if asked is None or asked <= MAX_RETRY_WAIT_SECONDS:
        return error
    return TokenEndpointError(
        f"{error} The IdP asked to wait {asked:.0f} s (Retry-After), longer than the proxy "
        f"holds a request ({MAX_RETRY_WAIT_SECONDS:.0f} s).",
        status=error.status,
        error=error.error,
    )


# Microsoft Entra ID refuses RFC 8707 `resource` next to v2 scopes with this code.
_RESOURCE_REFUSED_CODES = ("AADSTS9010010",)


def refuses_resource(error: TokenEndpointError, request: TokenRequest) -> bool:
    """Whether the IdP refused the request because of its `resource` parameter, so that the
    same request without it may succeed."""
    sent_resource = any(name == "resource" for name, _ in request.form)
    return sent_resource and any(code in str(error) for code in _RESOURCE_REFUSED_CODES)


def without_resource(request: TokenRequest) -> TokenRequest:
    form = tuple((name, value) for name, value in request.form if name != "resource")
    return TokenRequest(request.url, request.grant, form, request.headers)
