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
from multidict import CIMultiDict

# Like httpx's pool: give up connecting after 10 s; no read timeout (the bridge bounds each
# exchange with upstream.timeoutMs, and the server stream may rightly stay quiet for hours).
_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10.0)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session, made on the first request (it must be made inside the loop)."""

    def __init__(self, ssl_context: Callable[[], ssl.SSLContext]) -> None:
        self._ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._session is None:
            # The shared TLS context (http_client.tls_context), asked for only for https.
            ssl_context = self._ssl_context() if request.url.scheme == "https" else None
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ssl=ssl_context or True)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=_TIMEOUT, auto_decompress=False
            )
        try:
            response = await self._session.request(
                request.method,
                str(request.url),
                headers=CIMultiDict(request.headers.multi_items()),
                data=request.content or None,
                allow_redirects=False,
                compress=None,
            )
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        except aiohttp.ServerTimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or type(exc).__name__, request=request) from exc
        except aiohttp.ClientError as exc:
            # The request may have reached the server (it disconnected, or sent nonsense).
            raise httpx.RemoteProtocolError(
                str(exc) or type(exc).__name__, request=request
            ) from exc
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class _Body(httpx.AsyncByteStream):
    """A response body as it arrives; closing it before its end closes the connection (which
    is how the 2026-07-28 wire cancels a request on the server)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()
