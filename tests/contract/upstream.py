"""A real MCP server (the SDK's MCPServer on streamable HTTP, bearer-protected by the SDK's
token verification) on 127.0.0.1, with tools that exercise the bridge.

Tokens come from the local IdP; the test can revoke one to provoke a 401.
"""

from __future__ import annotations

import json
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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .local_idp import LocalIdp


@dataclass
class Seen:
    """One HTTP request as the upstream received it."""

    method: str
    headers: dict[str, str]
    body: bytes

    @property
    def rpc_method(self) -> str | None:
        try:
            document = json.loads(self.body)
        except ValueError:
            return None
        return document.get("method") if isinstance(document, dict) else None


@dataclass
class Upstream:
    url: str
    idp: LocalIdp
    seen: list[Seen] = field(default_factory=list)
    release: anyio.Event = field(default_factory=anyio.Event)
    slow_started: anyio.Event = field(default_factory=anyio.Event)
    slow_cancelled: anyio.Event = field(default_factory=anyio.Event)
    stream_opened: anyio.Event = field(default_factory=anyio.Event)

    def posts(self, rpc_method: str | None = None) -> list[Seen]:
        return [
            s
            for s in self.seen
            if s.method == "POST" and (rpc_method is None or s.rpc_method == rpc_method)
        ]


class Recorder:
    """ASGI middleware that records each request's method, headers and body."""

    def __init__(self, app: ASGIApp, upstream: Upstream) -> None:
        self._app = app
        self._upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        seen = Seen(
            scope["method"],
            {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            b"",
        )
        self._upstream.seen.append(seen)
        if seen.method == "GET":
            self._upstream.stream_opened.set()

        async def recording_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen.body += message.get("body", b"")
            return message

        await self._app(scope, recording_receive, send)


class IdpTokenVerifier:
    """Accepts exactly the tokens the local IdP issued and has not revoked."""

    def __init__(self, idp: LocalIdp) -> None:
        self._idp = idp

    async def verify_token(self, token: str) -> AccessToken | None:
        if token in self._idp.issued and token not in self._idp.revoked:
            return AccessToken(token=token, client_id=self._idp.client_id, scopes=["mcp"])
        return None


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
        upstream.slow_started.set()
        try:
            with anyio.move_on_after(seconds):
                await upstream.release.wait()
        except anyio.get_cancelled_exc_class():
            upstream.slow_cancelled.set()
            raise
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
async def running_upstream(
    idp: LocalIdp,
    *,
    legacy_sse: bool = False,
    tls: tuple[str, str] | None = None,
    **app_options: Any,
) -> AsyncIterator[Upstream]:
    """The upstream on streamable HTTP at /mcp, or (`legacy_sse`) on the HTTP+SSE transport
    of MCP 2024-11-05 at /sse; over https with `tls` (certificate chain file, key file)."""
    # A socket that listens before uvicorn starts: connections wait in its backlog, so
    # there is nothing to poll for and no port to race for.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    scheme = "https" if tls else "http"
    upstream = Upstream(f"{scheme}://127.0.0.1:{port}/{'sse' if legacy_sse else 'mcp'}", idp)
    server_app = build_server(idp, port, upstream)
    asgi = server_app.sse_app() if legacy_sse else server_app.streamable_http_app(**app_options)
    app = Recorder(asgi, upstream)
    certificate, key = tls or (None, None)
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", ssl_certfile=certificate, ssl_keyfile=key
    )
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(lambda: server.serve(sockets=[sock]))
        try:
            yield upstream
        finally:
            upstream.release.set()
            server.should_exit = True
    sock.close()
