"""httpx's API on aiohttp's HTTP/1.1 engine, for the upstream: the hot path.

httpx's own pool (httpcore) spends most of a proxied call's CPU looking over its connections
on every request, and gets slower as more requests are in flight; aiohttp's pool does the same
work in C-accelerated code (docs/performance.md has the figures). The rest of the proxy keeps
speaking httpx, so tests, error handling and the IdP and discovery requests are unchanged.

Errors are mapped so that the bridge can still tell "never sent" from "may have run": only a
failure to connect becomes httpx.ConnectError (safe to send again); a connection that breaks
after the request went out becomes httpx.RemoteProtocolError or httpx.ReadError.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable

import aiohttp
import httpx

# Like httpx's pool: give up connecting (DNS and TLS included) after 10 s; no read timeout
# (the bridge bounds each exchange with upstream.timeoutMs, and the server stream may rightly
# stay quiet for hours).
_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10.0)
# h11 (httpx's parser) takes response heads up to 16 KiB; auth gateways send large cookies.
_MAX_HEADER_BYTES = 64 * 1024


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session, made on the first request (it must be made inside the loop)."""

    def __init__(self, ssl_context: Callable[[], ssl.SSLContext]) -> None:
        self._ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._session is None:
            # Idle connections are dropped after 4 s, before common servers' own idle
            # timeouts (5 s in uvicorn), so a connection is seldom reused just as the server
            # closes it (a request lost in that race cannot be told from one that ran).
            connector = aiohttp.TCPConnector(
                limit=0, keepalive_timeout=4.0, ssl=self._ssl_context()
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=_TIMEOUT,
                auto_decompress=False,
                # httpx keeps the cookies (none are used); nothing is added behind its back.
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("Content-Type",),
                max_line_size=_MAX_HEADER_BYTES,
                max_field_size=_MAX_HEADER_BYTES,
            )
        # Headers.multi_items() works out the headers' encoding once per header; once is
        # enough (docs/performance.md).
        encoding = request.headers.encoding
        headers = [
            (key.decode(encoding), value.decode(encoding)) for key, value in request.headers.raw
        ]
        try:
            response = await self._session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=request.content or None,
                allow_redirects=False,
                compress=None,
            )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise _never_sent(exc, request) from exc
        except aiohttp.ClientError as exc:
            if _unwritten(exc):
                raise _never_sent(exc, request) from exc
            # The request may have reached the server (it disconnected, or sent nonsense).
            raise httpx.RemoteProtocolError(
                str(exc) or type(exc).__name__, request=request
            ) from exc
        body: httpx.AsyncByteStream = _Body(response, request)
        if response.content.is_eof():
            # The whole body came with the head (a small JSON answer usually does): hand it
            # over as it is and give the connection back now, rather than stream it. It is
            # no more than aiohttp's read buffer holds, which stops reading at 128 KiB.
            body = httpx.ByteStream(response.content.read_nowait())
            response.release()
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=body,
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _never_sent(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """No connection, or none that took the request: what the bridge may safely send again."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(text, request=request)
    return httpx.ConnectError(text, request=request)


def _unwritten(exc: aiohttp.ClientError) -> bool:
    """A pooled connection the server had just closed: the write of the request (head and
    body go out in one write) failed on the closing transport, so nothing was sent. httpx's
    pool avoids this by checking the socket before reuse; aiohttp finds out on writing."""
    cause = exc if isinstance(exc, aiohttp.ClientConnectionResetError) else exc.__cause__
    return isinstance(cause, aiohttp.ClientConnectionResetError)


class _Body(httpx.AsyncByteStream):
    """A response body as it arrives; closing it before its end closes the connection (which
    is how the 2026-07-28 wire cancels a request on the server)."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=self._request) from exc

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()
