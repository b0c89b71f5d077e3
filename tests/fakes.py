"""Hand-written fakes for the ports, typed as the Protocols so mypy keeps them honest."""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio

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
