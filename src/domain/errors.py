"""The proxy's own exceptions: one small tree, each message a sentence a user can act on.

    ProxyError
    ├── ConfigError              a setting is missing, malformed or unsafe (CLI exit 2)
    │   └── InsecureUrlError     cleartext http:// to a host off loopback
    ├── OAuthError               a token could not be obtained (CLI exit 3)
    │   ├── TokenEndpointError   the IdP answered, and the answer was an error
    │   └── IdpUnreachableError  the IdP did not answer: refused, reset, timed out
    ├── UpstreamError            the MCP server could not be reached or broke off
    │   └── UpstreamUnreachableError  no connection at all: the message was never sent
    └── ClientGone               the MCP client stopped reading stdout (ends the proxy quietly)

Messages name the setting both as the config-file key and as the environment variable, so the
user knows what to change wherever their configuration lives. They never contain a secret.
"""

from __future__ import annotations

from dataclasses import dataclass


class ProxyError(Exception):
    """Base of every error this package raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with the configuration, with where the offending value came from.

    `field` names the setting (`oauth2.callbackPort / OAUTH2_CALLBACK_PORT`); `source` is where
    its value came from (`file /etc/proxy.json`, `env OAUTH2_CALLBACK_PORT`), or empty when
    it was not set at all, so the line reads `field (source): message` or `field: message`.
    """

    field: str
    source: str
    message: str

    def __str__(self) -> str:
        if not self.source:
            return f"{self.field}: {self.message}"
        return f"{self.field} ({self.source}): {self.message}"


class ConfigError(ProxyError):
    """The merged configuration is not usable; every problem found is listed at once."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        lines = [f"configuration error: {problem}" for problem in self.problems]
        super().__init__("\n".join(lines))


class InsecureUrlError(ConfigError):
    """A URL would send tokens or secrets in cleartext over a network."""


class OAuthError(ProxyError):
    """No access token could be obtained from the authorization server."""


class TokenEndpointError(OAuthError):
    """The token endpoint answered with an error.

    `error` is the RFC 6749 §5.2 code (`invalid_client`, `invalid_grant`, ...) when the IdP
    sent one, else None; `status` is the HTTP status.
    """

    def __init__(self, message: str, *, status: int, error: str | None) -> None:
        self.status = status
        self.error = error
        super().__init__(message)


class IdpUnreachableError(OAuthError):
    """The token endpoint could not be reached or did not answer in time."""


class UpstreamError(ProxyError):
    """The upstream MCP server could not be reached, or the connection broke mid-answer."""


class UpstreamUnreachableError(UpstreamError):
    """No connection to the upstream could be made, so the message certainly did not run:
    sending it again is safe even for a tool call."""


class ClientGone(ProxyError):
    """The MCP client closed its end of stdout; nobody is left to answer."""
