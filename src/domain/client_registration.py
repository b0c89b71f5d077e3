"""Dynamic client registration (RFC 7591) as the MCP spec's last resort for a client id.

The proxy registers as what it is: a public native client (no secret, PKCE), with the exact
loopback redirect URI it listens on. A registration is kept per issuer and reused until the
server refuses it, the issuer changes, or the redirect URI no longer matches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from .discovery import DiscoveryError

CLIENT_NAME = "mcp-oauth2-proxy"


@dataclass(frozen=True)
class RegisteredClient:
    """A client id an authorization server gave us, and for which redirect URI."""

    issuer: str
    client_id: str
    client_secret: str | None
    redirect_uri: str
    auth_method: str = "none"

    @property
    def auth_style(self) -> Literal["body", "header"]:
        """How this client authenticates at the token endpoint (RFC 6749 §2.3.1)."""
        return "header" if self.auth_method == "client_secret_basic" else "body"

    def serves(self, issuer: str, redirect_uri: str) -> bool:
        return self.issuer == issuer and self.redirect_uri == redirect_uri

    def __repr__(self) -> str:
        return (
            f"RegisteredClient(issuer={self.issuer!r}, client_id={self.client_id!r}, "
            f"redirect_uri={self.redirect_uri!r})"
        )


def auth_method_for(supported: tuple[str, ...] | None) -> str:
    """A public client ("none") unless the server only takes secrets; then the form-body
    method if it may, else HTTP Basic (RFC 8414 token_endpoint_auth_methods_supported)."""
    if supported is None or "none" in supported:
        return "none"
    if "client_secret_post" in supported:
        return "client_secret_post"
    return "client_secret_basic"


def registration_request(
    redirect_uri: str, scope: str | None, supported_auth_methods: tuple[str, ...] | None = None
) -> dict[str, object]:
    """The client metadata sent to the registration endpoint (RFC 7591 §2)."""
    request: dict[str, object] = {
        "client_name": CLIENT_NAME,
        "application_type": "native",
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": auth_method_for(supported_auth_methods),
    }
    if scope is not None:
        request["scope"] = scope
    return request


class _Registration(BaseModel):
    # Built at first use: most proxies never register a client.
    model_config = ConfigDict(extra="ignore", defer_build=True)

    client_id: str
    client_secret: str | None = None
    token_endpoint_auth_method: str | None = None


def read_registration(
    status: int, document: object, *, issuer: str, redirect_uri: str, url: str
) -> RegisteredClient:
    """The client the server registered, or a DiscoveryError saying why there is none."""
    if status not in (200, 201):
        said = ""
        if isinstance(document, dict) and isinstance(document.get("error"), str):
            said = f": {document['error']}"
            if isinstance(document.get("error_description"), str):
                said += f": {document['error_description']}"
        raise DiscoveryError(
            f"client registration at {url} failed with HTTP {status}{said}. Register a client "
            "with the IdP yourself and set oauth2.clientId / OAUTH2_CLIENT_ID"
        )
    try:
        registration = _Registration.model_validate(document)
    except ValidationError:
        raise DiscoveryError(f"client registration at {url} returned no client_id") from None
    method = registration.token_endpoint_auth_method or (
        "client_secret_post" if registration.client_secret else "none"
    )
    return RegisteredClient(
        issuer, registration.client_id, registration.client_secret, redirect_uri, method
    )
