"""The upstream's httpx client on aiohttp's engine: the same answers as httpx's own
transport, and errors that still tell "never sent" (safe to send again) from "may have run"."""

from __future__ import annotations

import contextlib

import aiohttp
import anyio
import httpx
import pytest
from anyio.abc import SocketAttribute, SocketStream

from mcp_oauth2_proxy.adapters import aiohttp_transport, http_client
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
    """httpx applies proxies (from the environment, or the system settings on macOS and
    Windows: urllib's getproxies) to its own transport only."""
    for scheme in ("https", "http", "all"):
        upstream = build_upstream_client({scheme: "http://proxy.corp:3128"})
        assert not isinstance(upstream._transport, WarmingTransport)
    for unproxied in ({}, {"https": " "}, {"no": "*"}):
        assert isinstance(build_upstream_client(unproxied)._transport, WarmingTransport)


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


def test_only_a_write_that_failed_on_a_closing_connection_counts_as_never_sent() -> None:
    """aiohttp learns that a pooled connection was closed by the server when it writes the
    next request on it (head and body in one write): nothing went out. A disconnect after
    the write may have let the server run it."""
    unwritten = aiohttp.ClientOSError("Can not write request body")
    unwritten.__cause__ = aiohttp.ClientConnectionResetError("Cannot write to closing transport")
    assert aiohttp_transport._unwritten(unwritten)
    assert aiohttp_transport._unwritten(aiohttp.ClientConnectionResetError("closing"))
    for sent in (
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientOSError(104, "Connection reset by peer"),
        aiohttp.ClientPayloadError("cut"),
    ):
        assert not aiohttp_transport._unwritten(sent)


async def test_a_connect_timeout_is_a_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A TLS handshake that never completes: no request went out."""
    monkeypatch.setattr(aiohttp_transport, "_TIMEOUT", aiohttp.ClientTimeout(connect=0.2))

    async def silent(stream: SocketStream) -> None:
        async with stream:
            await anyio.sleep_forever()

    async with loopback(silent) as url, client() as upstream:
        with pytest.raises(httpx.ConnectTimeout):
            await upstream.post(url.replace("http://", "https://"), content=b"{}")


async def test_a_large_response_header_is_accepted_as_httpx_does() -> None:
    cookie = b"a" * 20_000

    async def big_head(stream: SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(
                b"HTTP/1.1 200 OK\r\nset-cookie: s=" + cookie + b"\r\n"
                b"content-length: %d\r\n\r\n" % len(BODY) + BODY
            )

    async with loopback(big_head) as url, client() as upstream:
        response = await upstream.post(url, content=b"{}")
    assert response.content == BODY


async def test_if_aiohttp_cannot_load_the_upstream_stays_on_httpx(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> object:
        raise ImportError("aiohttp is broken here")

    monkeypatch.setattr(http_client, "_aiohttp_transport", broken)

    async def answer_all(stream: SocketStream) -> None:
        async with stream:
            with contextlib.suppress(anyio.EndOfStream):
                while await stream.receive():
                    await stream.send(
                        b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(BODY) + BODY
                    )

    warming = WarmingTransport()
    async with loopback(answer_all) as url, httpx.AsyncClient(transport=warming) as upstream:
        await upstream.post(url, content=b"{}")
        assert warming._loading is not None
        with anyio.fail_after(10), contextlib.suppress(ImportError):
            await warming._loading
        answers = [(await upstream.post(url, content=b"{}")).content for _ in range(2)]
    assert answers == [BODY, BODY]
    assert warming._fast is None
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == ["could not load aiohttp; the upstream stays on httpx's own transport"]


async def test_a_body_that_came_with_the_head_frees_the_connection_at_once() -> None:
    """Two requests one after the other on one connection: the first response's body was
    complete on arrival, so its connection went back to the pool before anyone read it."""
    requests: list[bytes] = []

    async def keeps_alive(stream: SocketStream) -> None:
        async with stream:
            for _ in range(2):
                requests.append(await stream.receive())
                await stream.send(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n" % len(BODY) + BODY
                )

    transport = AiohttpTransport(httpx.create_ssl_context)
    async with loopback(keeps_alive) as url:
        first = await transport.handle_async_request(httpx.Request("POST", url, content=b"{}"))
        second = await transport.handle_async_request(httpx.Request("POST", url, content=b"{}"))
        bodies = [await first.aread(), await second.aread()]
        await transport.aclose()
    assert bodies == [BODY, BODY]
    assert len(requests) == 2  # both on the one connection the server accepted
