"""Session expiry on the 2025 wire, end to end: the real SDK client runs the installed
`mcp-oauth2-proxy` over stdio, and the upstream (the SDK's MCPServer) is restarted on the same
127.0.0.1 port between two tool calls. The new server's session manager has never seen the
old session, so it answers 404 (transports §Session Management); the proxy replays the
client's initialize and notifications/initialized, and resends the call in the new session.
The client is never told."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import mcp_types as types
import pytest
import uvicorn
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .local_idp import LocalIdp, local_idp
from .upstream import Recorder, Seen, Upstream, build_server

pytestmark = [pytest.mark.anyio, pytest.mark.contract]

COMMAND = str(Path(sys.executable).with_name("mcp-oauth2-proxy"))
BOUND_SECONDS = 60
# A restart cuts what is still open (the server stream) after this long, as a real one would.
GRACEFUL_SHUTDOWN_SECONDS = 2
EXPIRED = "the upstream's session expired; starting a new one"
RENEWED = "started a new upstream session"


class StreamWatch:
    """ASGI middleware: sets the session's event once a GET for it is answered 200, that is,
    once the server holds a server stream for that session."""

    def __init__(self, app: ASGIApp, opened: dict[str, anyio.Event]) -> None:
        self._app = app
        self._opened = opened

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self._app(scope, receive, send)
            return
        session = dict(scope["headers"]).get(b"mcp-session-id", b"").decode("latin-1")

        async def watching_send(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.start" and message["status"] == 200:
                self._opened.setdefault(session, anyio.Event()).set()

        await self._app(scope, receive, watching_send)


class RestartableUpstream:
    """The SDK's MCPServer behind uvicorn on one listening socket that outlives the servers:
    while one server stops and the next starts, connections wait in the socket's backlog.
    Each generation records its own requests."""

    def __init__(self, idp: LocalIdp, tasks: anyio.abc.TaskGroup) -> None:
        self._idp = idp
        self._tasks = tasks
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.generations: list[Upstream] = []
        self._streams: dict[str, anyio.Event] = {}
        self._server: uvicorn.Server | None = None
        self._stopped = anyio.Event()

    @property
    def current(self) -> Upstream:
        return self.generations[-1]

    def stream_opened(self, session: str) -> anyio.Event:
        """Set once some generation holds a server stream for `session`."""
        return self._streams.setdefault(session, anyio.Event())

    def start(self) -> Upstream:
        upstream = Upstream(self.url, self._idp)
        mcp_app = build_server(self._idp, self.port, upstream).streamable_http_app()
        app = StreamWatch(Recorder(mcp_app, upstream), self._streams)
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
        server = uvicorn.Server(config)
        stopped = anyio.Event()
        # uvicorn closes the sockets it is given when it stops; it gets a duplicate, so the
        # listening socket itself stays open for the next generation.
        listener = self._sock.dup()

        async def serve() -> None:
            try:
                await server.serve(sockets=[listener])
            finally:
                listener.close()
                stopped.set()

        self._tasks.start_soon(serve)
        self._server, self._stopped = server, stopped
        self.generations.append(upstream)
        return upstream

    async def stop(self) -> None:
        """Stop the current server and wait until it has stopped, lifespan and all: its
        session manager, and every session it held, are gone."""
        if self._server is None:
            return
        self.current.release.set()
        self._server.should_exit = True
        await self._stopped.wait()
        self._server = None

    async def restart(self) -> Upstream:
        await self.stop()
        return self.start()

    def close(self) -> None:
        self._sock.close()


@asynccontextmanager
async def restartable_upstream(idp: LocalIdp) -> AsyncIterator[RestartableUpstream]:
    async with anyio.create_task_group() as tasks:
        upstream = RestartableUpstream(idp, tasks)
        upstream.start()
        try:
            yield upstream
        finally:
            with anyio.CancelScope(shield=True), anyio.fail_after(BOUND_SECONDS):
                await upstream.stop()
            upstream.close()


@pytest.fixture
def idp() -> Iterator[LocalIdp]:
    with local_idp() as served:
        yield served


@pytest.fixture
async def upstream(idp: LocalIdp) -> AsyncIterator[RestartableUpstream]:
    async with restartable_upstream(idp) as served:
        yield served


def proxy_env(upstream: RestartableUpstream, idp: LocalIdp, **extra: str) -> dict[str, str]:
    return {
        "UPSTREAM_URL": upstream.url,
        "OAUTH2_GRANT": "client_credentials",
        "OAUTH2_CLIENT_ID": idp.client_id,
        "OAUTH2_CLIENT_SECRET": idp.client_secret,
        "OAUTH2_TOKEN_URL": idp.url,
        "LOG_LEVEL": "debug",
        **extra,
    }


@asynccontextmanager
async def proxied_client(
    env: dict[str, str], stderr: Path, **options: Any
) -> AsyncIterator[Client]:
    """The SDK client on the proxy's stdio, the 2025 wire (initialize handshake); the
    proxy's stderr goes to a file."""
    with stderr.open("w", encoding="utf-8") as errlog:
        transport = stdio_client(StdioServerParameters(command=COMMAND, env=env), errlog=errlog)
        async with Client(transport, mode="legacy", **options) as session:
            yield session


def text_of(result: types.CallToolResult) -> str:
    (content,) = result.content
    assert isinstance(content, types.TextContent)
    return content.text


def session_of(seen: Seen) -> str | None:
    return seen.headers.get("mcp-session-id")


def body_of(seen: Seen) -> Any:
    return json.loads(seen.body)


def log_lines(stderr: Path, message: str) -> list[str]:
    return [line for line in stderr.read_text().splitlines() if f'msg="{message}"' in line]


async def test_a_call_refused_by_a_restarted_upstream_runs_in_a_new_session(
    upstream: RestartableUpstream, idp: LocalIdp, tmp_path: Path
) -> None:
    # Without the server stream, only the call can find out that the session is gone.
    env = proxy_env(upstream, idp, UPSTREAM_OPEN_SERVER_STREAM="false")
    stderr = tmp_path / "proxy.stderr"
    with anyio.fail_after(BOUND_SECONDS):
        async with proxied_client(env, stderr) as session:
            assert text_of(await session.call_tool("echo", {"text": "before"})) == "before"
            first = upstream.current
            restarted = await upstream.restart()
            assert text_of(await session.call_tool("echo", {"text": "after"})) == "after"
            assert text_of(await session.call_tool("echo", {"text": "again"})) == "again"

    (client_initialize,) = first.posts("initialize")
    old_session = session_of(first.posts("tools/call")[0])
    assert old_session is not None
    posts = [post for post in restarted.seen if post.method == "POST"]
    assert [post.rpc_method for post in posts[:5]] == [
        "tools/call",  # the old session's id: 404
        "initialize",  # the client's own, replayed, without a session id
        "notifications/initialized",
        "tools/call",  # the same call again, in the new session
        "tools/call",  # the next call: straight into the new session
    ]
    refused, initialize, initialized, resent, next_call = posts[:5]
    assert session_of(refused) == old_session
    assert body_of(refused)["params"]["arguments"] == {"text": "after"}
    assert session_of(initialize) is None
    assert initialize.body == client_initialize.body
    new_session = session_of(initialized)
    assert new_session is not None
    assert new_session != old_session
    assert session_of(resent) == session_of(next_call) == new_session
    assert body_of(resent) == body_of(refused)
    assert body_of(next_call)["params"]["arguments"] == {"text": "again"}
    assert resent.headers["mcp-protocol-version"] == "2025-11-25"
    assert len(log_lines(stderr, EXPIRED)) == 1
    assert len(log_lines(stderr, RENEWED)) == 1
    # No server stream; the session the proxy ends when the client leaves is the new one.
    (delete,) = [s for s in restarted.seen if s.method != "POST"]
    assert (delete.method, session_of(delete)) == ("DELETE", new_session)


async def test_the_server_stream_follows_the_new_session(
    upstream: RestartableUpstream, idp: LocalIdp, tmp_path: Path
) -> None:
    """With the server stream open (the default), the stream and the call both meet the new
    server; whichever is refused first starts the one new session, and the stream carries
    the new session's server messages."""
    changed = anyio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    stderr = tmp_path / "proxy.stderr"
    with anyio.fail_after(BOUND_SECONDS):
        async with proxied_client(
            proxy_env(upstream, idp), stderr, message_handler=on_message
        ) as session:
            assert text_of(await session.call_tool("echo", {"text": "before"})) == "before"
            first = upstream.current
            old_session = session_of(first.posts("tools/call")[0])
            assert old_session is not None
            await upstream.stream_opened(old_session).wait()
            restarted = await upstream.restart()
            assert text_of(await session.call_tool("echo", {"text": "after"})) == "after"
            (initialized,) = restarted.posts("notifications/initialized")
            new_session = session_of(initialized)
            assert new_session is not None
            assert new_session != old_session
            await upstream.stream_opened(new_session).wait()
            await session.list_tools()  # one round trip: the server has set the stream up
            assert text_of(await session.call_tool("announce", {})) == "announced"
            await changed.wait()

    assert len(restarted.posts("initialize")) == 1
    assert len(log_lines(stderr, EXPIRED)) == 1
    assert len(log_lines(stderr, RENEWED)) == 1
    (call_after,) = [
        post
        for post in restarted.posts("tools/call")
        if session_of(post) == new_session and body_of(post)["params"]["name"] == "echo"
    ]
    assert body_of(call_after)["params"]["arguments"] == {"text": "after"}
