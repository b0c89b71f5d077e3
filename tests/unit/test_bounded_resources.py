"""Bounded resources: at most upstream.maxInFlight requests on the upstream (the rest wait,
none is dropped), upstream.maxMessageBytes on both sides, and a slow stdout reader holding
the upstream back instead of the proxy buffering for it."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator

import anyio
import pytest

from mcp_oauth2_proxy.app import bridge

from ..fakes import (
    Exchange,
    FakeReply,
)
from .test_bridge import (
    Server,
    notification,
    request,
    result,
    serving,
    wait_for_exchanges,
    with_upstream,
)

pytestmark = pytest.mark.anyio


async def test_requests_beyond_max_in_flight_wait_and_none_is_dropped() -> None:
    release = anyio.Event()
    arrived = anyio.Event()

    async def held(exchange: Exchange) -> FakeReply:
        arrived.set()
        await release.wait()
        return FakeReply(
            200,
            {"content-type": "application/json"},
            [json.dumps(result(exchange.document["id"], "done")).encode()],
        )

    async with serving(
        Server(**{"tools/call": held}), config=with_upstream(max_in_flight=2)
    ) as session:
        for n in range(1, 6):
            await session.send(request(n, "tools/call", name="slow"))
        while len(session.upstream.posts()) < 2:
            await session.upstream.changed.wait()
        await session.send(notification("notifications/message"))  # not held back
        while len(session.upstream.posts()) < 3:
            await session.upstream.changed.wait()
        calls_while_held = len(session.upstream.posts("tools/call"))
        release.set()
        answers = [await session.receive() for _ in range(5)]
    assert calls_while_held == 2
    assert sorted(a["id"] for a in answers) == [1, 2, 3, 4, 5]
    assert all(a["result"] == "done" for a in answers)


async def test_a_waiting_request_can_be_cancelled_and_is_never_sent() -> None:
    release = anyio.Event()

    async def held(exchange: Exchange) -> FakeReply:
        await release.wait()
        return FakeReply(
            200,
            {"content-type": "application/json"},
            [json.dumps(result(exchange.document["id"], "done")).encode()],
        )

    async with serving(
        Server(**{"tools/call": held}), config=with_upstream(max_in_flight=1)
    ) as session:
        await session.send(request(1, "tools/call", name="slow"))
        await session.send(request(2, "tools/call", name="queued"))
        await session.send(notification("notifications/cancelled", requestId=2))
        while not session.upstream.posts("notifications/cancelled"):
            await session.upstream.changed.wait()
        release.set()
        first = await session.receive()
        await session.send(request(3, "ping"))
        after = await session.receive()
    assert first == result(1, "done")
    assert after["id"] == 3  # request 2 got no answer: the client cancelled it
    assert [p.document["params"]["name"] for p in session.upstream.posts("tools/call")] == ["slow"]


async def test_a_line_over_max_message_bytes_is_refused_and_the_next_one_served() -> None:
    async with serving(Server(), config=with_upstream(max_message_bytes=1024)) as session:
        big = request(1, "tools/call", name="x", arguments={"blob": "a" * 2000})
        refused = await session.call(big)
        served = await session.call(request(2, "ping"))
    assert refused["error"]["code"] == -32600
    assert "larger than this proxy accepts" in refused["error"]["message"]
    assert served["id"] == 2
    assert len(session.upstream.posts()) == 1


async def test_an_upstream_message_over_max_message_bytes_names_the_setting() -> None:
    async def huge(exchange: Exchange) -> FakeReply:
        body = json.dumps(result(exchange.document["id"], "b" * 4096)).encode()
        return FakeReply(200, {"content-type": "text/event-stream"}, [b"data: " + body + b"\n\n"])

    config = with_upstream(max_message_bytes=1024)
    async with serving(Server(**{"resources/read": huge}), config=config) as session:
        answer = await session.call(request(1, "resources/read", uri="file:///big"))
    assert "larger than 1024 bytes" in answer["error"]["message"]
    assert "UPSTREAM_MAX_MESSAGE_BYTES" in answer["error"]["message"]


async def test_a_slow_stdout_reader_holds_the_upstream_back() -> None:
    """While nobody reads stdout, the proxy reads no further from the upstream's stream than
    the one message it is trying to write: the server (over TCP) is held back, not buffered."""
    pulled: list[int] = []

    async def notifications() -> AsyncGenerator[bytes, None]:
        for n in range(1000):
            pulled.append(n)
            message = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"n": n}}
            yield f"data: {json.dumps(message)}\n\n".encode()

    class Flood(FakeReply):
        def chunks(self) -> AsyncGenerator[bytes, None]:
            return notifications()

    async def flood(exchange: Exchange) -> FakeReply:
        return Flood(200, {"content-type": "text/event-stream"})

    async with serving(Server(**{"tools/call": flood}), stdout_buffer=0) as session:
        await session.send(request(1, "tools/call", name="x"))
        first = await session.receive()
        for _ in range(5):  # let the proxy run as far as it can without a reader
            await anyio.wait_all_tasks_blocked()
        pulled_while_stalled = len(pulled)
        rest = [await session.receive() for _ in range(3)]
        await session.send(notification("notifications/cancelled", requestId=1))
    assert first["params"] == {"n": 0}
    assert [m["params"]["n"] for m in rest] == [1, 2, 3]
    assert pulled_while_stalled <= 3


async def test_an_answer_waiting_for_a_slow_reader_is_not_lost_to_the_timeout() -> None:
    """A response already taken from the upstream is written even when the client reads it
    only after upstream.timeoutMs: the timeout must not cancel the write and leave the
    request with no answer at all."""
    async with serving(Server(), config=with_upstream(timeout_ms=200), stdout_buffer=0) as session:
        for n in (1, 2):
            await session.send(request(n, "tools/call", name="x"))
        await wait_for_exchanges(session.upstream, 2)
        await anyio.sleep(0.5)  # the client reads nothing for longer than the timeout
        answers = [await session.receive() for _ in range(2)]
    assert sorted(a["id"] for a in answers) == [1, 2]
    assert all("result" in a for a in answers)


async def test_input_is_held_back_while_waiting_requests_hold_too_much(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the waiting-bytes limit the proxy reads no further line: the client's next write
    blocks (backpressure through the pipe) until a waiting request gets its slot."""
    monkeypatch.setattr(bridge, "WAITING_BYTES_LIMIT", 100)
    release = anyio.Event()

    async def held(exchange: Exchange) -> FakeReply:
        await release.wait()
        return FakeReply(
            200,
            {"content-type": "application/json"},
            [json.dumps(result(exchange.document["id"], "done")).encode()],
        )

    config = with_upstream(max_in_flight=1)
    server = Server(**{"tools/call": held})
    async with serving(server, config=config, stdin_buffer=0) as session:
        await session.send(request(1, "tools/call", name="holds the slot"))
        await session.send(request(2, "tools/call", name="waits", arguments={"pad": "x" * 200}))
        await anyio.wait_all_tasks_blocked()
        line = json.dumps(request(3, "ping")).encode() + b"\n"
        with pytest.raises(anyio.WouldBlock):
            session.stdin.send_nowait(line)  # nobody is reading stdin now
        release.set()
        await session.stdin.send(line)  # read again once request 2 went out
        answers = [await session.receive() for _ in range(3)]
    assert sorted(a["id"] for a in answers) == [1, 2, 3]
