"""httpx's API on a lean HTTP/1.1 engine, for the upstream: the hot path.

Every tool call an AI makes goes through here, so a request is one write of the bytes httpx
already built, on a kept-alive asyncio connection, and its answer is parsed by httptools
(llhttp, the C parser Node's HTTP uses). Client libraries do much more per request: httpx's
own pool (httpcore) looks over every connection it holds on each request, and aiohttp's
session (used here before) spent a third of the proxy's CPU on tracing, timers, cookie and
payload objects an MCP POST never needs, and took 150 ms or more to import at start.
docs/performance.md has the figures. The rest of the proxy keeps speaking httpx, so tests,
error handling, the IdP and discovery requests, and a configured HTTP proxy (httpx's own
transport) are unchanged.

Errors keep "never sent" apart from "may have run", which the bridge relies on to decide
whether a request may go again: only a failure to connect becomes httpx.ConnectError or
httpx.ConnectTimeout; a connection that breaks once the request went out becomes
httpx.RemoteProtocolError (no answer) or httpx.ReadError (an answer cut short).
"""

from __future__ import annotations

import asyncio
import select
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import cast

import anyio
import httptools
import httpx

# Like httpx's pool: give up connecting (DNS and TLS included) after 10 s. There is no read
# timeout: the bridge bounds each exchange with upstream.timeoutMs, and the server stream may
# rightly stay quiet for hours.
CONNECT_SECONDS = 10.0
# A kept-alive connection idle this long is not used again but closed, before common
# servers' own idle timeouts (5 s in uvicorn): a request written just as the server closes
# the connection cannot be told from one that ran.
IDLE_SECONDS = 4.0
# h11 (httpx's parser) takes response heads up to 16 KiB; auth gateways send large cookies.
MAX_HEAD_BYTES = 64 * 1024
# Body bytes held for a reader that is not keeping up before the socket stops being read.
_HIGH_WATER = 256 * 1024

_Origin = tuple[bytes, str, int]


class Http11Transport(httpx.AsyncBaseTransport):
    """A pool of HTTP/1.1 connections per origin, reused most-recent first."""

    def __init__(
        self,
        ssl_context: Callable[[], ssl.SSLContext],
        *,
        connect_seconds: float = CONNECT_SECONDS,
    ) -> None:
        self._ssl_context = ssl_context
        self._connect_seconds = connect_seconds
        # Insertion-ordered: the last is the warmest, the first the longest idle.
        self._idle: dict[_Origin, dict[_Connection, None]] = {}
        self._open: set[_Connection] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx.UnsupportedProtocol(
                f"the URL {url} is neither http:// nor https://", request=request
            )
        origin = (scheme, url.host, url.port or (443 if scheme == b"https" else 80))
        data = await _wire_bytes(request)
        connection, exchange = await self._send(origin, data, request)
        try:
            await exchange.head
        except BaseException:
            # Cancelled or failed mid-exchange: the connection is in an unknown state.
            connection.close()
            raise
        stream: httpx.AsyncByteStream
        if exchange.complete:
            # A small answer usually comes whole with its head: hand it over as it is.
            stream = httpx.ByteStream(exchange.take())
        else:
            stream = _Body(exchange, connection)
        return httpx.Response(
            status_code=exchange.status,
            headers=exchange.headers,
            stream=stream,
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._idle.clear()

    async def _send(
        self, origin: _Origin, data: bytes, request: httpx.Request
    ) -> tuple[_Connection, _Exchange]:
        while (connection := self._reusable(origin)) is not None:
            exchange = connection.send(data, request)
            if exchange is not None:
                return connection, exchange
            # The kept-alive connection turned out closed when written to, so nothing was
            # sent on it: the request goes on another.
        connection = await self._connect(origin, request)
        exchange = connection.send(data, request)
        if exchange is None:
            raise httpx.ConnectError(
                "the server closed the connection as soon as it was made", request=request
            )
        return connection, exchange

    def _reusable(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection, _ = idle.popitem()
            if connection.usable():
                return connection
            connection.close()
        return None

    async def _connect(self, origin: _Origin, request: httpx.Request) -> _Connection:
        scheme, host, port = origin
        tls = self._ssl_context() if scheme == b"https" else None
        loop = asyncio.get_running_loop()
        try:
            with anyio.fail_after(self._connect_seconds):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self, origin),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(
                f"timed out connecting to {host}:{port} after {self._connect_seconds:g} s",
                request=request,
            ) from exc
        except OSError as exc:  # refused, unresolvable, TLS (ssl.SSLError is an OSError)
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        return connection

    def opened(self, connection: _Connection) -> None:
        self._open.add(connection)

    def release(self, connection: _Connection) -> None:
        """A connection whose answer has fully arrived goes back to the pool; the one idle
        longest is closed if it has been idle too long, so idle sockets do not pile up."""
        idle = self._idle.setdefault(connection.origin, {})
        idle[connection] = None
        oldest = next(iter(idle))
        if not oldest.usable():
            del idle[oldest]
            oldest.close()

    def forget(self, connection: _Connection) -> None:
        self._open.discard(connection)
        idle = self._idle.get(connection.origin)
        if idle is not None:
            idle.pop(connection, None)


class _Exchange:
    """One request's answer as the parser delivers it: its head, then body chunks."""

    def __init__(self, request: httpx.Request, head: asyncio.Future[None]) -> None:
        self.request = request
        self.head = head
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.complete = False
        self.error: httpx.TransportError | None = None
        self.informational = False
        self.until_close = False
        self.keep_alive = False
        self._waiter: asyncio.Future[None] | None = None

    def take(self) -> bytes:
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks = []
        self.buffered = 0
        return data

    async def wait(self) -> None:
        self._waiter = self.head.get_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def fail(self, error: httpx.TransportError) -> None:
        if self.head.done():
            self.error = error
            self.wake()
        else:
            self.head.set_exception(error)


class _Connection(asyncio.Protocol):
    """One socket, with httptools' parser calling back into the exchange under way."""

    def __init__(self, pool: Http11Transport, origin: _Origin) -> None:
        self.origin = origin
        self._pool = pool
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._exchange: _Exchange | None = None
        self._head_bytes = 0
        self._idle_since = 0.0
        self._paused = False
        self._fileno = -1

    def usable(self) -> bool:
        """Whether an idle connection may carry the next request: open, not idle too long,
        and with nothing to read, since on an idle connection that can only be the server's
        close (or garbage) that the event loop has not seen yet."""
        if self._transport is None or self._transport.is_closing():
            return False
        if time.monotonic() - self._idle_since >= IDLE_SECONDS:
            return False
        readable, _, _ = select.select([self._fileno], [], [], 0)
        return not readable

    def send(self, data: bytes, request: httpx.Request) -> _Exchange | None:
        transport = self._transport
        if transport is None or transport.is_closing():
            self.close()
            return None
        exchange = _Exchange(request, asyncio.get_running_loop().create_future())
        self._exchange = exchange
        self._head_bytes = 0
        transport.write(data)
        if transport.is_closing():
            # The write failed at once (the server had reset this kept-alive connection; one
            # it closed is caught by `usable()` before): the event loop closes the transport
            # then, and a failed send sends nothing. Nothing is written to a closing
            # transport, which uvloop refuses with an error where asyncio ignores it.
            self._exchange = None
            self.close()
            return None
        return exchange

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._pool.forget(self)

    def resume(self) -> None:
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: other event loops' transports (uvloop's) have the
        # interface without deriving from asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)
        self._fileno = transport.get_extra_info("socket").fileno()
        self._pool.opened(self)

    def data_received(self, data: bytes) -> None:
        exchange = self._exchange
        if exchange is None:
            # Bytes nobody asked for: the connection can no longer be trusted.
            self.close()
            return
        if not exchange.head.done():
            if self._head_bytes > MAX_HEAD_BYTES:
                self._broken(exchange, f"its response head is over {MAX_HEAD_BYTES} bytes")
                return
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._broken(exchange, "it switched protocols, which MCP does not use")
        except httptools.HttpParserError as exc:
            self._broken(exchange, f"its response is not valid HTTP/1.1 ({exc})")

    def eof_received(self) -> bool:
        return False  # close: a half-closed connection is of no use to a client

    def connection_lost(self, exc: Exception | None) -> None:
        self._pool.forget(self)
        exchange = self._exchange
        self._exchange = None
        if exchange is None or exchange.complete:
            return
        if exchange.head.done() and exchange.until_close and exc is None:
            exchange.complete = True  # a body without a length ends where the connection does
            exchange.wake()
            return
        said = f" ({exc})" if exc is not None else ""
        if exchange.head.done():
            exchange.fail(
                httpx.ReadError(
                    f"the server closed the connection in the middle of its answer{said}",
                    request=exchange.request,
                )
            )
        else:
            exchange.fail(
                httpx.RemoteProtocolError(
                    f"the server closed the connection without answering{said}",
                    request=exchange.request,
                )
            )

    def _broken(self, exchange: _Exchange, why: str) -> None:
        self._exchange = None
        self.close()
        exchange.fail(
            httpx.RemoteProtocolError(f"the server broke HTTP: {why}", request=exchange.request)
        )

    # httptools' parser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._exchange is not None:
            self._exchange.headers.append((name, value))

    def on_headers_complete(self) -> None:
        exchange = self._exchange
        if exchange is None:
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            # An interim answer (100 Continue, 103 Early Hints); the real one follows.
            exchange.informational = True
            exchange.headers = []
            return
        exchange.status = status
        exchange.keep_alive = self._parser.should_keep_alive()
        exchange.until_close = status not in (204, 304) and not any(
            name.lower() in (b"content-length", b"transfer-encoding")
            for name, _ in exchange.headers
        )
        exchange.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        exchange = self._exchange
        if exchange is None:
            return
        exchange.chunks.append(body)
        exchange.buffered += len(body)
        if exchange.buffered > _HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        exchange.wake()

    def on_message_complete(self) -> None:
        exchange = self._exchange
        if exchange is None:
            return
        if exchange.informational:
            exchange.informational = False
            return
        exchange.complete = True
        exchange.wake()
        self._exchange = None
        if exchange.keep_alive and self._transport is not None:
            self._idle_since = time.monotonic()
            self._pool.release(self)
        else:
            self.close()


class _Body(httpx.AsyncByteStream):
    """A response body as it arrives; closing it before its end closes the connection (which
    is how the 2026-07-28 wire cancels a request on the server)."""

    def __init__(self, exchange: _Exchange, connection: _Connection) -> None:
        self._exchange = exchange
        self._connection = connection

    async def __aiter__(self) -> AsyncIterator[bytes]:
        exchange = self._exchange
        while True:
            if exchange.chunks:
                chunk = exchange.take()
                if not exchange.complete:
                    self._connection.resume()
                yield chunk
            elif exchange.error is not None:
                raise exchange.error
            elif exchange.complete:
                return
            else:
                await exchange.wait()

    async def aclose(self) -> None:
        if not self._exchange.complete:
            self._connection.close()


async def _wire_bytes(request: httpx.Request) -> bytes:
    """The request as it goes on the wire: the head httpx built, then the body (chunked
    when httpx chose that for a body of unknown length)."""
    try:
        body = request.content
    except httpx.RequestNotRead:
        body = await request.aread()
    head = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), request.url.raw_path)]
    chunked = False
    for name, value in request.headers.raw:
        head.append(b"%s: %s\r\n" % (name, value))
        if name.lower() == b"transfer-encoding":
            chunked = value.lower() == b"chunked"
    head.append(b"\r\n")
    if chunked:
        head.append(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n")
    else:
        head.append(body)
    return b"".join(head)
