"""The ports: what the use cases need from the outside world, named by role.

Adapters in `mcp_oauth2_proxy.adapters` implement them; tests implement them with fakes
(tests/fakes.py). Only the container decides which implementation a proxy gets.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Literal, Protocol

from .cached_login import CachedLogin
from .client_assertion import Algorithm
from .client_registration import RegisteredClient
from .line_framing import Oversized
from .token_exchange import TokenReply, TokenRequest

if TYPE_CHECKING:  # the browser login's types: a proxy that never logs in never loads them
    from .authorization import Denied, Granted, RedirectTarget
    from .pkce import LoginSecrets


class Clock(Protocol):
    """Wall-clock time in seconds since the epoch (token expiry is wall-clock, see
    token_lifecycle)."""

    def now(self) -> float: ...


class TokenEndpoint(Protocol):
    """POSTs one form to an OAuth2 token endpoint.

    Returns whatever the endpoint answered, error statuses included; raises
    IdpUnreachableError when there is no answer (refused, reset, timed out).
    """

    async def post(self, request: TokenRequest) -> TokenReply: ...


class AssertionSigner(Protocol):
    """Signs private_key_jwt assertions with the client's private key (which it holds)."""

    @property
    def algorithm(self) -> Algorithm: ...

    def sign(self, data: bytes) -> bytes: ...


class TokenCommand(Protocol):
    """The user's credential helper: runs it, returns what it printed (stdout, stderr).

    Raises OAuthError when it cannot be run, fails or takes too long (the message says
    which, with the helper's last words on stderr)."""

    @property
    def program(self) -> str: ...

    async def run(self) -> tuple[bytes, bytes]: ...


class ConfigFileReader(Protocol):
    """Reads the JSON configuration file named by MCP_PROXY_CONFIG.

    Returns the parsed document; raises ConfigError naming the path when it is missing,
    unreadable or not JSON.
    """

    def read(self, path: str) -> object: ...


class UpstreamReply(Protocol):
    """One upstream HTTP response, read as it arrives.

    `headers` has lower-case names. `chunks()` and `read()` raise UpstreamError when the
    connection breaks mid-body.
    """

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def chunks(self) -> AsyncGenerator[bytes, None]:
        """The body as it arrives; closed (`aclose`) by a reader that stops early."""
        ...

    async def read(self, limit: int) -> bytes:
        """At most `limit` bytes of the body (for error messages)."""
        ...


class UpstreamTransport(Protocol):
    """HTTP exchanges with the one upstream MCP endpoint.

    Raises UpstreamError when there is no response at all (refused, reset, TLS failure).
    """

    def exchange(
        self,
        method: Literal["POST", "GET", "DELETE"],
        headers: Mapping[str, str],
        body: bytes | None = None,
        url: str | None = None,
    ) -> AbstractAsyncContextManager[UpstreamReply]:
        """`url` defaults to the upstream URL; the HTTP+SSE transport posts elsewhere."""
        ...


class ClientChannel(Protocol):
    """The MCP client's side: newline-delimited JSON-RPC in, whole lines out.

    `send` writes one line atomically (lines never interleave) and raises ClientGone when the
    client stopped reading.
    """

    def lines(self) -> AsyncIterator[bytes | Oversized]: ...

    async def send(self, line: bytes) -> None: ...


class Entropy(Protocol):
    """Cryptographically strong random bytes (PKCE verifiers, states, cache keys)."""

    def random_bytes(self, count: int) -> bytes: ...


class TokenStore(Protocol):
    """The refresh-token cache, shared by every proxy process of the same OS user.

    `locked(key)` is a cross-process lock: whoever holds it may log in or refresh for that
    entry, and re-reads the entry after taking it, so a refresh token another process already
    rotated is used, never burned. `load` returns None for a missing or unreadable entry (a
    corrupt one is logged, never raised).
    """

    def locked(self, key: str) -> AbstractAsyncContextManager[None]: ...

    def load(self, key: str) -> CachedLogin | None: ...

    def save(self, login: CachedLogin) -> None: ...

    def delete(self, key: str) -> bool:
        """Forget the entry; True when there was one."""
        ...


class BrowserOpener(Protocol):
    """Shows a URL to the user in their browser; False when no browser could be opened."""

    async def show(self, url: str) -> bool: ...


class PendingCallback(Protocol):
    """A listener waiting for the IdP's redirect; `redirect_uri` has the port it bound."""

    @property
    def redirect_uri(self) -> str: ...

    async def result(self) -> Granted | Denied:
        """The first acceptable callback (refused requests are answered and ignored)."""
        ...


class CallbackListener(Protocol):
    """Receives the authorization response on loopback (RFC 8252 §7.3)."""

    def listening(
        self, target: RedirectTarget, secrets: LoginSecrets
    ) -> AbstractAsyncContextManager[PendingCallback]:
        """Bind, yield the pending callback, close when the block ends.

        Raises ConfigError naming OAUTH2_CALLBACK_PORT when the port is taken.
        """
        ...


class PortChecker(Protocol):
    """Whether a local TCP port could be bound now (the login's callback port)."""

    def is_free(self, host: str, port: int) -> bool: ...


class MetadataReply(Protocol):
    """What a discovery request got: the status, the JSON document if the body was one, the
    `WWW-Authenticate` header, and `note`, why a redirect was not followed (else None)."""

    @property
    def status(self) -> int: ...

    @property
    def document(self) -> object: ...

    @property
    def challenge(self) -> str | None: ...

    @property
    def note(self) -> str | None: ...


class DiscoveryTransport(Protocol):
    """HTTP for discovery and registration, never carrying a token.

    Redirects are followed only to URLs the insecure-URL guard accepts. Raises
    UpstreamError (for the MCP server) or IdpUnreachableError when there is no answer.
    """

    async def probe(self, url: str) -> MetadataReply:
        """An unauthenticated MCP POST: the server's 401 names its metadata."""
        ...

    async def get_json(self, url: str) -> MetadataReply: ...

    async def post_json(self, url: str, document: Mapping[str, object]) -> MetadataReply: ...


class ClientRegistry(Protocol):
    """Clients registered dynamically (RFC 7591), kept per authorization server (issuer)."""

    def load(self, issuer: str) -> RegisteredClient | None: ...

    def save(self, client: RegisteredClient) -> None: ...

    def forget(self, issuer: str) -> None: ...
