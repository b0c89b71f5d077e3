"""The `demo` command's world: a local IdP and an OAuth-protected MCP server on 127.0.0.1.

The MCP server is the official SDK's (MCPServer on streamable HTTP, bearer tokens checked by
the SDK's token verification, its protected resource metadata naming the IdP); the IdP is
`DemoIdp`. Both need the `demo` extra (`pip install 'mcp-oauth2-proxy[demo]'`).
"""

from __future__ import annotations

import functools
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import httpx
import uvicorn
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer
from starlette.types import ASGIApp

from .demo_idp import DEMO_CLIENT_ID, DemoIdp, Report


@dataclass(frozen=True)
class DemoEndpoints:
    """Where the demo's servers listen, and the client credentials the IdP accepts."""

    issuer: str
    token_url: str
    mcp_url: str
    client_id: str
    client_secret: str


class DemoServers:
    """Runs the demo IdP and MCP server for the length of an `async with running()`."""

    @asynccontextmanager
    async def running(self, report: Report) -> AsyncIterator[DemoEndpoints]:
        idp_socket, idp_port = _listening_socket()
        mcp_socket, mcp_port = _listening_socket()
        idp = DemoIdp(f"http://127.0.0.1:{idp_port}", secrets.token_urlsafe(24), report)
        mcp_url = f"http://127.0.0.1:{mcp_port}/mcp"
        servers = [
            _server(idp.app()),
            _server(self._mcp_server(idp, mcp_url).streamable_http_app()),
        ]
        async with anyio.create_task_group() as tasks:
            for server, sock in zip(servers, (idp_socket, mcp_socket), strict=True):
                tasks.start_soon(functools.partial(server.serve, sockets=[sock]))
            try:
                yield DemoEndpoints(idp.issuer, idp.token_url, mcp_url, DEMO_CLIENT_ID, idp.secret)
            finally:
                for server in servers:
                    server.should_exit = True
        idp_socket.close()
        mcp_socket.close()

    async def status_without_token(self, mcp_url: str) -> int:
        """What the MCP server answers a request that carries no token (401, it should be)."""
        async with httpx.AsyncClient() as client:
            response = await client.post(
                mcp_url,
                json={"jsonrpc": "2.0", "id": 0, "method": "ping"},
                headers={"Accept": "application/json, text/event-stream"},
            )
            return response.status_code

    def _mcp_server(self, idp: DemoIdp, mcp_url: str) -> MCPServer:
        issued = idp.issued

        class IssuedTokens:
            async def verify_token(self, token: str) -> AccessToken | None:
                if token in issued:
                    return AccessToken(token=token, client_id=DEMO_CLIENT_ID, scopes=[])
                return None

        server = MCPServer(
            "demo-upstream",
            log_level="WARNING",
            token_verifier=IssuedTokens(),
            auth=AuthSettings(
                issuer_url=idp.issuer, resource_server_url=mcp_url, validate_token_resource=False
            ),
        )

        @server.tool()
        async def add(a: int, b: int) -> int:
            """Add two integers."""
            return a + b

        @server.tool()
        async def greet(name: str) -> str:
            """Greet someone by name."""
            return f"Hello, {name}! This answer came through mcp-oauth2-proxy."

        @server.tool()
        async def countdown(start: int, ctx: Context) -> str:
            """Count down from `start`, reporting progress at every step."""
            for step in range(start):
                await ctx.report_progress(step + 1, start, f"{start - step}…")
            return "lift-off"

        return server


def _listening_socket() -> tuple[socket.socket, int]:
    """A socket already listening, so clients may connect before uvicorn has started."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port: int = sock.getsockname()[1]
    return sock, port


def _server(app: ASGIApp) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
