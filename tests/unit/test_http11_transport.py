"""The upstream's httpx client on the lean HTTP/1.1 engine: the same answers as httpx's own
transport, kept-alive connections, and errors that still tell "never sent" (safe to send
again) from "may have run"."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from anyio.abc import SocketAttribute, SocketStream

from mcp_oauth2_proxy.adapters import http11_transport
from mcp_oauth2_proxy.adapters.http11_transport import Http11Transport
from mcp_oauth2_proxy.adapters.http_client import build_upstream_client

from ..event_loops import EVENT_LOOPS
from .test_http_upstream import loopback

pytestmark = pytest.mark.anyio

BODY = b'{"jsonrpc":"2.0","id":1,"result":{}}'
ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\n\r\n" % len(BODY) + BODY
)


@pytest.fixture(params=EVENT_LOOPS)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    return request.param


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=Http11Transport(httpx.create_ssl_context))


async def read_request(stream: SocketStream) -> bytes:
    """One whole request (head and a Content-Length body), however the bytes arrive."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive()
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += await stream.receive()
    return data


async def answer_all(stream: SocketStream, served: list[int]) -> None:
    """Answer every request on the connection; count them per connection."""
    served.append(0)
    async with stream:
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
            while True:
                await read_request(stream)
                served[-1] += 1
                await stream.send(ANSWER)


async def test_a_request_and_its_answer_go_through_unchanged() -> None:
    seen: list[bytes] = []

    async def answer_once(stream: SocketStream) -> None:
        async with stream:
            seen.append(await read_request(stream))
            await stream.send(ANSWER)

    async with loopback(answer_once) as url, client() as upstream:
        response = await upstream.post(
            url + "?a=1", content=b"{}", headers={"Authorization": "Bearer t"}
        )
    assert (response.status_code, response.content) == (200, BODY)
    assert response.headers["content-type"] == "application/json"
    assert response.http_version == "HTTP/1.1"
    (request,) = seen
    assert request.startswith(b"POST /mcp?a=1 HTTP/1.1\r\n")
    head = request.lower()
    assert b"\r\nauthorization: bearer t\r\n" in head
    assert b"\r\nhost: 127.0.0.1:" in head
    assert b"\r\ncontent-length: 2\r\n" in head
    assert request.endswith(b"\r\n\r\n{}")


async def test_a_body_of_unknown_length_goes_chunked() -> None:
    seen: list[bytes] = []

    async def answer_once(stream: SocketStream) -> None:
        async with stream:
            data = b""
            while not data.endswith(b"0\r\n\r\n"):
                data += await stream.receive()
            seen.append(data)
            await stream.send(ANSWER)

    async def parts() -> AsyncIterator[bytes]:
        yield b'{"a":'
        yield b"1}"

    async with loopback(answer_once) as url, client() as upstream:
        response = await upstream.post(url, content=parts())
    assert response.content == BODY
    assert b"transfer-encoding: chunked" in seen[0].lower()
    assert seen[0].endswith(b'\r\n\r\n7\r\n{"a":1}\r\n0\r\n\r\n')


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


async def test_a_body_without_a_length_ends_with_the_connection() -> None:
    async def until_close(stream: SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n")
            await stream.send(BODY)

    async with loopback(until_close) as url, client() as upstream:
        response = await upstream.post(url, content=b"{}")
    assert response.content == BODY


async def test_an_interim_answer_is_skipped_for_the_real_one() -> None:
    async def early_hints(stream: SocketStream) -> None:
        async with stream:
            await read_request(stream)
            await stream.send(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + ANSWER)

    async with loopback(early_hints) as url, client() as upstream:
        response = await upstream.post(url, content=b"{}")
    assert (response.status_code, response.content) == (200, BODY)
    assert "link" not in response.headers


async def test_answers_without_a_body_and_with_status_codes_pass_as_they_are() -> None:
    async def accepted(stream: SocketStream) -> None:
        async with stream:
            for _ in range(2):
                await read_request(stream)
                await stream.send(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")

    async with loopback(accepted) as url, client() as upstream:
        statuses = [(await upstream.post(url, content=b"{}")).status_code for _ in range(2)]
    assert statuses == [202, 202]


async def test_connections_are_kept_alive_and_reused() -> None:
    served: list[int] = []

    async def serve(stream: SocketStream) -> None:
        await answer_all(stream, served)

    async with loopback(serve) as url, client() as upstream:
        for _ in range(3):
            assert (await upstream.post(url, content=b"{}")).content == BODY
    assert served == [3]


async def test_requests_in_flight_at_once_get_a_connection_each() -> None:
    served: list[int] = []
    arrived = 0
    all_arrived = anyio.Event()

    async def together(stream: SocketStream) -> None:
        nonlocal arrived
        served.append(1)
        async with stream:
            await read_request(stream)
            arrived += 1
            if arrived == 3:
                all_arrived.set()
            await all_arrived.wait()
            await stream.send(ANSWER)

    bodies: list[bytes] = []
    async with loopback(together) as url, client() as upstream:

        async def call() -> None:
            bodies.append((await upstream.post(url, content=b"{}")).content)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                for _ in range(3):
                    tasks.start_soon(call)
    assert bodies == [BODY] * 3
    assert served == [1, 1, 1]


async def test_a_connection_idle_too_long_is_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Servers close idle connections (uvicorn after 5 s); one reused just then could lose a
    request that cannot be told from one that ran."""
    served: list[int] = []

    async def serve(stream: SocketStream) -> None:
        await answer_all(stream, served)

    async with loopback(serve) as url, client() as upstream:
        await upstream.post(url, content=b"{}")
        monkeypatch.setattr(http11_transport, "IDLE_SECONDS", 0.0)
        await upstream.post(url, content=b"{}")
    assert served == [1, 1]


async def test_a_connection_the_server_closed_is_not_reused() -> None:
    served: list[int] = []

    async def one_each(stream: SocketStream) -> None:
        served.append(1)
        async with stream:
            await read_request(stream)
            await stream.send(ANSWER)

    async with loopback(one_each) as url, client() as upstream:
        first = await upstream.post(url, content=b"{}")
        # The server closed its end after answering; the next request must not be lost on it.
        await anyio.wait_all_tasks_blocked()
        second = await upstream.post(url, content=b"{}")
    assert [first.content, second.content] == [BODY, BODY]
    assert served == [1, 1]


async def test_an_answer_saying_close_closes_the_connection() -> None:
    served: list[int] = []

    async def closes(stream: SocketStream) -> None:
        served.append(1)
        async with stream:
            await read_request(stream)
            await stream.send(
                b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: %d\r\n\r\n" % len(BODY)
                + BODY
            )
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                await stream.receive()

    async with loopback(closes) as url, client() as upstream:
        for _ in range(2):
            assert (await upstream.post(url, content=b"{}")).content == BODY
    assert served == [1, 1]


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
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await upstream.post(url, content=b"{}")
    assert "without answering" in str(caught.value)


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


async def test_nonsense_instead_of_http_is_a_protocol_error() -> None:
    async def nonsense(stream: SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(b"SSH-2.0-OpenSSH_9.6\r\n")

    async with loopback(nonsense) as url, client() as upstream:
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await upstream.post(url, content=b"{}")
    assert "not valid HTTP/1.1" in str(caught.value)


async def test_closing_a_body_before_its_end_closes_the_connection() -> None:
    """How the 2026-07-28 wire cancels a request on the server."""
    closed = anyio.Event()

    async def streaming(stream: SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n6\r\ndata: \r\n"
            )
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                await stream.receive()
            closed.set()

    async with loopback(streaming) as url, client() as upstream:
        async with upstream.stream("POST", url, content=b"{}") as response:
            await anext(response.aiter_bytes())
        with anyio.fail_after(10):
            await closed.wait()


async def test_a_cancelled_request_closes_its_connection() -> None:
    closed = anyio.Event()
    arrived = anyio.Event()

    async def never_answers(stream: SocketStream) -> None:
        async with stream:
            await stream.receive()
            arrived.set()
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                await stream.receive()
            closed.set()

    async with loopback(never_answers) as url, client() as upstream:

        async def call() -> None:
            await upstream.post(url, content=b"{}")

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(call)
                await arrived.wait()
                tasks.cancel_scope.cancel()
            await closed.wait()


async def test_a_slow_reader_pauses_the_socket_and_loses_nothing() -> None:
    size = 3 * 1024 * 1024
    payload = bytes(range(256)) * (size // 256)

    async def big(stream: SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
            for start in range(0, size, 65536):
                await stream.send(payload[start : start + 65536])

    async with (
        loopback(big) as url,
        client() as upstream,
        upstream.stream("POST", url, content=b"{}") as response,
    ):
        received = bytearray()
        async for chunk in response.aiter_raw():
            received += chunk
            await anyio.lowlevel.checkpoint()
    assert bytes(received) == payload


def test_behind_an_http_proxy_the_upstream_uses_httpx_own_transport() -> None:
    """httpx applies proxies (from the environment, or the system settings on macOS and
    Windows: urllib's getproxies) to its own transport only."""
    for scheme in ("https", "http", "all"):
        upstream = build_upstream_client({scheme: "http://proxy.corp:3128"})
        assert not isinstance(upstream._transport, Http11Transport)
    for unproxied in ({}, {"https": " "}, {"no": "*"}):
        assert isinstance(build_upstream_client(unproxied)._transport, Http11Transport)


async def test_a_connect_timeout_is_a_connect_timeout() -> None:
    """A TLS handshake that never completes: no request went out."""

    async def silent(stream: SocketStream) -> None:
        async with stream:
            await anyio.sleep_forever()

    transport = Http11Transport(httpx.create_ssl_context, connect_seconds=0.2)
    async with loopback(silent) as url, httpx.AsyncClient(transport=transport) as upstream:
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


async def test_an_endless_response_head_is_refused() -> None:
    async def endless(stream: SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(b"HTTP/1.1 200 OK\r\n")
            with contextlib.suppress(anyio.BrokenResourceError, OSError):
                for _ in range(100):
                    await stream.send(b"x-filler: " + b"a" * 8000 + b"\r\n")

    async with loopback(endless) as url, client() as upstream:
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await upstream.post(url, content=b"{}")
    assert "response head is over" in str(caught.value)


async def test_a_body_that_came_with_the_head_frees_the_connection_at_once() -> None:
    """Two requests one after the other on one connection: the first response's body was
    complete on arrival, so its connection went back to the pool before anyone read it."""
    served: list[int] = []

    async def serve(stream: SocketStream) -> None:
        await answer_all(stream, served)

    transport = Http11Transport(httpx.create_ssl_context)
    async with loopback(serve) as url:
        first = await transport.handle_async_request(httpx.Request("POST", url, content=b"{}"))
        second = await transport.handle_async_request(httpx.Request("POST", url, content=b"{}"))
        bodies = [await first.aread(), await second.aread()]
        await transport.aclose()
    assert bodies == [BODY, BODY]
    assert served == [2]  # both on the one connection the server accepted


async def test_only_http_and_https_urls_are_taken() -> None:
    async with client() as upstream:
        with pytest.raises(httpx.UnsupportedProtocol):
            await upstream.post("ftp://127.0.0.1/mcp", content=b"{}")


class ForeignTransport:
    """asyncio.Transport's interface without deriving from it, as uvloop's transports."""

    def __init__(self, inner: asyncio.BaseTransport) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_transports_of_other_event_loops_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    create_connection = loop.create_connection

    async def foreign_connection(
        factory: Callable[[], asyncio.Protocol], *args: Any, **kwargs: Any
    ) -> tuple[asyncio.BaseTransport, asyncio.Protocol]:
        def protocol() -> asyncio.Protocol:
            made = factory()
            connection_made = made.connection_made
            made.connection_made = lambda transport: connection_made(  # type: ignore[method-assign]
                ForeignTransport(transport)  # type: ignore[arg-type]
            )
            return made

        return await create_connection(protocol, *args, **kwargs)

    monkeypatch.setattr(loop, "create_connection", foreign_connection)
    served: list[int] = []
    async with loopback(lambda stream: answer_all(stream, served)) as url, client() as upstream:
        for _ in range(2):
            response = await upstream.post(url, content=b"{}")
            assert (response.status_code, response.content) == (200, BODY)
    assert served == [2]
