"""A real MCP server (the SDK's MCPServer on streamable HTTP, bearer-protected by the SDK's
token verification) on 127.0.0.1, with tools that exercise the bridge.

Tokens come from the local IdP; the test can revoke one to provoke a 401.
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPDeprecationWarning

from .local_idp import LocalIdp


@dataclass
class Upstream:
    url: str
    idp: LocalIdp
    seen_headers: list[dict[str, str]] = field(default_factory=list)
    release: anyio.Event = field(default_factory=anyio.Event)


class IdpTokenVerifier:
    """Accepts exactly the tokens the local IdP issued and has not revoked."""

    def __init__(self, idp: LocalIdp) -> None:
        self._idp = idp

    async def verify_token(self, token: str) -> AccessToken | None:
        if token in self._idp.issued and token not in self._idp.revoked:
            return AccessToken(token=token, client_id=self._idp.client_id, scopes=["mcp"])
        return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def build_server(idp: LocalIdp, port: int, upstream: Upstream) -> MCPServer:
    server = MCPServer(
        "contract-upstream",
        log_level="WARNING",
        token_verifier=IdpTokenVerifier(idp),
        auth=AuthSettings(
            issuer_url="https://idp.invalid",
            resource_server_url=f"http://127.0.0.1:{port}/mcp",
            validate_token_resource=False,
            required_scopes=["mcp"],
        ),
    )

    @server.tool()
    async def echo(text: str) -> str:
        """Return the text."""
        return text

    @server.tool()
    async def steps(count: int, ctx: Context) -> str:
        """Report progress `count` times, then answer."""
        for step in range(count):
            await ctx.report_progress(step + 1, count, f"step {step + 1}")
        return f"did {count} steps"

    @server.tool()
    async def slow(seconds: float) -> str:
        """Answer after `seconds`, or as soon as the test releases it."""
        with anyio.move_on_after(seconds):
            await upstream.release.wait()
        return "slow done"

    @server.tool()
    async def announce(ctx: Context) -> str:
        """Tell the client (over the server stream) that the tool list changed."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await ctx.session.send_tool_list_changed()
        return "announced"

    return server


@asynccontextmanager
async def running_upstream(idp: LocalIdp, **app_options: Any) -> AsyncIterator[Upstream]:
    port = _free_port()
    upstream = Upstream(f"http://127.0.0.1:{port}/mcp", idp)
    app = build_server(idp, port, upstream).streamable_http_app(**app_options)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve)
        with anyio.fail_after(20):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            yield upstream
        finally:
            upstream.release.set()
            server.should_exit = True
