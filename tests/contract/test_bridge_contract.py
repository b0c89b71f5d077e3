"""The installed command between the real MCP Python SDK on both sides: the SDK's client
spawns `mcp-oauth2-proxy` over stdio; the SDK's MCPServer is the bearer-protected upstream."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters

from .local_idp import LocalIdp, local_idp
from .upstream import Upstream, running_upstream

pytestmark = [pytest.mark.anyio, pytest.mark.contract]

COMMAND = str(Path(sys.executable).with_name("mcp-oauth2-proxy"))
BOUND_SECONDS = 60
MODES = ["legacy", "2026-07-28"]
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}


@pytest.fixture
def idp() -> Any:
    with local_idp() as served:
        yield served


@pytest.fixture
async def upstream(idp: LocalIdp) -> AsyncIterator[Upstream]:
    async with running_upstream(idp) as served:
        yield served


def proxy_env(upstream: Upstream, **extra: str) -> dict[str, str]:
    return {
        "UPSTREAM_URL": upstream.url,
        "OAUTH2_GRANT": "client_credentials",
        "OAUTH2_CLIENT_ID": upstream.idp.client_id,
        "OAUTH2_CLIENT_SECRET": upstream.idp.client_secret,
        "OAUTH2_TOKEN_URL": upstream.idp.url,
        "LOG_LEVEL": "debug",
        **extra,
    }


def client(upstream: Upstream, mode: str, **options: Any) -> Client:
    params = StdioServerParameters(command=COMMAND, env=proxy_env(upstream))
    return Client(params, mode=mode, **options)


async def cancel_a_running_slow_call(session: Client, upstream: Upstream) -> None:
    """Start the slow tool, cancel the call once the server runs it (the SDK client then
    cancels on the wire), and wait until the server's tool saw the cancellation."""
    async with anyio.create_task_group() as calls:
        calls.start_soon(session.call_tool, "slow", {"seconds": 30})
        await upstream.slow_started.wait()
        calls.cancel_scope.cancel()
    await upstream.slow_cancelled.wait()


def text_of(result: types.CallToolResult) -> str:
    (content,) = result.content
    assert isinstance(content, types.TextContent)
    return content.text


@pytest.mark.parametrize("mode", MODES)
async def test_list_and_call_tools(upstream: Upstream, mode: str) -> None:
    with anyio.fail_after(BOUND_SECONDS):
        async with client(upstream, mode) as session:
            tools = await session.list_tools()
            assert {tool.name for tool in tools.tools} >= {"echo", "steps", "slow"}
            assert text_of(await session.call_tool("echo", {"text": "héllo"})) == "héllo"
    for post in upstream.posts():
        assert post.headers["authorization"] == "Bearer local-access-token-1"


async def test_the_auto_mode_probe_and_fallback_work_through_the_proxy(upstream: Upstream) -> None:
    with anyio.fail_after(BOUND_SECONDS):
        async with client(upstream, "auto") as session:
            assert text_of(await session.call_tool("echo", {"text": "x"})) == "x"
    assert upstream.posts("server/discover")


@pytest.mark.parametrize("mode", MODES)
async def test_progress_notifications_arrive_before_the_result(
    upstream: Upstream, mode: str
) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    with anyio.fail_after(BOUND_SECONDS):
        async with client(upstream, mode) as session:
            result = await session.call_tool("steps", {"count": 3}, progress_callback=on_progress)
    assert text_of(result) == "did 3 steps"
    assert seen == [1, 2, 3]


async def test_a_server_notification_arrives_over_the_get_stream(upstream: Upstream) -> None:
    changed = anyio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    with anyio.fail_after(BOUND_SECONDS):
        async with client(upstream, "legacy", message_handler=on_message) as session:
            await upstream.stream_opened.wait()
            await session.list_tools()  # one round trip: the server has set the stream up
            assert text_of(await session.call_tool("announce", {})) == "announced"
            await changed.wait()
    (stream,) = [s for s in upstream.seen if s.method == "GET"]
    assert stream.headers["accept"] == "text/event-stream"


@pytest.mark.parametrize("mode", MODES)
async def test_a_slow_call_does_not_hold_up_twenty_others(upstream: Upstream, mode: str) -> None:
    finished: list[str] = []

    async def call(name: str, arguments: dict[str, Any]) -> None:
        text = text_of(await session.call_tool(name, arguments))
        finished.append(text)

    with anyio.fail_after(BOUND_SECONDS):
        async with client(upstream, mode) as session, anyio.create_task_group() as tasks:
            tasks.start_soon(call, "slow", {"seconds": 2})
            async with anyio.create_task_group() as quick:
                for n in range(20):
                    quick.start_soon(call, "echo", {"text": f"q{n}"})
            assert "slow done" not in finished
            assert len(finished) == 20
            upstream.release.set()
    assert finished[-1] == "slow done"


@pytest.mark.parametrize("mode", MODES)
async def test_a_revoked_token_is_renewed_and_the_call_retried(
    upstream: Upstream, mode: str
) -> None:
    with anyio.fail_after(BOUND_SECONDS):
        async with client(upstream, mode) as session:
            assert text_of(await session.call_tool("echo", {"text": "one"})) == "one"
            upstream.idp.revoked.add(upstream.idp.issued[0])
            assert text_of(await session.call_tool("echo", {"text": "two"})) == "two"
    assert upstream.idp.issued == ["local-access-token-1", "local-access-token-2"]
    last = upstream.posts("tools/call")[-2:]
    assert [p.headers["authorization"] for p in last] == [
        "Bearer local-access-token-1",
        "Bearer local-access-token-2",
    ]


async def test_session_id_and_protocol_version_are_sent_on_the_2025_wire(
    upstream: Upstream,
) -> None:
    with anyio.fail_after(BOUND_SECONDS):
        async with client(upstream, "legacy") as session:
            await session.list_tools()
    initialize, *later = upstream.posts()
    assert initialize.rpc_method == "initialize"
    assert "mcp-session-id" not in initialize.headers
    session_ids = {post.headers.get("mcp-session-id") for post in later}
    assert len(session_ids) == 1
    assert None not in session_ids
    assert {post.headers["mcp-protocol-version"] for post in later} == {"2025-11-25"}


async def test_the_2026_wire_sends_method_and_name_headers(upstream: Upstream) -> None:
    with anyio.fail_after(BOUND_SECONDS):
        async with client(upstream, "2026-07-28") as session:
            await session.call_tool("echo", {"text": "x"})
    (call,) = upstream.posts("tools/call")
    assert call.headers["mcp-protocol-version"] == "2026-07-28"
    assert call.headers["mcp-method"] == "tools/call"
    assert call.headers["mcp-name"] == "echo"
    assert "mcp-session-id" not in call.headers


async def test_cancellation_is_forwarded_on_the_2025_wire(upstream: Upstream) -> None:
    with anyio.fail_after(BOUND_SECONDS):
        async with client(upstream, "legacy") as session:
            await cancel_a_running_slow_call(session, upstream)
            assert text_of(await session.call_tool("echo", {"text": "after"})) == "after"
    (cancelled,) = upstream.posts("notifications/cancelled")
    assert json.loads(cancelled.body)["params"]["requestId"] is not None


async def test_cancellation_closes_the_stream_on_the_2026_wire(upstream: Upstream) -> None:
    with anyio.fail_after(BOUND_SECONDS):
        async with client(upstream, "2026-07-28") as session:
            await cancel_a_running_slow_call(session, upstream)
    assert not upstream.posts("notifications/cancelled")


@pytest.mark.parametrize("ending", ["end of input", signal.SIGTERM, signal.SIGINT])
async def test_the_proxy_ends_cleanly_deleting_the_session(
    upstream: Upstream, ending: str | signal.Signals
) -> None:
    with anyio.fail_after(BOUND_SECONDS):
        async with await anyio.open_process(
            [COMMAND], env={**os.environ, **proxy_env(upstream)}
        ) as process:
            assert process.stdin is not None
            assert process.stdout is not None
            await process.stdin.send(json.dumps(INITIALIZE).encode() + b"\n")
            line = b""
            while not line.endswith(b"\n"):
                line += await process.stdout.receive()
            assert json.loads(line)["result"]["protocolVersion"] == "2025-11-25"
            if isinstance(ending, signal.Signals):
                process.send_signal(ending)
            else:
                await process.stdin.aclose()
            assert await process.wait() == 0
    assert upstream.seen[-1].method == "DELETE"
    assert upstream.seen[-1].headers["mcp-session-id"]


def talk_over(sock: socket.socket, messages: list[dict[str, Any]]) -> list[Any]:
    """Send the messages one by one as a client does, each request only once the one before
    it has its answer (blocking: run in a thread); then end the input."""
    sock.settimeout(BOUND_SECONDS)
    received = b""
    answers: list[Any] = []
    for message in messages:
        sock.sendall(json.dumps(message).encode() + b"\n")
        for _ in range(1000):
            if "id" not in message or any(a.get("id") == message["id"] for a in answers):
                break
            chunk = sock.recv(65536)
            assert chunk, f"the proxy closed its output; it had written {received!r}"
            received += chunk
            *lines, rest = received.split(b"\n")
            answers += [json.loads(line) for line in lines]
            received = rest
    sock.shutdown(socket.SHUT_WR)
    return answers


@pytest.mark.skipif(sys.platform == "win32", reason="a Unix socket as stdin and stdout")
async def test_one_socket_as_both_stdin_and_stdout_carries_every_answer(
    upstream: Upstream,
) -> None:
    """As socat, or a socket-activated service, starts a program: stdin and stdout are the
    same socket, and the requests arrive on it while answers go out."""
    ours, theirs = socket.socketpair()
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    pings = [{"jsonrpc": "2.0", "id": n, "method": "ping"} for n in range(2, 7)]
    messages: list[dict[str, Any]] = [INITIALIZE, initialized, *pings]
    with ours, anyio.fail_after(BOUND_SECONDS):
        async with await anyio.open_process(
            [COMMAND],
            stdin=theirs.fileno(),
            stdout=theirs.fileno(),
            env={**os.environ, **proxy_env(upstream)},
        ) as process:
            theirs.close()
            answers = await anyio.to_thread.run_sync(talk_over, ours, messages)
            assert await process.wait() == 0
    assert [answer["id"] for answer in answers] == [1, 2, 3, 4, 5, 6]
    assert all("result" in answer for answer in answers), answers


async def test_a_server_on_the_http_sse_transport_of_2024_11_05(idp: LocalIdp) -> None:
    async with running_upstream(idp, legacy_sse=True) as old:
        with anyio.fail_after(BOUND_SECONDS):
            async with client(old, "legacy") as session:
                assert text_of(await session.call_tool("echo", {"text": "old"})) == "old"
                result = await session.call_tool("steps", {"count": 2})
                assert text_of(result) == "did 2 steps"
    methods = [(s.method, s.headers.get("authorization", "")) for s in old.seen]
    assert methods[0] == ("POST", "Bearer local-access-token-1")  # streamable HTTP first
    assert ("GET", "Bearer local-access-token-1") in methods
    assert all(auth == "Bearer local-access-token-1" for _, auth in methods)
