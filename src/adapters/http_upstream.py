"""The UpstreamTransport port over httpx: streamed exchanges with the MCP endpoint.

Responses are streamed, not buffered: an SSE answer's events reach the client as they arrive,
and a long-lived GET stream holds no more than one chunk at a time here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Literal

import anyio
import httpx

from ..domain.errors import UpstreamError, UpstreamUnreachableError
from .http_client import failure_reason


class HttpReply:
    """An httpx response seen through the UpstreamReply port."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_bytes():
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

    @asynccontextmanager
    async def exchange(
        self,
        method: Literal["POST", "GET", "DELETE"],
        headers: Mapping[str, str],
        body: bytes | None = None,
        url: str | None = None,
    ) -> AsyncIterator[HttpReply]:
        target = url or self._url
        request = self._client.build_request(method, target, headers=headers, content=body)
        try:
            response = await self._client.send(request, stream=True)
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
            # Shielded: a cancelled request (the client's notifications/cancelled) must still
            # close its connection, which is how the 2026-07-28 wire cancels on the server.
            with anyio.CancelScope(shield=True):
                await response.aclose()


def _unreachable(target: str, exc: httpx.HTTPError) -> str:
    return (
        f"could not reach the upstream {target}: {failure_reason(exc)}; check "
        "upstream.url / UPSTREAM_URL and that the server is reachable (VPN, HTTPS_PROXY)"
    )

