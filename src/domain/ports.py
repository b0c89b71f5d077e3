"""The ports: what the use cases need from the outside world, named by role.

Adapters in `mcp_oauth2_proxy.adapters` implement them; tests implement them with fakes
(tests/fakes.py). Only the container decides which implementation a proxy gets.
"""

from __future__ import annotations

from typing import Protocol

from .token_exchange import TokenReply, TokenRequest


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


class ConfigFileReader(Protocol):
    """Reads the JSON configuration file named by MCP_PROXY_CONFIG.

    Returns the parsed document; raises ConfigError naming the path when it is missing,
    unreadable or not JSON.
    """

    def read(self, path: str) -> object: ...
