"""A real OAuth 2.1 authorization server on 127.0.0.1: the MCP Python SDK's authorization
routes (authorize, token with PKCE checks, metadata) over a small in-memory provider.

The provider approves every authorization at once (the "user" always consents), rotates
refresh tokens on every use, and refuses a refresh token used twice: exactly what makes a
careless multi-process client end up with `invalid_grant`.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import httpx
import uvicorn
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    IdentityAssertionParams,
    RefreshToken,
    TokenError,
    construct_redirect_uri,
)
from mcp.server.auth.routes import create_auth_routes
from mcp.server.auth.settings import ClientRegistrationOptions
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyHttpUrl, AnyUrl
from starlette.applications import Starlette

CLIENT_ID = "proxy-client"


@dataclass
class MemoryProvider:
    """OAuthAuthorizationServerProvider in memory, for one public client."""

    redirect_uri: str
    access_lifetime: int = 3600
    codes: dict[str, AuthorizationCode] = field(default_factory=dict)
    refresh_tokens: dict[str, RefreshToken] = field(default_factory=dict)
    access_tokens: dict[str, AccessToken] = field(default_factory=dict)
    authorizations: int = 0
    reused_refresh_tokens: list[str] = field(default_factory=list)
    spent: set[str] = field(default_factory=set)
    registered: dict[str, OAuthClientInformationFull] = field(default_factory=dict)
    registrations: list[OAuthClientInformationFull] = field(default_factory=list)
    all_scopes: tuple[str, ...] = ("mcp", "admin")

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        if client_id in self.registered:
            return self.registered[client_id]
        if client_id != CLIENT_ID:
            return None
        return OAuthClientInformationFull(
            client_id=CLIENT_ID,
            redirect_uris=[AnyUrl(self.redirect_uri)],
            token_endpoint_auth_method="none",
            grant_types=["authorization_code", "refresh_token"],
            scope="mcp",
        )

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        # RFC 7591 §3.2.1 lets a server replace requested metadata: here, every scope the
        # server knows is allowed, so a later step-up can ask for more.
        self.registrations.append(client_info)
        self.registered[client_info.client_id] = client_info.model_copy(
            update={"scope": " ".join(self.all_scopes)}
        )

    async def authorize(
        self, client: OAuthClientInformationFull, params: AuthorizationParams
    ) -> str:
        self.authorizations += 1
        code = secrets.token_urlsafe(16)
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=params.scopes or [],
            expires_at=time.time() + 300,
            client_id=client.client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
        )
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> AuthorizationCode | None:
        return self.codes.get(authorization_code)

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        del self.codes[authorization_code.code]
        return self._issue(client.client_id, authorization_code.scopes)

    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> RefreshToken | None:
        if refresh_token in self.spent:
            self.reused_refresh_tokens.append(refresh_token)
        return self.refresh_tokens.get(refresh_token)

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: RefreshToken, scopes: list[str]
    ) -> OAuthToken:
        del self.refresh_tokens[refresh_token.token]
        self.spent.add(refresh_token.token)
        return self._issue(client.client_id, scopes or refresh_token.scopes)

    async def load_access_token(self, token: str) -> AccessToken | None:
        return self.access_tokens.get(token)

    async def exchange_identity_assertion(
        self, client: OAuthClientInformationFull, params: IdentityAssertionParams
    ) -> OAuthToken:
        raise TokenError("unsupported_grant_type", "identity assertions are not used here")

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        self.access_tokens.pop(token.token, None)
        self.refresh_tokens.pop(token.token, None)

    def _issue(self, client_id: str, scopes: list[str]) -> OAuthToken:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.access_tokens[access] = AccessToken(token=access, client_id=client_id, scopes=scopes)
        self.refresh_tokens[refresh] = RefreshToken(
            token=refresh, client_id=client_id, scopes=scopes
        )
        return OAuthToken(
            access_token=access, expires_in=self.access_lifetime, refresh_token=refresh
        )


@dataclass
class AuthServer:
    issuer: str
    provider: MemoryProvider

    @property
    def authorize_url(self) -> str:
        return f"{self.issuer}/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/token"


def free_port() -> int:
    """A loopback port that was free a moment ago (the callback must be registered exactly)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def running_auth_server(
    redirect_uri: str, *, registration: bool = False
) -> AsyncIterator[AuthServer]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    issuer = f"http://127.0.0.1:{sock.getsockname()[1]}"
    provider = MemoryProvider(redirect_uri)
    options = ClientRegistrationOptions(
        enabled=registration, valid_scopes=list(provider.all_scopes)
    )
    app = Starlette(
        routes=create_auth_routes(provider, AnyHttpUrl(issuer), client_registration_options=options)
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(lambda: server.serve(sockets=[sock]))
        try:
            yield AuthServer(issuer, provider)
        finally:
            server.should_exit = True
    sock.close()


class FollowingBrowser:
    """A BrowserOpener that does what a browser and a consenting user would: load the
    authorize URL, follow the IdP's redirect to the proxy's loopback callback."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    async def show(self, url: str) -> bool:
        self.opened.append(url)
        async with httpx.AsyncClient() as client:
            consent = await client.get(url)
            assert consent.status_code in (302, 303), consent.text
            callback = await client.get(consent.headers["location"])
            assert callback.status_code == 200, callback.text
        return True


class UnusableBrowser:
    """A BrowserOpener on a machine with no browser: it records and does nothing."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    async def show(self, url: str) -> bool:
        self.opened.append(url)
        return False
