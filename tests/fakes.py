"""Hand-written fakes for the ports, typed as the Protocols so mypy keeps them honest."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from dependency_injector import providers

from mcp_oauth2_proxy import Proxy
from mcp_oauth2_proxy.adapters.http_client import build_http_client
from mcp_oauth2_proxy.domain.authorization import Denied, Granted, RedirectTarget
from mcp_oauth2_proxy.domain.cached_login import CachedLogin
from mcp_oauth2_proxy.domain.pkce import LoginSecrets
from mcp_oauth2_proxy.domain.token_exchange import TokenReply, TokenRequest


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.current = now

    def now(self) -> float:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += seconds


def json_reply(status: int, document: object) -> TokenReply:
    return TokenReply(status, "application/json", json.dumps(document).encode())


def token_reply(
    access: str, *, expires_in: int | None = 3600, refresh: str | None = None
) -> TokenReply:
    document: dict[str, object] = {"access_token": access, "token_type": "Bearer"}
    if expires_in is not None:
        document["expires_in"] = expires_in
    if refresh is not None:
        document["refresh_token"] = refresh
    return json_reply(200, document)


class Sleeps:
    """Stands in for anyio.sleep: records each wait and moves the fake clock on by it."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)


class FakeTokenEndpoint:
    """Answers each request with the next scripted reply; records what it was sent.

    `gate`, when set, holds every request until the test opens it, so a test can have
    several callers waiting on one request at once without sleeping.
    """

    def __init__(self, *replies: TokenReply | Callable[[TokenRequest], TokenReply]) -> None:
        self.replies = list(replies)
        self.requests: list[TokenRequest] = []
        self.gate: anyio.Event | None = None
        self.arrived = anyio.Event()

    @property
    def forms(self) -> list[dict[str, str]]:
        return [dict(request.form) for request in self.requests]

    async def post(self, request: TokenRequest) -> TokenReply:
        self.requests.append(request)
        self.arrived.set()
        if self.gate is not None:
            await self.gate.wait()
        if not self.replies:
            raise AssertionError(f"unexpected token request: {request!r}")
        reply = self.replies.pop(0)
        return reply(request) if callable(reply) else reply


@dataclass
class FakeReply:
    """A scripted upstream response: status, headers, and body chunks (or an error)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: list[bytes] = field(default_factory=list)
    fail_after_chunks: Exception | None = None
    hold: anyio.Event | None = None

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        for chunk in self.body:
            yield chunk
        if self.hold is not None:
            await self.hold.wait()
        if self.fail_after_chunks is not None:
            raise self.fail_after_chunks

    async def read(self, limit: int) -> bytes:
        data = b""
        async for chunk in self.chunks():
            data += chunk
        return data[:limit]


def json_response(
    document: object, status: int = 200, headers: dict[str, str] | None = None
) -> FakeReply:
    return FakeReply(
        status,
        {"content-type": "application/json", **(headers or {})},
        [json.dumps(document).encode()],
    )


def sse_response(*documents: object, **headers: str) -> FakeReply:
    events = [f"event: message\ndata: {json.dumps(d)}\n\n".encode() for d in documents]
    return FakeReply(200, {"content-type": "text/event-stream", **headers}, events)


@dataclass
class Exchange:
    method: str
    headers: dict[str, str]
    body: bytes | None
    url: str | None = None

    @property
    def document(self) -> Any:
        return json.loads(self.body or b"null")


Handler = Callable[[Exchange], Awaitable[FakeReply]]


class FakeUpstream:
    """Answers each exchange with `handler`; records every exchange it was asked for."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.exchanges: list[Exchange] = []
        self.changed = anyio.Event()

    def posts(self, method: str | None = None) -> list[Exchange]:
        return [
            e
            for e in self.exchanges
            if e.method == "POST" and (method is None or e.document.get("method") == method)
        ]

    @asynccontextmanager
    async def exchange(
        self,
        method: Literal["POST", "GET", "DELETE"],
        headers: Mapping[str, str],
        body: bytes | None = None,
        url: str | None = None,
    ) -> AsyncIterator[FakeReply]:
        exchange = Exchange(method, dict(headers), body, url)
        self.exchanges.append(exchange)
        self.changed.set()
        self.changed = anyio.Event()
        yield await self.handler(exchange)


class MemoryByteReceive(anyio.abc.ByteReceiveStream):
    """The proxy's stdin in a test: bytes the test sends."""

    def __init__(self, inner: MemoryObjectReceiveStream[bytes]) -> None:
        self._inner = inner

    async def receive(self, max_bytes: int = 65536) -> bytes:
        try:
            return await self._inner.receive()
        except anyio.EndOfStream:
            raise
        except anyio.ClosedResourceError:
            raise anyio.EndOfStream from None

    async def aclose(self) -> None:
        await self._inner.aclose()


class MemoryByteSend(anyio.abc.ByteSendStream):
    """The proxy's stdout in a test: every write arrives as one item."""

    def __init__(self, inner: MemoryObjectSendStream[bytes]) -> None:
        self._inner = inner

    async def send(self, item: bytes) -> None:
        await self._inner.send(item)

    async def aclose(self) -> None:
        await self._inner.aclose()


class FakeTokenStore:
    """The TokenStore port in memory; `locked` is a plain in-process lock."""

    def __init__(self) -> None:
        self.entries: dict[str, CachedLogin] = {}
        self._locks: dict[str, anyio.Lock] = {}

    @asynccontextmanager
    async def locked(self, key: str) -> AsyncIterator[None]:
        async with self._locks.setdefault(key, anyio.Lock()):
            yield

    def load(self, key: str) -> CachedLogin | None:
        return self.entries.get(key)

    def save(self, login: CachedLogin) -> None:
        self.entries[login.key] = login

    def delete(self, key: str) -> bool:
        return self.entries.pop(key, None) is not None


class FakeEntropy:
    """Predictable 'random' bytes: counts up, so each call differs."""

    def __init__(self) -> None:
        self.calls = 0

    def random_bytes(self, count: int) -> bytes:
        self.calls += 1
        return bytes([self.calls % 256]) * count


class ScriptedCallbackListener:
    """A CallbackListener whose callback is whatever the test (or browser) settles."""

    def __init__(self) -> None:
        self.outcome: anyio.Event = anyio.Event()
        self.result_value: Granted | Denied | None = None
        self.secrets: LoginSecrets | None = None
        self.target: RedirectTarget | None = None

    def settle(self, outcome: Granted | Denied) -> None:
        self.result_value = outcome
        self.outcome.set()

    @asynccontextmanager
    async def listening(
        self, target: RedirectTarget, secrets: LoginSecrets
    ) -> AsyncIterator[ScriptedCallbackListener]:
        self.target, self.secrets = target, secrets
        yield self

    @property
    def redirect_uri(self) -> str:
        assert self.target is not None
        return self.target.uri()

    async def result(self) -> Granted | Denied:
        await self.outcome.wait()
        assert self.result_value is not None
        return self.result_value


class ScriptedBrowser:
    """A BrowserOpener that records URLs and runs `then(url)` (e.g. approve the login)."""

    def __init__(self, then: Callable[[str], None] | None = None, *, opens: bool = True) -> None:
        self.opened: list[str] = []
        self._then = then
        self._opens = opens

    async def show(self, url: str) -> bool:
        self.opened.append(url)
        if self._then is not None:
            self._then(url)
        return self._opens


def upstream_on_httpcore(proxy: Proxy) -> Proxy:
    """Send the proxy's upstream requests through httpx's own transport, where respx
    intercepts them (the real upstream client runs on its own HTTP/1.1 engine)."""
    proxy.container.upstream_http_client.override(providers.Singleton(build_http_client))
    return proxy
