"""The upstream's httpx client on aiohttp's engine: the same answers as httpx's own
transport, and errors that still tell "never sent" (safe to send again) from "may have run"."""

from __future__ import annotations

import contextlib

import anyio
import httpx
import pytest
from anyio.abc import SocketAttribute, SocketStream

from mcp_oauth2_proxy.adapters.aiohttp_transport import AiohttpTransport
from mcp_oauth2_proxy.adapters.http_client import WarmingTransport, build_upstream_client

from .test_http_upstream import loopback

pytestmark = pytest.mark.anyio

BODY = b'{"jsonrpc":"2.0","id":1,"result":{}}'


async def answer_once(stream: SocketStream) -> None:
    async with stream:
        request = await stream.receive()
        assert request.startswith(b"POST /mcp HTTP/1.1\r\n")
        assert b"authorization: bearer t\r\n" in request.lower()
        await stream.send(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(BODY) + BODY
        )


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=AiohttpTransport(httpx.create_ssl_context))


async def test_a_request_and_its_answer_go_through_unchanged() -> None:
    async with loopback(answer_once) as url, client() as upstream:
        response = await upstream.post(url, content=b"{}", headers={"Authorization": "Bearer t"})
    assert (response.status_code, response.content) == (200, BODY)
    assert response.headers["content-type"] == "application/json"


async def test_an_event_stream_arrives_as_it_is_sent() -> None:
    second_may_go = anyio.Event()

    async def streaming(stream: SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n6\r\ndata: \r\n"
            )
            await second_may_go.wait()
            await stream.send(b"3\r\n1\n\n\r\n0\r\n\r\n")

    async with (
        loopback(streaming) as url,
        client() as upstream,
        upstream.stream("POST", url, content=b"{}") as response,
    ):
        chunks = response.aiter_bytes()
        first = await anext(chunks)
        second_may_go.set()
        rest = b"".join([chunk async for chunk in chunks])
    assert first == b"data: "
    assert rest == b"1\n\n"


async def test_a_refused_connection_is_a_connect_error() -> None:
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(SocketAttribute.local_port)
    async with client() as upstream:
        with pytest.raises(httpx.ConnectError):
            await upstream.post(f"http://127.0.0.1:{port}/mcp", content=b"{}")


async def test_a_connection_closed_after_the_request_is_not_a_connect_error() -> None:
    """The server got the request and may have run it: this must never look like "never
    sent", or a tool call would be sent twice."""

    async def hangs_up(stream: SocketStream) -> None:
        async with stream:
            await stream.receive()

    async with loopback(hangs_up) as url, client() as upstream:
        with pytest.raises(httpx.TransportError) as caught:
            await upstream.post(url, content=b"{}")
    assert not isinstance(caught.value, httpx.ConnectError | httpx.ConnectTimeout)


async def test_a_body_cut_short_is_a_read_error() -> None:
    async def cut(stream: SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{")

    async with (
        loopback(cut) as url,
        client() as upstream,
        upstream.stream("POST", url, content=b"{}") as response,
    ):
        with pytest.raises(httpx.ReadError):
            await response.aread()


def test_behind_an_http_proxy_the_upstream_uses_httpx_own_transport() -> None:
    """httpx applies the proxy variables to its own transport only."""
    for name in ("HTTPS_PROXY", "http_proxy", "ALL_PROXY"):
        upstream = build_upstream_client({name: "http://proxy.corp:3128"})
        assert not isinstance(upstream._transport, WarmingTransport)
    blank = build_upstream_client({"HTTPS_PROXY": " "})  # set but empty: no proxy
    assert isinstance(blank._transport, WarmingTransport)


async def test_the_first_requests_use_httpx_and_later_ones_aiohttp_once_loaded() -> None:
    """aiohttp takes long to import: the client's first request (its initialize) must not
    wait for it."""
    connections: list[int] = []  # requests served on each connection

    async def answer_all(stream: SocketStream) -> None:
        connections.append(0)
        async with stream:
            with contextlib.suppress(anyio.EndOfStream):
                while await stream.receive():
                    connections[-1] += 1
                    await stream.send(
                        b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(BODY) + BODY
                    )

    warming = WarmingTransport()
    async with loopback(answer_all) as url, httpx.AsyncClient(transport=warming) as upstream:
        assert (await upstream.post(url, content=b"{}")).content == BODY
        assert warming._loading is not None
        with anyio.fail_after(30):
            await warming._loading  # the import in its worker thread
        for _ in range(2):
            assert (await upstream.post(url, content=b"{}")).content == BODY
    assert isinstance(warming._fast, AiohttpTransport)
    assert connections == [1, 2]  # httpx's pool, then aiohttp's (each keeps its connection)
