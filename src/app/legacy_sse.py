"""The HTTP+SSE transport of MCP 2024-11-05, for servers that predate streamable HTTP.

The server keeps one event stream open (GET on the upstream URL); its first event, named
`endpoint`, says where to POST client messages; every server message, responses included,
then arrives on that stream. The proxy falls back to it when the server refuses the first
`initialize` POST with 400, 404 or 405 (transports §Backwards Compatibility), or always with
UPSTREAM_TRANSPORT=sse. The POST endpoint must be on the upstream's origin: a token is never
sent anywhere the operator did not name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urljoin, urlsplit

import anyio

from ..adapters.stderr_log import package_logger
from ..domain.errors import ClientGone, OAuthError, UpstreamError
from ..domain.jsonrpc import JsonId, Kind, Message, parse_upstream_body
from ..domain.ports import UpstreamTransport
from ..domain.sse import SseDecoder, SseEvent
from ..domain.wire import EVENT_STREAM
from .token_manager import TokenManager

log = package_logger()

ENDPOINT_SECONDS = 10.0


class LegacySse:
    """One HTTP+SSE session: the event stream, the POST endpoint it named, the requests
    waiting for their answer on it."""

    def __init__(
        self,
        upstream: UpstreamTransport,
        tokens: TokenManager,
        upstream_url: str,
        to_client: Callable[[Message], Awaitable[object]],
        max_event_bytes: int,
    ) -> None:
        self._upstream = upstream
        self._tokens = tokens
        self._upstream_url = upstream_url
        self._to_client = to_client
        self._max_event_bytes = max_event_bytes
        self._ready = anyio.Event()
        self._ended = anyio.Event()
        self._waiting: dict[JsonId, anyio.Event] = {}
        self._answered: set[JsonId] = set()
        self.endpoint: str | None = None
        self.failure: str | None = None
        self._scope = anyio.CancelScope()

    async def open(self, tasks: anyio.abc.TaskGroup) -> None:
        """Start the event stream and wait for its `endpoint` event.

        Raises:
            UpstreamError: no stream, or no usable endpoint within ENDPOINT_SECONDS.
        """
        tasks.start_soon(self._stream)
        with anyio.move_on_after(ENDPOINT_SECONDS):
            await self._ready.wait()
        if self.endpoint is None:
            # A stream that named no usable endpoint must not go on feeding the client.
            self._scope.cancel()
            raise UpstreamError(
                self.failure
                or f"the upstream's HTTP+SSE stream named no endpoint within {ENDPOINT_SECONDS:g} s"
            )
        log.info(
            "using the HTTP+SSE transport of MCP 2024-11-05", extra={"endpoint": self.endpoint}
        )

    def expect(self, request_id: JsonId) -> None:
        """Get ready for the answer to `request_id` (before posting it)."""
        self._waiting[request_id] = anyio.Event()

    async def answer(self, request_id: JsonId) -> bool:
        """Wait for the answer; False when the stream ended first."""
        waiting = self._waiting.get(request_id)
        if waiting is not None:
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as either:
                    either.start_soon(_set_when, self._ended, scope)
                    await waiting.wait()
                    scope.cancel()
        self._waiting.pop(request_id, None)
        if request_id in self._answered:
            self._answered.discard(request_id)
            return True
        return False

    async def _stream(self) -> None:
        with self._scope:
            await self._read_stream()

    async def _read_stream(self) -> None:
        decoder = SseDecoder(self._max_event_bytes)
        try:
            # Shielded: a login or a refresh cut short could lose a rotated refresh token.
            with anyio.CancelScope(shield=True):
                token = await self._tokens.token()
            headers = {"Accept": EVENT_STREAM, "Authorization": token.authorization}
            async with self._upstream.exchange("GET", headers) as reply:
                content_type = reply.headers.get("content-type", "").split(";")[0].strip()
                if reply.status != 200 or content_type != EVENT_STREAM:
                    self.failure = (
                        f"the upstream refused both transports: HTTP {reply.status} for the "
                        "HTTP+SSE stream; check upstream.url / UPSTREAM_URL"
                    )
                    return
                async for chunk in reply.chunks():
                    for event in decoder.feed(chunk):
                        if isinstance(event, SseEvent):
                            await self._on_event(event)
                        else:
                            log.warning(
                                "dropped an upstream event larger than the limit",
                                extra={
                                    "limit_bytes": event.limit,
                                    "setting": "upstream.maxMessageBytes / "
                                    "UPSTREAM_MAX_MESSAGE_BYTES",
                                },
                            )
        except (UpstreamError, OAuthError) as error:
            self.failure = str(error)
        except ClientGone:
            return
        finally:
            log.info("the upstream's HTTP+SSE stream ended")
            self._ended.set()
            self._ready.set()

    async def _on_event(self, event: SseEvent) -> None:
        if event.event == "endpoint":
            self._take_endpoint(event.data.decode("utf-8", "replace").strip())
            return
        if not event.data.strip():
            return
        try:
            messages = parse_upstream_body(event.data)
        except ValueError:
            log.warning("dropped HTTP+SSE data that is not JSON-RPC")
            return
        for message in messages:
            if message.kind is Kind.RESPONSE and message.id in self._waiting:
                self._answered.add(message.id)
                self._waiting[message.id].set()
            await self._to_client(message)

    def _take_endpoint(self, announced: str) -> None:
        endpoint = urljoin(self._upstream_url, announced)
        here, there = urlsplit(self._upstream_url), urlsplit(endpoint)
        if (here.scheme, here.netloc) != (there.scheme, there.netloc):
            self.failure = (
                f"the upstream's HTTP+SSE endpoint {endpoint} is not on its origin "
                f"{here.scheme}://{here.netloc}; refusing to send a token there"
            )
        else:
            self.endpoint = endpoint
        self._ready.set()


async def _set_when(ended: anyio.Event, scope: anyio.CancelScope) -> None:
    await ended.wait()
    scope.cancel()
