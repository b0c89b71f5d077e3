"""The UpstreamTransport port over httpx: streamed exchanges with the MCP endpoint.

Responses are streamed, not buffered: an SSE answer's events reach the client as they arrive,
and a long-lived GET stream holds no more than one chunk at a time here.

Every tool call comes through here, so requests skip the parts of `httpx.AsyncClient` that do
nothing for them (docs/performance.md has the figures): the URL is parsed once, the client's
default headers are merged once, and the request goes straight to the transport the client
would pick for it. What the client would do for them is still done: its cookies go out and
come back, and a client with auth or event hooks (or a URL with credentials in it) sends
through `AsyncClient.send`. Requests and responses stay httpx's own, so httpx's
transports, respx and `httpx.MockTransport` work as before.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from typing import Literal, cast

import anyio
import httpx

from ..domain.errors import UpstreamError, UpstreamUnreachableError
from .http_client import failure_reason


class HttpReply:
    """An httpx response seen through the UpstreamReply port."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: Mapping[str, str] = _plain(response.headers)

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        response = self._response
        try:
            if isinstance(response.stream, httpx.ByteStream):
                # The whole body came with the head: read at once, it leaves none of httpx's
                # nested generators half-way (see `_events` in the bridge for their cost).
                body = await response.aread()
                if body:
                    yield body
                return
            # httpx declares an AsyncIterator; it is an async generator, closed here.
            parts = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
            async with aclosing(parts):
                async for chunk in parts:
                    yield chunk
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"the upstream connection broke mid-response: {failure_reason(exc)}"
            ) from None

    async def read(self, limit: int) -> bytes:
        body = bytearray()
        async for chunk in self.chunks():
            body += chunk
            if len(body) >= limit:
                break
        return bytes(body[:limit])


class HttpUpstream:
    """POST, GET and DELETE on the configured upstream URL through one pooled client."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self._client = client
        self._url = url
        self._parsed = httpx.URL(url)
        # What `AsyncClient.build_request` would add to every request, worked out once.
        self._defaults = {name.lower(): (name, value) for name, value in client.headers.items()}
        self._extensions = {"timeout": client.timeout.as_dict()}
        self._direct = client.auth is None and not any(client.event_hooks.values())

    @asynccontextmanager
    async def exchange(
        self,
        method: Literal["POST", "GET", "DELETE"],
        headers: Mapping[str, str],
        body: bytes | None = None,
        url: str | None = None,
    ) -> AsyncIterator[HttpReply]:
        target = url or self._url
        request = self._request(method, target, headers, body)
        try:
            response = await self._send(request)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise UpstreamUnreachableError(_unreachable(target, exc)) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"the connection to the upstream {target} failed before it answered: "
                f"{failure_reason(exc)}; the server, or a proxy or load balancer on the way, "
                "closed it"
            ) from None
        try:
            yield HttpReply(response)
        finally:
            if not response.is_closed:
                # Shielded: a cancelled request (the client's notifications/cancelled) must
                # still close its connection, which is how the 2026-07-28 wire cancels on the
                # server. A body read to its end is closed already.
                with anyio.CancelScope(shield=True):
                    await response.aclose()

    def _request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> httpx.Request:
        """The request `AsyncClient.build_request` would make: Host, the client's default
        headers under the given ones, Content-Length for a body, and the client's cookies.
        (Given as a stream, httpx adds no headers of its own, which costs more than the rest
        of building the request.)"""
        url = self._parsed if target == self._url else httpx.URL(target)
        merged = {"host": ("Host", url.netloc.decode("ascii")), **self._defaults}
        for name, value in headers.items():
            merged[name.lower()] = (name, value)
        if body is not None:
            merged["content-length"] = ("Content-Length", str(len(body)))
        request = httpx.Request(
            method,
            url,
            headers=list(merged.values()),
            stream=httpx.ByteStream(body or b""),
            extensions=self._extensions,
        )
        request.read()
        cookies = self._client.cookies
        if cookies:
            cookies.set_cookie_header(request)
        return request

    async def _send(self, request: httpx.Request) -> httpx.Response:
        """What `AsyncClient.send` does for a request without auth, hooks or redirects."""
        if not self._direct or request.url.userinfo:
            return await self._client.send(request, stream=True)
        # httpx 0.28 keeps the choice of transport (a mounted proxy, or the default) private;
        # it is the one method of the client's internals used here.
        transport = self._client._transport_for_url(request.url)
        response = await transport.handle_async_request(request)
        response.request = request
        if "set-cookie" in response.headers:
            self._client.cookies.extract_cookies(response)
        return response


def _plain(headers: httpx.Headers) -> dict[str, str]:
    """Response headers as the port has them: lower-case names, repeated ones joined as
    httpx joins them. Built once, because each lookup in httpx.Headers decodes again."""
    encoding = headers.encoding
    plain: dict[str, str] = {}
    for key, value in headers.raw:
        name = key.decode(encoding).lower()
        text = value.decode(encoding)
        plain[name] = f"{plain[name]}, {text}" if name in plain else text
    return plain


def _unreachable(target: str, exc: httpx.HTTPError) -> str:
    return (
        f"could not reach the upstream {target}: {failure_reason(exc)}; check "
        "upstream.url / UPSTREAM_URL and that the server is reachable (VPN, HTTPS_PROXY)"
    )
