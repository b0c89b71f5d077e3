"""The bridge, driven in-process through `Proxy.serve()` with a fake upstream and a fake IdP:
routing, sessions, headers, errors for every failure, concurrency, cancellation, shutdown."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from anyio.streams.memory import MemoryObjectSendStream
from dependency_injector import providers
from pydantic import SecretStr

from mcp_oauth2_proxy import OAuth2Config, Proxy, ProxyConfig, UpstreamConfig, UpstreamError
from mcp_oauth2_proxy.adapters.stdio import StdioChannel
from mcp_oauth2_proxy.domain.backoff import Backoff
from mcp_oauth2_proxy.domain.jsonrpc import JsonId
from mcp_oauth2_proxy.domain.wire import PROTOCOL_VERSION_META

from ..fakes import (
    Exchange,
    FakeReply,
    FakeTokenEndpoint,
    FakeUpstream,
    Handler,
    MemoryByteReceive,
    MemoryByteSend,
    json_reply,
    json_response,
    sse_response,
    token_reply,
)

pytestmark = pytest.mark.anyio

SESSION = "session-abc"
CONFIG = ProxyConfig(
    upstream=UpstreamConfig(url="https://mcp.example/mcp", timeout_ms=5000),
    oauth2=OAuth2Config(
        grant="client_credentials",
        client_id="app",
        client_secret=SecretStr("client-secret"),
        token_url="https://idp.example/token",
    ),
)


def with_upstream(**changes: Any) -> ProxyConfig:
    """CONFIG with some upstream settings changed (timeout_ms=300, max_in_flight=2, …)."""
    return CONFIG.model_copy(update={"upstream": CONFIG.upstream.model_copy(update=changes)})


def request(request_id: JsonId, method: str, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def notification(method: str, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params}


def result(request_id: JsonId, value: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": value}


def initialize(request_id: JsonId = 0) -> dict[str, Any]:
    return request(
        request_id,
        "initialize",
        protocolVersion="2025-11-25",
        capabilities={},
        clientInfo={"name": "test", "version": "1"},
    )


class Server:
    """A scripted 2025-wire MCP server; tests replace the answer for a method."""

    def __init__(self, **answers: Handler) -> None:
        self.answers = answers
        self.get = FakeReply(405)

    async def __call__(self, exchange: Exchange) -> FakeReply:
        if exchange.method == "GET":
            return self.get
        if exchange.method == "DELETE":
            return FakeReply(200)
        document = exchange.document
        method = document.get("method")
        if method in self.answers:
            return await self.answers[method](exchange)
        if method == "initialize":
            return json_response(
                result(document["id"], {"protocolVersion": "2025-06-18", "capabilities": {}}),
                headers={"mcp-session-id": SESSION},
            )
        if "id" not in document or "method" not in document:
            return FakeReply(202)
        return json_response(result(document["id"], {"echo": document.get("params")}))


@dataclass
class Session:
    upstream: FakeUpstream
    endpoint: FakeTokenEndpoint
    stdin: MemoryObjectSendStream[bytes]
    stdout: anyio.abc.ObjectReceiveStream[bytes]
    proxy: Proxy

    async def send(self, document: object) -> None:
        await self.stdin.send(json.dumps(document).encode() + b"\n")

    async def send_raw(self, data: bytes) -> None:
        await self.stdin.send(data)

    async def receive(self) -> Any:
        line = await self.stdout.receive()
        assert line.endswith(b"\n")
        assert b"\n" not in line[:-1]
        return json.loads(line)

    async def call(self, document: dict[str, Any]) -> Any:
        await self.send(document)
        return await self.receive()

    async def start(self) -> None:
        """The 2025 handshake, as a client does it."""
        assert (await self.call(initialize()))["result"]["protocolVersion"] == "2025-06-18"
        await self.send(notification("notifications/initialized"))


@asynccontextmanager
async def serving(
    handler: Handler,
    *,
    config: ProxyConfig = CONFIG,
    tokens: int = 3,
    max_line_bytes: int | None = None,
    backoff: Backoff | None = None,
    stdout_buffer: int = 100,
    stdin_buffer: int = 100,
) -> AsyncIterator[Session]:
    """A proxy serving in-memory stdio; a buffer of 0 makes every write wait for the other
    side to read it, like a full pipe."""
    upstream = FakeUpstream(handler)
    endpoint = FakeTokenEndpoint(*[token_reply(f"token-{n + 1}") for n in range(tokens)])
    stdin_send, stdin_receive = anyio.create_memory_object_stream[bytes](stdin_buffer)
    stdout_send, stdout_receive = anyio.create_memory_object_stream[bytes](stdout_buffer)
    proxy = Proxy(config, token_endpoint=endpoint, upstream=upstream)
    if max_line_bytes is not None:
        proxy.container.client_channel.override(
            providers.Factory(StdioChannel, max_line_bytes=max_line_bytes)
        )
    if backoff is not None:
        proxy.container.bridge.add_kwargs(backoff=backoff, draw=lambda: 0.0)
    with anyio.fail_after(15):
        async with (
            stdin_send,
            stdin_receive,
            stdout_send,
            stdout_receive,
            proxy,
            anyio.create_task_group() as tasks,
        ):
            tasks.start_soon(
                proxy.serve, MemoryByteReceive(stdin_receive), MemoryByteSend(stdout_send)
            )
            yield Session(upstream, endpoint, stdin_send, stdout_receive, proxy)
            await stdin_send.aclose()


async def wait_for_exchanges(upstream: FakeUpstream, count: int) -> None:
    while len(upstream.exchanges) < count:
        await upstream.changed.wait()


async def test_request_and_response_carry_the_bytes_through() -> None:
    async with serving(Server()) as session:
        answer = await session.call(request(1, "tools/list"))
    assert answer == result(1, {"echo": {}})
    (post,) = session.upstream.posts()
    assert post.body == json.dumps(request(1, "tools/list")).encode()
    assert post.headers["Authorization"] == "Bearer token-1"
    assert post.headers["Accept"] == "application/json, text/event-stream"
    assert post.headers["Content-Type"] == "application/json"


async def test_session_id_and_negotiated_version_are_sent_after_initialize() -> None:
    async with serving(Server()) as session:
        await session.start()
        await session.call(request(1, "tools/list"))
    init, initialized, listed = session.upstream.posts()
    assert "Mcp-Session-Id" not in init.headers
    assert "MCP-Protocol-Version" not in init.headers
    for later in (initialized, listed):
        assert later.headers["Mcp-Session-Id"] == SESSION
        assert later.headers["MCP-Protocol-Version"] == "2025-06-18"


async def test_a_configured_protocol_version_wins() -> None:
    config = with_upstream(protocol_version="2025-03-26")
    async with serving(Server(), config=config) as session:
        await session.start()
        await session.call(request(1, "ping"))
    assert session.upstream.posts("ping")[0].headers["MCP-Protocol-Version"] == "2025-03-26"


async def test_messages_read_during_the_handshake_wait_for_the_session() -> None:
    release = anyio.Event()

    async def slow_initialize(exchange: Exchange) -> FakeReply:
        await release.wait()
        return json_response(
            result(0, {"protocolVersion": "2025-06-18"}), headers={"mcp-session-id": SESSION}
        )

    async with serving(Server(initialize=slow_initialize)) as session:
        await session.send(initialize())
        await session.send(notification("notifications/initialized"))
        await session.send(request(1, "tools/list"))
        await wait_for_exchanges(session.upstream, 1)
        await anyio.wait_all_tasks_blocked()
        assert len(session.upstream.exchanges) == 1
        release.set()
        assert (await session.receive())["id"] == 0
        assert (await session.receive())["id"] == 1
    initialized, listed = session.upstream.posts()[1:]
    assert initialized.headers["Mcp-Session-Id"] == SESSION
    assert listed.headers["Mcp-Session-Id"] == SESSION


async def test_modern_requests_carry_their_version_and_never_wait() -> None:
    meta = {PROTOCOL_VERSION_META: "2026-07-28"}
    async with serving(Server()) as session:
        await session.call(request(1, "tools/call", name="échec", arguments={}, _meta=meta))
    (post,) = session.upstream.posts()
    assert post.headers["MCP-Protocol-Version"] == "2026-07-28"
    assert post.headers["Mcp-Method"] == "tools/call"
    assert post.headers["Mcp-Name"] == "=?base64?w6ljaGVj?="


async def test_sse_answers_come_out_as_lines_in_order() -> None:
    async def streamed(exchange: Exchange) -> FakeReply:
        progress = notification("notifications/progress", progressToken=1, progress=1)
        return sse_response(progress, result(1, {"done": True}))

    async with serving(Server(**{"tools/call": streamed})) as session:
        await session.send(request(1, "tools/call", name="x"))
        assert (await session.receive())["method"] == "notifications/progress"
        assert (await session.receive()) == result(1, {"done": True})


async def test_pretty_json_and_arrays_become_one_line_per_message() -> None:
    async def pretty(exchange: Exchange) -> FakeReply:
        body = json.dumps([notification("notifications/message", data="é"), result(1, 2)], indent=2)
        return FakeReply(200, {"content-type": "application/json"}, [body.encode()])

    async with serving(Server(**{"tools/call": pretty})) as session:
        await session.send(request(1, "tools/call", name="x"))
        assert (await session.receive())["params"]["data"] == "é"
        assert (await session.receive()) == result(1, 2)


async def test_notifications_and_responses_are_posted_and_answer_nothing() -> None:
    async with serving(Server()) as session:
        await session.send(notification("notifications/progress", progressToken="a"))
        await session.send(result("server-1", {"roots": []}))
        await session.send(request(2, "ping"))
        assert (await session.receive())["id"] == 2
    assert len(session.upstream.posts()) == 3


async def test_invalid_lines_get_errors_and_the_proxy_carries_on() -> None:
    async with serving(Server(), max_line_bytes=200) as session:
        await session.send_raw(b"{not json\n")
        assert (await session.receive())["error"]["code"] == -32700
        await session.send_raw(b'{"jsonrpc": "2.0", "id": 7}\n')
        invalid = await session.receive()
        assert (invalid["id"], invalid["error"]["code"]) == (7, -32600)
        await session.send_raw(b'[{"jsonrpc": "2.0", "id": 8, "method": "ping"}]\n')
        assert (await session.receive())["error"]["code"] == -32600
        await session.send_raw(
            b'{"jsonrpc":"2.0","id":9,"method":"x","params":"' + b"a" * 300 + b'"}\n'
        )
        oversized = await session.receive()
        assert (oversized["id"], oversized["error"]["code"]) == (None, -32600)
        await session.send_raw(b'{"jsonrpc":"2.0","id":10,"method":"ping"}\r\n')
        assert (await session.receive())["id"] == 10


async def test_a_401_renews_the_token_and_resends_once() -> None:
    async def rejecting_first(exchange: Exchange) -> FakeReply:
        if exchange.headers["Authorization"] == "Bearer token-1":
            return FakeReply(401, {"www-authenticate": 'Bearer error="invalid_token"'})
        return json_response(result(1, "ok"))

    async with serving(Server(**{"tools/call": rejecting_first})) as session:
        assert (await session.call(request(1, "tools/call", name="x")))["result"] == "ok"
    assert [p.headers["Authorization"] for p in session.upstream.posts()] == [
        "Bearer token-1",
        "Bearer token-2",
    ]


async def test_a_persistent_401_is_explained() -> None:
    async def always_401(exchange: Exchange) -> FakeReply:
        return FakeReply(401)

    async with serving(Server(**{"tools/call": always_401})) as session:
        answer = await session.call(request(1, "tools/call", name="x"))
    assert answer["error"]["code"] == -32001
    assert "OAUTH2_SCOPE" in answer["error"]["message"]
    assert len(session.upstream.posts()) == 2


async def test_an_http_error_names_the_status_and_a_truncated_body() -> None:
    async def broken(exchange: Exchange) -> FakeReply:
        return FakeReply(503, {"content-type": "text/html"}, [b"<h1>Service Unavailable</h1>" * 50])

    async with serving(Server(**{"tools/call": broken})) as session:
        answer = await session.call(request("a", "tools/call", name="x"))
    error = answer["error"]
    assert (answer["id"], error["code"], error["data"]["status"]) == ("a", -32001, 503)
    assert "HTTP 503" in error["message"]
    assert len(error["data"]["body"]) < 400


async def test_the_servers_own_json_rpc_error_is_forwarded() -> None:
    own_error = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "bad args"}}

    async def refusing(exchange: Exchange) -> FakeReply:
        return json_response(own_error, status=400)

    async with serving(Server(**{"tools/call": refusing})) as session:
        assert (await session.call(request(1, "tools/call", name="x"))) == own_error


@pytest.mark.parametrize(
    ("reply", "fragment"),
    [
        (FakeReply(202), "without a response"),
        (FakeReply(200, {"content-type": "application/json"}, [b"garbage"]), "without a response"),
        (FakeReply(200, {"content-type": "text/plain"}, [b"hi"]), "content type text/plain"),
        (
            FakeReply(200, {"content-type": "text/event-stream"}, [b"data: {}\n\n"]),
            "without a response",
        ),
        (
            FakeReply(
                200,
                {"content-type": "text/event-stream"},
                [b": hello\n"],
                fail_after_chunks=UpstreamError("the upstream connection broke mid-response"),
            ),
            "broke mid-response",
        ),
    ],
)
async def test_every_broken_answer_still_answers_the_request(
    reply: FakeReply, fragment: str
) -> None:
    async def broken(exchange: Exchange) -> FakeReply:
        return reply

    async with serving(Server(**{"tools/call": broken})) as session:
        answer = await session.call(request(5, "tools/call", name="x"))
        assert answer["id"] == 5
        assert fragment in answer["error"]["message"]
        assert (await session.call(request(6, "ping")))["id"] == 6


async def test_an_unreachable_upstream_answers_requests_and_logs_notifications(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def refused(exchange: Exchange) -> FakeReply:
        raise UpstreamError("could not reach the upstream: connection refused")

    async with serving(refused) as session:
        await session.send(notification("notifications/initialized"))
        answer = await session.call(request(1, "ping"))
    assert (answer["error"]["code"], answer["id"]) == (-32000, 1)
    assert "connection refused" in answer["error"]["message"]
    assert "could not deliver a client message" in caplog.text


async def test_a_timeout_names_the_setting() -> None:
    config = CONFIG.model_copy(
        update={"upstream": CONFIG.upstream.model_copy(update={"timeout_ms": 50})}
    )

    async def never(exchange: Exchange) -> FakeReply:
        await anyio.sleep_forever()
        raise AssertionError

    async with serving(Server(**{"tools/call": never}), config=config) as session:
        answer = await session.call(request(1, "tools/call", name="x"))
    assert answer["error"]["message"].startswith("upstream timed out after 50 ms")
    assert "UPSTREAM_TIMEOUT_MS" in answer["error"]["message"]


async def test_a_slow_call_never_blocks_the_others() -> None:
    release = anyio.Event()

    async def maybe_slow(exchange: Exchange) -> FakeReply:
        if exchange.document["params"]["name"] == "slow":
            await release.wait()
        return json_response(result(exchange.document["id"], exchange.document["params"]["name"]))

    async with serving(Server(**{"tools/call": maybe_slow})) as session:
        await session.send(request("slow", "tools/call", name="slow"))
        for n in range(20):
            await session.send(request(n, "tools/call", name=f"quick-{n}"))
        quick = {(await session.receive())["id"] for _ in range(20)}
        assert quick == set(range(20))
        release.set()
        assert (await session.receive())["id"] == "slow"


async def test_cancellation_on_the_2025_wire_is_posted_and_the_late_answer_dropped() -> None:
    release = anyio.Event()

    async def held(exchange: Exchange) -> FakeReply:
        await release.wait()
        return json_response(result(1, "late"))

    async with serving(Server(**{"tools/call": held})) as session:
        await session.send(request(1, "tools/call", name="x"))
        await wait_for_exchanges(session.upstream, 1)
        await session.send(notification("notifications/cancelled", requestId=1))
        await wait_for_exchanges(session.upstream, 2)
        release.set()
        assert (await session.call(request(2, "ping")))["id"] == 2
    assert session.upstream.posts("notifications/cancelled")


async def test_cancellation_on_the_2026_wire_closes_the_stream_and_posts_nothing() -> None:
    meta = {PROTOCOL_VERSION_META: "2026-07-28"}
    closed = anyio.Event()

    async def held(exchange: Exchange) -> FakeReply:
        try:
            await anyio.sleep_forever()
        finally:
            closed.set()
        raise AssertionError

    async with serving(Server(**{"tools/call": held})) as session:
        await session.send(request(1, "tools/call", name="x", _meta=meta))
        await wait_for_exchanges(session.upstream, 1)
        await session.send(notification("notifications/cancelled", requestId=1))
        await closed.wait()
        assert (await session.call(request(2, "ping", _meta=meta)))["id"] == 2
    assert not session.upstream.posts("notifications/cancelled")


async def test_end_of_input_finishes_in_flight_requests_and_deletes_the_session() -> None:
    release = anyio.Event()

    async def held(exchange: Exchange) -> FakeReply:
        await release.wait()
        return json_response(result(1, "finished"))

    async with serving(Server(**{"tools/call": held})) as session:
        await session.start()
        await session.send(request(1, "tools/call", name="x"))
        await wait_for_exchanges(session.upstream, 3)
        await session.stdin.aclose()
        release.set()
        assert (await session.receive())["result"] == "finished"
    delete = session.upstream.exchanges[-1]
    assert (delete.method, delete.headers["Mcp-Session-Id"]) == ("DELETE", SESSION)


async def test_requests_still_open_at_shutdown_get_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("mcp_oauth2_proxy.app.bridge.SHUTDOWN_GRACE_SECONDS", 0.05)

    async def never(exchange: Exchange) -> FakeReply:
        await anyio.sleep_forever()
        raise AssertionError

    async with serving(Server(**{"tools/call": never})) as session:
        await session.send(request(1, "tools/call", name="x"))
        await wait_for_exchanges(session.upstream, 1)
        await session.stdin.aclose()
        answer = await session.receive()
    assert answer["id"] == 1
    assert "shutting down" in answer["error"]["message"]


async def test_the_server_stream_delivers_server_messages() -> None:
    server = Server()
    server.get = sse_response(notification("notifications/tools/list_changed"))
    async with serving(server) as session:
        await session.start()
        assert (await session.receive())["method"] == "notifications/tools/list_changed"
    get = next(e for e in session.upstream.exchanges if e.method == "GET")
    assert get.headers["Accept"] == "text/event-stream"
    assert get.headers["Mcp-Session-Id"] == SESSION


async def test_a_405_disables_the_server_stream_quietly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mcp_oauth2_proxy")
    async with serving(Server()) as session:
        await session.start()
        await session.call(request(1, "ping"))
    assert len([e for e in session.upstream.exchanges if e.method == "GET"]) == 1
    assert "offers no server stream" in caplog.text


async def test_stop_ends_serving_like_end_of_input() -> None:
    async with serving(Server()) as session:
        await session.call(request(1, "ping"))
        session.proxy.stop()


async def test_a_client_that_stops_reading_ends_the_proxy_quietly() -> None:
    endpoint = FakeTokenEndpoint(token_reply("token-1"))
    stdin_send, stdin_receive = anyio.create_memory_object_stream[bytes](10)
    stdout_send, stdout_receive = anyio.create_memory_object_stream[bytes](10)
    await stdout_receive.aclose()
    proxy = Proxy(CONFIG, token_endpoint=endpoint, upstream=FakeUpstream(Server()))
    with anyio.fail_after(10):
        async with stdin_send, stdin_receive, stdout_send, proxy:
            await stdin_send.send(json.dumps(request(1, "ping")).encode() + b"\n")
            await proxy.serve(MemoryByteReceive(stdin_receive), MemoryByteSend(stdout_send))


async def test_an_idp_failure_answers_the_request() -> None:
    upstream = FakeUpstream(Server())
    endpoint = FakeTokenEndpoint(json_reply(401, {"error": "invalid_client"}))
    stdin_send, stdin_receive = anyio.create_memory_object_stream[bytes](10)
    stdout_send, stdout_receive = anyio.create_memory_object_stream[bytes](10)
    with anyio.fail_after(10):
        async with (
            stdin_send,
            stdin_receive,
            stdout_send,
            stdout_receive,
            Proxy(CONFIG, token_endpoint=endpoint, upstream=upstream) as proxy,
        ):
            await stdin_send.send(json.dumps(request(1, "ping")).encode() + b"\n")
            await stdin_send.aclose()
            await proxy.serve(MemoryByteReceive(stdin_receive), MemoryByteSend(stdout_send))
            answer = json.loads(await stdout_receive.receive())
    assert "could not obtain an access token" in answer["error"]["message"]
    assert "invalid_client" in answer["error"]["message"]
    assert not upstream.exchanges


async def test_client_text_cannot_inject_header_lines() -> None:
    meta = {PROTOCOL_VERSION_META: "2026-07-28\r\nX-Evil: 1"}
    async with serving(Server()) as session:
        await session.call(request(1, "tools/call\r\nX-Evil: 2", name="a\r\nX-Evil: 3", _meta=meta))
    (post,) = session.upstream.posts()
    assert all("\r" not in value and "\n" not in value for value in post.headers.values())
    assert "X-Evil" not in post.headers
    assert post.headers["Mcp-Method"].startswith("=?base64?")


async def test_a_token_echoed_in_an_upstream_error_never_reaches_the_client() -> None:
    async def echoing(exchange: Exchange) -> FakeReply:
        said = exchange.headers["Authorization"]
        if exchange.document["id"] == 1:
            return FakeReply(500, {"content-type": "text/plain"}, [f"bad {said}".encode()])
        error = {"code": -32603, "message": f"rejected {said}"}
        return json_response({"jsonrpc": "2.0", "id": 2, "error": error}, status=400)

    async with serving(Server(**{"tools/call": echoing})) as session:
        first = await session.call(request(1, "tools/call", name="x"))
        second = await session.call(request(2, "tools/call", name="x"))
    assert "token-1" not in json.dumps(first)
    assert "token-1" not in json.dumps(second)
    assert second["error"]["message"] == "rejected Bearer ***"


async def test_no_version_header_for_a_2025_03_26_session() -> None:
    async def old_initialize(exchange: Exchange) -> FakeReply:
        return json_response(
            result(0, {"protocolVersion": "2025-03-26"}), headers={"mcp-session-id": SESSION}
        )

    async with serving(Server(initialize=old_initialize)) as session:
        await session.call(initialize())
        await session.call(request(1, "ping"))
    ping = session.upstream.posts("ping")[0]
    assert ping.headers["Mcp-Session-Id"] == SESSION
    assert "MCP-Protocol-Version" not in ping.headers


async def test_a_stream_that_keeps_closing_empty_is_given_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = Server()
    server.get = FakeReply(200, {"content-type": "text/event-stream"}, [])
    async with serving(server, backoff=Backoff(max_attempts=3)) as session:
        await session.start()
        while len([e for e in session.upstream.exchanges if e.method == "GET"]) < 3:
            await session.upstream.changed.wait()
        await session.call(request(1, "ping"))
    assert len([e for e in session.upstream.exchanges if e.method == "GET"]) == 3
    assert "gave up on the server stream" in caplog.text


async def test_an_unknown_cancellation_is_not_posted_on_the_2026_wire() -> None:
    meta = {PROTOCOL_VERSION_META: "2026-07-28"}
    async with serving(Server()) as session:
        await session.call(request(1, "tools/list", _meta=meta))
        await session.send(notification("notifications/cancelled", requestId=99))
        await session.call(request(2, "tools/list", _meta=meta))
    assert not session.upstream.posts("notifications/cancelled")


async def test_tools_with_invalid_header_annotations_are_left_out_and_params_mirrored() -> None:
    meta = {PROTOCOL_VERSION_META: "2026-07-28"}
    good = {
        "name": "valid_tool",
        "inputSchema": {
            "type": "object",
            "properties": {"region": {"type": "string", "x-mcp-header": "Region"}},
        },
    }
    bad = {
        "name": "invalid_tool",
        "inputSchema": {
            "type": "object",
            "properties": {"score": {"type": "number", "x-mcp-header": "Score"}},
        },
    }

    async def listing(exchange: Exchange) -> FakeReply:
        return json_response(result(exchange.document["id"], {"tools": [good, bad]}))

    async with serving(Server(**{"tools/list": listing})) as session:
        listed = await session.call(request(1, "tools/list", _meta=meta))
        await session.call(
            request(2, "tools/call", name="valid_tool", arguments={"region": "eu"}, _meta=meta)
        )
    assert [t["name"] for t in listed["result"]["tools"]] == ["valid_tool"]
    (call,) = session.upstream.posts("tools/call")
    assert call.headers["Mcp-Param-Region"] == "eu"


async def test_on_the_2025_wire_tools_are_passed_as_they_are() -> None:
    bad = {
        "name": "x",
        "inputSchema": {"properties": {"n": {"type": "number", "x-mcp-header": "N"}}},
    }

    async def listing(exchange: Exchange) -> FakeReply:
        return json_response(result(exchange.document["id"], {"tools": [bad]}))

    async with serving(Server(**{"tools/list": listing})) as session:
        listed = await session.call(request(1, "tools/list"))
    assert listed["result"]["tools"] == [bad]


async def test_a_broken_response_stream_is_resumed_with_last_event_id() -> None:
    async def primed_then_closed(exchange: Exchange) -> FakeReply:
        return FakeReply(
            200, {"content-type": "text/event-stream"}, [b"id: ev-1\nretry: 0\ndata: \n\n"]
        )

    server = Server(**{"tools/call": primed_then_closed})
    resumed = sse_response(result(1, "resumed"))

    async def handler(exchange: Exchange) -> FakeReply:
        if exchange.method == "GET" and "Last-Event-ID" in exchange.headers:
            return resumed
        return await server(exchange)

    async with serving(handler) as session:
        await session.start()
        assert (await session.call(request(1, "tools/call", name="x")))["result"] == "resumed"
    (resume,) = [e for e in session.upstream.exchanges if "Last-Event-ID" in e.headers]
    assert (resume.method, resume.headers["Last-Event-ID"]) == ("GET", "ev-1")
    assert resume.headers["Mcp-Session-Id"] == SESSION


async def test_a_server_that_will_not_resume_leaves_an_error() -> None:
    async def primed_then_closed(exchange: Exchange) -> FakeReply:
        return FakeReply(
            200, {"content-type": "text/event-stream"}, [b"id: ev-1\nretry: 0\ndata: \n\n"]
        )

    async with serving(Server(**{"tools/call": primed_then_closed})) as session:
        answer = await session.call(request(1, "tools/call", name="x"))
    assert "without a response" in answer["error"]["message"]


async def test_a_batch_on_2025_03_26_is_answered_message_by_message() -> None:
    async def old_initialize(exchange: Exchange) -> FakeReply:
        return json_response(
            result(0, {"protocolVersion": "2025-03-26"}), headers={"mcp-session-id": SESSION}
        )

    async with serving(Server(initialize=old_initialize)) as session:
        await session.call(initialize())
        await session.send(
            [request(1, "ping"), notification("notifications/x"), request(2, "ping")]
        )
        answers = {(await session.receive())["id"] for _ in range(2)}
    assert answers == {1, 2}
    assert len(session.upstream.posts("ping")) == 2


async def test_a_batch_on_later_revisions_is_an_invalid_request() -> None:
    async with serving(Server()) as session:
        await session.start()
        await session.send([request(1, "ping")])
        refused = await session.receive()
    assert (refused["id"], refused["error"]["code"]) == (None, -32600)
    assert not session.upstream.posts("ping")


@dataclass
class EndlessStream(FakeReply):
    """An event stream that stays open until the proxy lets go of it."""

    closed: anyio.Event = field(default_factory=anyio.Event)

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        try:
            for chunk in self.body:
                yield chunk
            await anyio.sleep_forever()
        finally:
            self.closed.set()


async def test_a_refused_http_sse_stream_is_closed_at_once() -> None:
    endpoint = b"event: endpoint\ndata: https://elsewhere.example/messages\n\n"
    stream = EndlessStream(200, {"content-type": "text/event-stream"}, [endpoint])

    async def old_server(exchange: Exchange) -> FakeReply:
        return stream if exchange.method == "GET" else FakeReply(405)

    async with serving(old_server) as session:
        answer = await session.call(initialize())
        with anyio.fail_after(5):
            await stream.closed.wait()
    assert "not on its origin" in answer["error"]["message"]


async def test_an_http_sse_endpoint_on_another_origin_is_refused() -> None:
    hold = anyio.Event()

    async def old_server(exchange: Exchange) -> FakeReply:
        if exchange.method == "GET":
            endpoint = b"event: endpoint\ndata: https://elsewhere.example/messages\n\n"
            return FakeReply(200, {"content-type": "text/event-stream"}, [endpoint], hold=hold)
        return FakeReply(405)

    async with serving(old_server) as session:
        answer = await session.call(initialize())
        hold.set()
    assert "not on its origin" in answer["error"]["message"]
    assert all(e.url is None for e in session.upstream.exchanges)


# --- session expiry (2025 wire) ---------------------------------------------------------


class ExpiringServer(Server):
    """Its first session expires after `lives` requests; later ones never do."""

    def __init__(self, lives: int, initialize_again: FakeReply | None = None) -> None:
        super().__init__()
        self.lives = lives
        self.sessions = 0
        self.initialize_again = initialize_again

    async def __call__(self, exchange: Exchange) -> FakeReply:
        document = exchange.document if exchange.method == "POST" else {}
        if document.get("method") == "initialize":
            self.sessions += 1
            if self.sessions > 1 and self.initialize_again is not None:
                return self.initialize_again
            answer = result(document["id"], {"protocolVersion": "2025-06-18", "capabilities": {}})
            return json_response(answer, headers={"mcp-session-id": f"s-{self.sessions}"})
        if exchange.headers.get("Mcp-Session-Id") == "s-1" and "id" in document:
            if self.lives == 0:
                return FakeReply(404, {"content-type": "text/plain"}, [b"session not found"])
            self.lives -= 1
        return await super().__call__(exchange)


async def test_an_expired_session_is_replaced_and_the_request_sent_again() -> None:
    server = ExpiringServer(lives=1)
    async with serving(server) as session:
        await session.start()
        assert (await session.call(request(1, "tools/list")))["id"] == 1
        answer = await session.call(request(2, "tools/call", name="x"))
        await session.send(request(3, "ping"))
        assert (await session.receive())["id"] == 3
    assert answer == result(2, {"echo": {"name": "x"}})
    posts = [
        (p.document.get("method"), p.headers.get("Mcp-Session-Id"))
        for p in session.upstream.posts()
    ]
    assert posts == [
        ("initialize", None),
        ("notifications/initialized", "s-1"),
        ("tools/list", "s-1"),
        ("tools/call", "s-1"),
        ("initialize", None),
        ("notifications/initialized", "s-2"),
        ("tools/call", "s-2"),
        ("ping", "s-2"),
    ]
    replayed = session.upstream.posts("initialize")[1]
    assert replayed.document == initialize()


async def test_requests_refused_by_an_expired_session_share_one_new_session() -> None:
    server = ExpiringServer(lives=0)
    async with serving(server) as session:
        await session.start()
        for n in range(1, 4):
            await session.send(request(n, "tools/list"))
        answers = [await session.receive() for _ in range(3)]
    assert sorted(a["id"] for a in answers) == [1, 2, 3]
    assert all("result" in a for a in answers)
    assert server.sessions == 2


async def test_a_session_that_cannot_be_replaced_is_an_error_that_says_so() -> None:
    server = ExpiringServer(lives=0, initialize_again=FakeReply(503))
    async with serving(server) as session:
        await session.start()
        answer = await session.call(request(1, "tools/list"))
    assert answer["error"]["code"] == -32000
    assert "session expired and a new one could not be started" in answer["error"]["message"]
    assert "HTTP 503" in answer["error"]["message"]
    assert server.sessions == 2


async def test_the_server_stream_follows_its_session_into_a_new_one() -> None:
    server = ExpiringServer(lives=0)
    reopened = anyio.Event()
    gets: list[str | None] = []

    async def stream(exchange: Exchange) -> FakeReply:
        session_id = exchange.headers.get("Mcp-Session-Id")
        gets.append(session_id)
        if session_id == "s-1" and len(gets) == 1:
            event = json.dumps(notification("notifications/message", level="info"))
            body = f"id: old-1\ndata: {event}\n\n".encode()
            return FakeReply(200, {"content-type": "text/event-stream"}, [body])
        if session_id == "s-1":
            return FakeReply(404)
        reopened.set()
        return FakeReply(200, {"content-type": "text/event-stream"}, [], hold=anyio.Event())

    async def handler(exchange: Exchange) -> FakeReply:
        return await (stream(exchange) if exchange.method == "GET" else server(exchange))

    async with serving(handler, backoff=Backoff(max_attempts=3)) as session:
        await session.start()
        assert (await session.receive())["method"] == "notifications/message"
        with anyio.fail_after(5):
            await reopened.wait()
    assert gets == ["s-1", "s-1", "s-2"]
    assert server.sessions == 2
    last_ids = [
        e.headers.get("Last-Event-ID") for e in session.upstream.exchanges if e.method == "GET"
    ]
    assert last_ids == [None, "old-1", None]  # an event id of the old session stays there


async def test_a_404_to_the_first_stream_get_is_no_stream_not_an_expiry() -> None:
    server = ExpiringServer(lives=5)
    server.get = FakeReply(404)
    async with serving(server) as session:
        await session.start()
        with anyio.fail_after(5):
            while not any(e.method == "GET" for e in session.upstream.exchanges):
                await session.upstream.changed.wait()
        assert (await session.call(request(1, "ping")))["id"] == 1
    assert server.sessions == 1
    assert [e.method for e in session.upstream.exchanges].count("GET") == 1


async def test_a_404_that_answers_the_request_is_passed_on_not_a_new_session() -> None:
    not_found = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32002, "message": "no such file"}}

    async def missing(exchange: Exchange) -> FakeReply:
        return json_response(not_found, status=404)

    server = ExpiringServer(lives=5)
    server.answers["resources/read"] = missing
    async with serving(server) as session:
        await session.start()
        answer = await session.call(request(1, "resources/read", uri="file:///x"))
    assert answer == not_found
    assert server.sessions == 1


async def test_requests_waiting_on_a_failed_new_session_fail_with_it() -> None:
    server = ExpiringServer(lives=0, initialize_again=FakeReply(503))
    all_refused = anyio.Event()
    refused = 0

    async def handler(exchange: Exchange) -> FakeReply:
        nonlocal refused
        if exchange.method == "POST" and exchange.document.get("method") == "initialize":
            if server.sessions == 1:
                await all_refused.wait()  # the new session is tried while all three wait
            return await server(exchange)
        reply = await server(exchange)
        if reply.status == 404:
            refused += 1
            if refused == 3:
                all_refused.set()
        return reply

    async with serving(handler) as session:
        await session.start()
        for n in range(1, 4):
            await session.send(request(n, "tools/list"))
        answers = [await session.receive() for _ in range(3)]
    assert sorted(a["id"] for a in answers) == [1, 2, 3]
    assert all("HTTP 503" in a["error"]["message"] for a in answers)
    assert server.sessions == 2  # the first start, and one failed try for all three


async def test_on_the_2026_wire_a_broken_stream_is_an_error_and_nothing_is_sent_again() -> None:
    meta = {PROTOCOL_VERSION_META: "2026-07-28"}

    async def breaks(exchange: Exchange) -> FakeReply:
        event = json.dumps(notification("notifications/progress", progressToken=1, progress=1))
        progress = f"id: e1\nretry: 0\ndata: {event}\n\n".encode()
        return FakeReply(
            200,
            {"content-type": "text/event-stream"},
            [progress],
            fail_after_chunks=UpstreamError("the upstream connection broke mid-response: reset"),
        )

    async with serving(Server(**{"tools/call": breaks})) as session:
        await session.send(request(1, "tools/call", name="x", _meta=meta))
        assert (await session.receive())["method"] == "notifications/progress"
        answer = await session.receive()
    assert answer["error"]["code"] == -32000
    assert "broke mid-response" in answer["error"]["message"]
    assert [e.method for e in session.upstream.exchanges] == ["POST"]
