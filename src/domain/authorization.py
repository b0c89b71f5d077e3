"""The browser leg of the authorization-code flow: the authorize URL, the redirect URI and
the judgement of each request that reaches the loopback callback listener.

The listener adapter only moves bytes; every decision about a callback request is made here,
so each hardening rule is a plain-value test: loopback only, the `Host` header must be the
listener's own (DNS rebinding), the `state` must match in constant time, an IdP's `error` is
reported, anything else is refused (RFC 6749 §4.1.2, RFC 8252 §7.3 and §8.3).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .config import OAuth2Config
from .errors import ConfigError, ConfigProblem
from .pkce import LoginSecrets
from .url_guard import is_loopback_host

CALLBACK_PATH = "/callback"


@dataclass(frozen=True)
class RedirectTarget:
    """Where the listener binds and what redirect URI the IdP is told."""

    host: str
    port: int
    path: str
    configured: str | None = None

    def uri(self, port: int | None = None) -> str:
        """The redirect URI: a configured `redirectUri` exactly as written (IdPs compare it
        as a string, RFC 6749 §3.1.2), else built with the port actually bound (which
        differs from the setting when that was 0)."""
        if self.configured is not None:
            return self.configured
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port if port is not None else self.port}{self.path}"


def redirect_target(oauth: OAuth2Config) -> RedirectTarget:
    """From `redirectUri` when set (it must be loopback http, RFC 8252 §7.3), else from
    `callbackHost`, `callbackPort` and the path /callback.

    Raises:
        ConfigError: the redirect URI or callback host could not be served on loopback.
    """
    if oauth.redirect_uri is not None:
        parts = urlsplit(oauth.redirect_uri)
        if parts.scheme != "http" or not is_loopback_host(parts.hostname or ""):
            raise ConfigError(
                [
                    ConfigProblem(
                        "oauth2.redirectUri / OAUTH2_REDIRECT_URI",
                        "set",
                        f"{oauth.redirect_uri} cannot be served by the proxy's login listener: "
                        "interactive login needs a loopback http:// redirect URI such as "
                        "http://127.0.0.1:53682/callback",
                    )
                ]
            )
        return RedirectTarget(
            parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/", oauth.redirect_uri
        )
    if not is_loopback_host(oauth.callback_host):
        raise ConfigError(
            [
                ConfigProblem(
                    "oauth2.callbackHost / OAUTH2_CALLBACK_HOST",
                    "set",
                    f"{oauth.callback_host!r} is not a loopback address; the login listener only "
                    "binds to loopback (127.0.0.1, ::1 or localhost)",
                )
            ]
        )
    return RedirectTarget(oauth.callback_host, oauth.callback_port, CALLBACK_PATH)


def authorize_url(
    oauth: OAuth2Config,
    *,
    endpoint: str,
    client_id: str,
    redirect_uri: str,
    secrets: LoginSecrets,
    scope: str | None,
    resource: str | None,
) -> str:
    """The URL the user opens (RFC 6749 §4.1.1, RFC 7636 §4.3, RFC 8707 §2.1); a query the
    endpoint already has is kept. `scope` and `resource` are the ones in force now (step-up
    widens the scope), `oauth` gives the audience and extra parameters."""
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "state": secrets.state,
        "code_challenge": secrets.challenge,
        "code_challenge_method": "S256",
    }
    for name, value in (
        ("scope", scope),
        ("audience", oauth.audience),
        ("resource", resource),
    ):
        if value is not None:
            params[name] = value
    params.update(oauth.extra_params)
    parts = urlsplit(endpoint)
    query = [*parse_qsl(parts.query, keep_blank_values=True), *params.items()]
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass(frozen=True)
class Granted:
    code: str


@dataclass(frozen=True)
class Denied:
    """The IdP refused: `error` and `description` as it sent them (RFC 6749 §4.1.2.1)."""

    error: str
    description: str | None

    def explain(self, redirect_uri: str) -> str:
        """What happened and what to do, for the log and the browser page alike."""
        said = f"{self.error}: {self.description}" if self.description else self.error
        return (
            f"the IdP refused the login ({said}). If you cancelled, run mcp-oauth2-proxy login "
            "again; for invalid_scope check oauth2.scope / OAUTH2_SCOPE; for a redirect_uri "
            f"error register {redirect_uri} with the IdP"
        )


@dataclass(frozen=True)
class Refused:
    """Not a callback we accept; answered with `status` and left waiting for the real one."""

    status: int
    reason: str


CallbackOutcome = Granted | Denied | Refused


def judge_callback(
    *,
    method: str,
    target: str,
    host_header: str | None,
    expected_host: str,
    expected_path: str,
    secrets: LoginSecrets,
) -> CallbackOutcome:
    """Decide what one request to the listener means."""
    if host_header is None or host_header.lower() != expected_host.lower():
        return Refused(421, "the Host header is not this listener's (possible DNS rebinding)")
    parts = urlsplit(target)
    if parts.path != expected_path:
        return Refused(404, "not the callback path")
    if method != "GET":
        return Refused(405, "the callback only accepts GET")
    query: Mapping[str, str] = dict(parse_qsl(parts.query, keep_blank_values=True))
    state = query.get("state")
    if state is None or not hmac.compare_digest(state.encode(), secrets.state.encode()):
        # A wrong state is not ours, whatever else it says: its error is not shown either.
        return Refused(400, "the state does not match this login")
    if not _from_expected_issuer(query.get("iss"), secrets):
        # RFC 9207 §2.4: a response from another issuer (a mix-up attack) is not acted on,
        # and its error is not shown either.
        return Refused(400, "the iss parameter is not the authorization server's (RFC 9207)")
    if "error" in query:
        return Denied(query["error"], query.get("error_description"))
    code = query.get("code")
    if not code:
        return Refused(400, "the callback has no authorization code")
    return Granted(code)


def _from_expected_issuer(issuer: str | None, secrets: LoginSecrets) -> bool:
    if secrets.issuer is None or (issuer is None and not secrets.issuer_required):
        return True
    return issuer is not None and hmac.compare_digest(issuer.encode(), secrets.issuer.encode())
