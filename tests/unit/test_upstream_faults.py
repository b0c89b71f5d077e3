"""The upstream rows of the fault matrix (docs/reliability.md): for each fault, what the client
sees, what the log says, and whether the message is sent again. A tool call that may have
reached the server is never sent twice; a read-only request, or one that provably never ran,
may be."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import anyio
import pytest
from anyio.abc import SocketStream

from mcp_oauth2_proxy.domain.backoff import Backoff
from mcp_oauth2_proxy.domain.errors import UpstreamError, UpstreamUnreachableError

from ..fakes import Exchange, FakeReply, json_response
from .test_bridge import Server, request, result, serving, wait_for_exchanges, with_upstream
from .test_http_upstream import answers, config, loopback

pytestmark = pytest.mark.anyio

CALL = request(1, "tools/call", name="send_email", arguments={"to": "a@example.com"})
LIST = request(2, "tools/list")
REQUEST_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def infos_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]


# --- connection refused -------------------------------------------------------------------


async def test_refused_connections_are_tried_again_even_for_a_tool_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No connection means nothing was sent: the tool call is safe to send again."""
    refusals = 2

    async def restarting(exchange: Exchange) -> FakeReply:
        if len(server_posts()) <= refusals:
            raise UpstreamUnreachableError("could not reach the upstream: connection refused")
        return await Server()(exchange)

    async with serving(restarting) as session:
        server_posts = session.upstream.posts
        caplog.set_level(logging.INFO, "mcp_oauth2_proxy")
        answer = await session.call(CALL)
    assert answer == result(1, {"echo": CALL["params"]})
    assert len(session.upstream.posts("tools/call")) == refusals + 1
    assert infos_of(caplog).count("the upstream did not answer; sending the message again") == 2


async def test_an_upstream_that_stays_down_gets_an_error_after_three_tries() -> None:
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
    (answer,) = await answers(config(f"http://127.0.0.1:{port}/mcp"), CALL)
    assert answer["id"] == 1
    assert answer["error"]["code"] == -32000
    assert answer["error"]["message"].startswith("could not reach the upstream http://127.0.0.1")
    assert "UPSTREAM_URL" in answer["error"]["message"]


# --- reset in the middle of the body --------------------------------------------------------


def half_json_answer(counter: list[int]) -> Callable[[SocketStream], Awaitable[None]]:
    async def handler(stream: SocketStream) -> None:
        async with stream:
            await stream.receive()
            counter.append(1)
            await stream.send(REQUEST_HEAD + b'content-length: 80\r\n\r\n{"jsonrpc":"2.0",')

    return handler


async def test_a_reset_mid_body_fails_a_tool_call_without_sending_it_again() -> None:
    posts: list[int] = []
    async with loopback(half_json_answer(posts)) as url:
        (answer,) = await answers(config(url), CALL)
    assert answer["id"] == 1
    assert answer["error"]["code"] == -32000
    assert "broke mid-response" in answer["error"]["message"]
    assert len(posts) == 1  # it may have sent the email: never twice


async def test_a_reset_mid_body_sends_a_read_only_request_again() -> None:
    posts: list[int] = []

    async def flaky(stream: SocketStream) -> None:
        if not posts:
            await half_json_answer(posts)(stream)
            return
        async with stream:
            await stream.receive()
            posts.append(1)
            body = json.dumps(result(2, {"tools": []})).encode()
            await stream.send(REQUEST_HEAD + b"content-length: %d\r\n\r\n" % len(body) + body)

    async with loopback(flaky) as url:
        (answer,) = await answers(config(url), LIST)
    assert answer == result(2, {"tools": []})
    assert len(posts) == 2


# --- slow headers, slow body, timeouts ------------------------------------------------------


async def test_slow_headers_time_out_with_the_setting_named_and_no_resend() -> None:
    posts: list[int] = []

    async def silent(stream: SocketStream) -> None:
        async with stream:
            await stream.receive()
            posts.append(1)
            await anyio.sleep_forever()

    async with loopback(silent) as url:
        (answer,) = await answers(config(url, timeout_ms=300), CALL)
    assert answer["error"]["message"].startswith("upstream timed out after 300 ms")
    assert "UPSTREAM_TIMEOUT_MS" in answer["error"]["message"]
    assert len(posts) == 1


async def test_a_slow_body_times_out_too() -> None:
    async def trickle(stream: SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(REQUEST_HEAD + b"content-length: 1000\r\n\r\n{")
            for _ in range(100):
                await anyio.sleep(0.05)
                await stream.send(b" ")

    async with loopback(trickle) as url:
        (answer,) = await answers(config(url, timeout_ms=300), CALL)
    assert answer["error"]["message"].startswith("upstream timed out after 300 ms")


async def test_a_response_stream_that_never_ends_times_out_despite_progress() -> None:
    """Progress and keep-alive comments do not extend upstream.timeoutMs."""
    progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}

    async def endless(exchange: Exchange) -> FakeReply:
        return FakeReply(
            200,
            {"content-type": "text/event-stream"},
            [f"data: {json.dumps(progress)}\n\n".encode(), b": keep-alive\n\n"],
            hold=anyio.Event(),
        )

    config = with_upstream(timeout_ms=300)
    async with serving(Server(**{"tools/call": endless}), config=config) as session:
        first = await session.call(CALL)
        answer = await session.receive()
    assert first == progress
    assert answer["id"] == 1
    assert answer["error"]["message"].startswith("upstream timed out after 300 ms")
    assert len(session.upstream.posts("tools/call")) == 1


# --- HTTP errors ----------------------------------------------------------------------------


async def test_a_500_is_shown_with_its_status_and_body_and_never_sent_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(exchange: Exchange) -> FakeReply:
        return FakeReply(500, {"content-type": "text/html"}, [b"<h1>database down</h1>"])

    async with serving(Server(**{"tools/call": broken, "tools/list": broken})) as session:
        call = await session.call(CALL)
        listing = await session.call(LIST)
    for answer in (call, listing):
        assert answer["error"]["code"] == -32001
        assert answer["error"]["message"] == "upstream answered HTTP 500: <h1>database down</h1>"
        assert answer["error"]["data"]["status"] == 500
    assert len(session.upstream.posts()) == 2
    assert "answering a request with an error" in warnings_of(caplog)


async def test_a_503_fails_a_tool_call_at_once_but_a_listing_is_asked_again() -> None:
    unavailable = 0

    async def overloaded(exchange: Exchange) -> FakeReply:
        nonlocal unavailable
        if unavailable < 2:
            unavailable += 1
            return FakeReply(503, {"content-type": "text/plain"}, [b"overloaded"])
        return json_response(result(exchange.document["id"], {"tools": []}))

    async with serving(Server(**{"tools/call": overloaded, "tools/list": overloaded})) as session:
        call = await session.call(CALL)
        listing = await session.call(LIST)
    assert call["error"]["message"] == "upstream answered HTTP 503: overloaded"
    assert listing == result(2, {"tools": []})
    assert len(session.upstream.posts("tools/call")) == 1
    assert len(session.upstream.posts("tools/list")) == 2


async def test_a_429_with_retry_after_sends_even_a_tool_call_again() -> None:
    """429 refuses before running: the call did not happen, so it is sent again."""
    limited = 0

    async def rate_limited(exchange: Exchange) -> FakeReply:
        nonlocal limited
        if limited == 0:
            limited += 1
            return FakeReply(429, {"retry-after": "0"}, [b"slow down"])
        return json_response(result(exchange.document["id"], {"sent": True}))

    async with serving(Server(**{"tools/call": rate_limited})) as session:
        answer = await session.call(CALL)
    assert answer == result(1, {"sent": True})
    assert len(session.upstream.posts("tools/call")) == 2


async def test_a_429_asking_for_a_long_wait_is_an_error_that_says_so() -> None:
    async def rate_limited(exchange: Exchange) -> FakeReply:
        return FakeReply(429, {"retry-after": "120"}, [b"quota exhausted"])

    async with serving(Server(**{"tools/call": rate_limited})) as session:
        answer = await session.call(CALL)
    message = answer["error"]["message"]
    assert message.startswith("upstream answered HTTP 429 Too Many Requests (Retry-After: 120)")
    assert "try again later" in message
    assert message.endswith("The server said: quota exhausted")
    assert answer["error"]["data"]["status"] == 429
    assert len(session.upstream.posts("tools/call")) == 1


async def test_a_json_rpc_error_in_a_503_is_the_servers_answer_and_is_passed_on() -> None:
    own_error = {"jsonrpc": "2.0", "id": 2, "error": {"code": -32603, "message": "index busy"}}

    async def busy(exchange: Exchange) -> FakeReply:
        return json_response(own_error, status=503)

    async with serving(Server(**{"tools/list": busy})) as session:
        answer = await session.call(LIST)
    assert answer == own_error
    assert len(session.upstream.posts("tools/list")) == 1


# --- what the upstream sends back -----------------------------------------------------------


async def test_invalid_json_gets_an_error_that_shows_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def garbled(exchange: Exchange) -> FakeReply:
        return FakeReply(200, {"content-type": "application/json"}, [b"<html>oops</html>"])

    async with serving(Server(**{"tools/call": garbled})) as session:
        answer = await session.call(CALL)
    assert answer["id"] == 1
    assert answer["error"]["code"] == -32000
    assert answer["error"]["message"] == (
        "the upstream ended its answer without a response to this request; "
        "it sent data that is not JSON-RPC: <html>oops</html>"
    )
    assert "dropped upstream data that is not JSON-RPC" in warnings_of(caplog)


async def test_a_response_with_an_unknown_id_is_dropped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def confused(exchange: Exchange) -> FakeReply:
        stray = result(99, {"not": "yours"})
        own = result(exchange.document["id"], {"ok": True})
        events = [f"data: {json.dumps(d)}\n\n".encode() for d in (stray, own, own)]
        return FakeReply(200, {"content-type": "text/event-stream"}, events)

    async with serving(Server(**{"tools/call": confused})) as session:
        answer = await session.call(CALL)
        second = await session.call(LIST)
    assert answer == result(1, {"ok": True})
    assert second["id"] == 2  # nothing else came in between: no stray, no duplicate
    dropped = "dropped an upstream response to no request waiting for one"
    assert warnings_of(caplog).count(dropped) == 1  # the stray; the stream ends at the answer


async def test_a_response_on_another_requests_stream_is_delivered_once() -> None:
    """A server may answer request 2 on request 1's stream (the spec allows any stream of
    the session); request 2's own answer then ends without it, and no error follows."""
    released = anyio.Event()

    async def carries_both(exchange: Exchange) -> FakeReply:
        await released.wait()
        events = [
            f"data: {json.dumps(result(2, {'tools': []}))}\n\n".encode(),
            f"data: {json.dumps(result(1, {'sent': True}))}\n\n".encode(),
        ]
        return FakeReply(200, {"content-type": "text/event-stream"}, events)

    list_may_end = anyio.Event()

    async def empty(exchange: Exchange) -> FakeReply:
        released.set()
        return FakeReply(200, {"content-type": "text/event-stream"}, [], hold=list_may_end)

    async with serving(Server(**{"tools/call": carries_both, "tools/list": empty})) as session:
        await session.send(CALL)
        await session.send(LIST)
        lines = [await session.receive() for _ in range(2)]
        list_may_end.set()  # request 2's own stream ends with nothing: no error may follow
        await session.send(request(3, "ping"))
        after = await session.receive()
    assert sorted(line["id"] for line in lines) == [1, 2]
    assert all("result" in line for line in lines)
    assert after["id"] == 3


async def test_a_broken_connection_before_any_answer_is_an_error_for_a_tool_call() -> None:
    async def breaks(exchange: Exchange) -> FakeReply:
        raise UpstreamError("the connection to the upstream failed before it answered: reset")

    async with serving(Server(**{"tools/call": breaks})) as session:
        answer = await session.call(CALL)
    assert answer["error"]["message"].startswith("the connection to the upstream failed")
    assert len(session.upstream.posts("tools/call")) == 1


async def test_a_stream_broken_mid_event_is_resumed_without_the_broken_half() -> None:
    """The resumed stream sends the cut-off event again in full; the half that arrived before
    the break must not be glued to it (that would garble the response)."""
    half = b'id: e1\nretry: 0\ndata: \n\nid: e2\ndata: {"jsonrpc":"2.0","id":1,'

    async def cut_off(exchange: Exchange) -> FakeReply:
        return FakeReply(
            200,
            {"content-type": "text/event-stream"},
            [half],
            fail_after_chunks=UpstreamError("the upstream connection broke mid-response: reset"),
        )

    server = Server(**{"tools/call": cut_off})

    async def handler(exchange: Exchange) -> FakeReply:
        if exchange.method == "GET" and exchange.headers.get("Last-Event-ID") == "e1":
            again = f"id: e2\ndata: {json.dumps(result(1, 'whole'))}\n\n".encode()
            return FakeReply(200, {"content-type": "text/event-stream"}, [again])
        return await server(exchange)

    async with serving(handler) as session:
        await session.start()
        answer = await session.call(CALL)
    assert answer == result(1, "whole")
    assert len(session.upstream.posts("tools/call")) == 1


async def test_a_request_reusing_an_id_in_flight_is_refused_and_the_first_goes_on() -> None:
    release = anyio.Event()

    async def held(exchange: Exchange) -> FakeReply:
        await release.wait()
        return json_response(result(exchange.document["id"], "first"))

    async with serving(Server(**{"tools/call": held})) as session:
        await session.send(CALL)
        await wait_for_exchanges(session.upstream, 1)
        refused = await session.call({**CALL, "params": {"name": "other"}})
        release.set()
        answer = await session.receive()
    assert refused["error"]["code"] == -32600
    assert "still in flight" in refused["error"]["message"]
    assert answer == result(1, "first")
    assert len(session.upstream.posts("tools/call")) == 1


async def primed_then_broken(exchange: Exchange) -> FakeReply:
    return FakeReply(
        200,
        {"content-type": "text/event-stream"},
        [b"id: e1\nretry: 0\ndata: \n\n"],
        fail_after_chunks=UpstreamError("the upstream connection broke mid-response: reset"),
    )


async def test_a_resume_that_meets_a_restart_or_an_expired_token_tries_again() -> None:
    """The call ran; its stream broke. The resume GET is refused once (the server is
    restarting) and then rejected once (the token expired meanwhile): both are worth another
    attempt, and the client gets the result the server kept."""
    gets: list[str] = []

    server = Server(**{"tools/call": primed_then_broken})

    async def handler(exchange: Exchange) -> FakeReply:
        if exchange.method == "GET" and "Last-Event-ID" in exchange.headers:
            gets.append(exchange.headers["Authorization"])
            if len(gets) == 1:
                raise UpstreamUnreachableError("could not reach the upstream: refused")
            if len(gets) == 2:
                return FakeReply(401)
            again = f"id: e2\ndata: {json.dumps(result(1, 'kept'))}\n\n".encode()
            return FakeReply(200, {"content-type": "text/event-stream"}, [again])
        return await server(exchange)

    async with serving(handler) as session:
        await session.start()
        answer = await session.call(CALL)
    assert answer == result(1, "kept")
    assert gets == ["Bearer token-1", "Bearer token-1", "Bearer token-2"]
    assert len(session.upstream.posts("tools/call")) == 1


async def test_a_resume_that_never_connects_says_the_call_may_have_run() -> None:
    server = Server(**{"tools/call": primed_then_broken})

    async def handler(exchange: Exchange) -> FakeReply:
        if exchange.method == "GET" and "Last-Event-ID" in exchange.headers:
            raise UpstreamUnreachableError("could not reach the upstream: refused")
        return await server(exchange)

    async with serving(handler, backoff=Backoff(base_seconds=0.01)) as session:
        await session.start()
        answer = await session.call(CALL)
    message = answer["error"]["message"]
    assert message.startswith("the response stream broke off and could not be resumed (")
    assert message.endswith("the server may have run the request")
    assert len(session.upstream.posts("tools/call")) == 1
