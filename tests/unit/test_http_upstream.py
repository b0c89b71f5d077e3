"""The httpx upstream adapter under faults, through `Proxy.serve()`: respx at the transport
seam, and real loopback sockets for refusals and resets. Every request gets one answer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
import respx
from anyio.abc import SocketAttribute, SocketStream
from pydantic import SecretStr

from mcp_oauth2_proxy import OAuth2Config, Proxy, ProxyConfig, UpstreamConfig
from mcp_oauth2_proxy.adapters.http_upstream import HttpUpstream

from ..event_loops import EVENT_LOOPS
from ..fakes import (
    FakeTokenEndpoint,
    MemoryByteReceive,
    MemoryByteSend,
    token_reply,
    upstream_on_httpcore,
)

pytestmark = pytest.mark.anyio

URL = "https://mcp.example/mcp"
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


@pytest.fixture(params=EVENT_LOOPS)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    return request.param


def config(url: str = URL, timeout_ms: int = 5000) -> ProxyConfig:
    return ProxyConfig(
        upstream=UpstreamConfig(url=url, timeout_ms=timeout_ms),
        oauth2=OAuth2Config(
            grant="client_credentials",
            client_id="app",
            client_secret=SecretStr("s"),
            token_url="https://idp.example/token",
        ),
    )


async def answers(
    proxy_config: ProxyConfig, *messages: dict[str, Any], respx_seam: bool = False
) -> list[Any]:
    """Serve `messages` through a proxy with the real HTTP upstream; return what came out.
    With `respx_seam` the upstream client runs on httpx's own transport, where respx works."""
    stdin_send, stdin_receive = anyio.create_memory_object_stream[bytes](10)
    stdout_send, stdout_receive = anyio.create_memory_object_stream[bytes](10)
    endpoint = FakeTokenEndpoint(token_reply("token-1"))
    on_transport = upstream_on_httpcore if respx_seam else (lambda proxy: proxy)
    with anyio.fail_after(15):
        async with (
            stdin_send,
            stdin_receive,
            stdout_send,
            stdout_receive,
            on_transport(Proxy(proxy_config, token_endpoint=endpoint)) as proxy,
        ):
            for message in messages:
                await stdin_send.send(json.dumps(message).encode() + b"\n")
            await stdin_send.aclose()
            await proxy.serve(MemoryByteReceive(stdin_receive), MemoryByteSend(stdout_send))
            await stdout_send.aclose()
            return [json.loads(line) async for line in stdout_receive]


async def test_json_and_headers_over_respx() -> None:
    with respx.mock:
        route = respx.post(URL).respond(
            200, json={"jsonrpc": "2.0", "id": 1, "result": {}}, headers={"mcp-session-id": "s"}
        )
        (answer,) = await answers(config(), PING, respx_seam=True)
    assert answer == {"jsonrpc": "2.0", "id": 1, "result": {}}
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer token-1"
    assert request.content == json.dumps(PING).encode()


async def test_sse_over_respx() -> None:
    stream = (
        b'event: message\r\ndata: {"jsonrpc":"2.0","method":"notifications/progress",'
        b'"params":{"progress":1}}\r\n\r\n'
        b'event: message\r\ndata: {"jsonrpc":"2.0",\r\ndata: "id":1,"result":{}}\r\n\r\n'
    )
    with respx.mock:
        respx.post(URL).respond(200, content=stream, headers={"content-type": "text/event-stream"})
        progress, answer = await answers(config(), PING, respx_seam=True)
    assert progress["method"] == "notifications/progress"
    assert answer == {"jsonrpc": "2.0", "id": 1, "result": {}}


@pytest.mark.parametrize(
    ("failure", "fragment", "advice"),
    [
        (httpx.ConnectError("Connection refused"), "Connection refused", "UPSTREAM_URL"),
        (httpx.ConnectTimeout("timed out"), "timed out", "UPSTREAM_URL"),
        (
            httpx.RemoteProtocolError("Server disconnected"),
            "Server disconnected",
            "a proxy or load balancer",
        ),
    ],
)
async def test_transport_failures_answer_with_32000(
    failure: Exception, fragment: str, advice: str
) -> None:
    with respx.mock:
        route = respx.post(URL).mock(side_effect=failure)
        (answer,) = await answers(config(), PING, respx_seam=True)
    assert (answer["id"], answer["error"]["code"]) == (1, -32000)
    assert fragment in answer["error"]["message"]
    assert advice in answer["error"]["message"]
    assert route.call_count == 3  # ping only reads, so every failure here is tried again


@asynccontextmanager
async def loopback(handler: Callable[[SocketStream], Awaitable[None]]) -> AsyncIterator[str]:
    """A raw TCP server on 127.0.0.1 that does whatever `handler` does with a connection."""
    async with (
        await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
        anyio.create_task_group() as tasks,
    ):
        port = listener.extra(SocketAttribute.local_port)
        tasks.start_soon(listener.serve, handler)
        yield f"http://127.0.0.1:{port}/mcp"
        tasks.cancel_scope.cancel()


async def test_connection_refused_on_loopback() -> None:
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(SocketAttribute.local_port)
    (answer,) = await answers(config(f"http://127.0.0.1:{port}/mcp"), PING)
    assert answer["error"]["code"] == -32000
    assert "could not reach the upstream" in answer["error"]["message"]


async def test_reset_in_the_middle_of_an_event_stream() -> None:
    async def half_answer(stream: SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
                b'2a\r\nevent: message\ndata: {"jsonrpc":"2.0",\r\n'
            )

    async with loopback(half_answer) as url:
        (answer,) = await answers(config(url), PING)
    assert answer["id"] == 1
    assert "broke mid-response" in answer["error"]["message"]


async def test_slow_headers_hit_the_upstream_timeout() -> None:
    async def silent(stream: SocketStream) -> None:
        async with stream:
            await anyio.sleep_forever()

    async with loopback(silent) as url:
        (answer,) = await answers(config(url, timeout_ms=200), PING)
    assert answer["error"]["message"].startswith("upstream timed out after 200 ms")


async def test_garbage_instead_of_http() -> None:
    async def garbage(stream: SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(b"this is not HTTP at all\r\n\r\n")

    async with loopback(garbage) as url:
        (answer, second) = await answers(config(url), PING, {**PING, "id": 2})
    assert {answer["id"], second["id"]} == {1, 2}
    assert answer["error"]["code"] == -32000


def recording(
    seen: list[httpx.Request], *responses: httpx.Response
) -> Callable[[httpx.Request], httpx.Response]:
    """A MockTransport handler that keeps each request and answers with the next response."""
    queue = list(responses)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return queue.pop(0)

    return handle


async def test_requests_carry_what_build_request_would_give_them() -> None:
    seen: list[httpx.Request] = []
    transport = httpx.MockTransport(recording(seen, httpx.Response(202)))
    async with httpx.AsyncClient(transport=transport, headers={"User-Agent": "ua"}) as client:
        expected = client.build_request(
            "POST", URL, headers={"Accept": "application/json"}, content=b"{}"
        )
        async with HttpUpstream(client, URL).exchange(
            "POST", {"Accept": "application/json"}, b"{}"
        ) as reply:
            assert reply.status == 202
    (sent,) = seen
    assert (sent.method, sent.url, sent.content) == ("POST", expected.url, b"{}")
    assert sorted(sent.headers.multi_items()) == sorted(expected.headers.multi_items())


async def test_cookies_the_upstream_sets_go_back_to_it() -> None:
    """A load balancer's affinity cookie keeps a session on its server: the client's cookie
    jar works as it does through AsyncClient.send."""
    seen: list[httpx.Request] = []
    transport = httpx.MockTransport(
        recording(
            seen,
            httpx.Response(202, headers={"Set-Cookie": "affinity=b7; Path=/"}),
            httpx.Response(202),
        )
    )
    async with httpx.AsyncClient(transport=transport) as client:
        upstream = HttpUpstream(client, URL)
        for _ in range(2):
            async with upstream.exchange("POST", {}, b"{}"):
                pass
    assert "cookie" not in seen[0].headers
    assert seen[1].headers["cookie"] == "affinity=b7"


async def test_a_client_with_event_hooks_sends_through_async_client_send() -> None:
    hooked: list[str] = []

    async def hook(request: httpx.Request) -> None:
        hooked.append(request.method)

    transport = httpx.MockTransport(recording([], httpx.Response(202)))
    client = httpx.AsyncClient(transport=transport, event_hooks={"request": [hook]})
    async with client, HttpUpstream(client, URL).exchange("GET", {}):
        pass
    assert hooked == ["GET"]


async def test_reply_headers_have_lower_case_names_and_repeats_joined() -> None:
    response = httpx.Response(200, headers=[("Mcp-Session-Id", "s"), ("Vary", "a"), ("Vary", "b")])
    transport = httpx.MockTransport(recording([], response))
    client = httpx.AsyncClient(transport=transport)
    async with client, HttpUpstream(client, URL).exchange("GET", {}) as reply:
        headers = dict(reply.headers)
    assert headers["mcp-session-id"] == "s"
    assert headers["vary"] == "a, b"
