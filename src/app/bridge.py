"""The bridge: every client message to the upstream, every upstream message to the client.

Each client message is dispatched as soon as it is read (a request to one of up to
upstream.maxInFlight long-lived workers, anything else to a task of its own), so a slow tool
call never holds up a ping, another call or a cancellation. What must be ordered is ordered by
barriers rather than by serialising: `initialize` and `notifications/initialized` each hold
back the messages read after them until they have been delivered, so nothing reaches the
server before its session exists (MCP lifecycle §Initialization). On the stateless
2026-07-28 wire there is no handshake and nothing waits.

Every request the client sends gets exactly one answer on stdout: the upstream's response,
or a JSON-RPC error saying what went wrong and what to set (docs/bridge.md lists them).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from ..adapters.stderr_log import TRACE, package_logger
from ..domain.backoff import Backoff
from ..domain.config import UpstreamConfig
from ..domain.discovery import bearer_challenge
from ..domain.errors import ClientGone, OAuthError, UpstreamError, UpstreamUnreachableError
from ..domain.jsonrpc import (
    BATCH_REFUSED,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    UPSTREAM_HTTP_ERROR,
    UPSTREAM_TRANSPORT_ERROR,
    Batch,
    Invalid,
    JsonId,
    Kind,
    Message,
    compact,
    error_line,
    parse_client_line,
    parse_upstream_body,
)
from ..domain.line_framing import Oversized
from ..domain.ports import ClientChannel, UpstreamReply, UpstreamTransport
from ..domain.redaction import Redactor
from ..domain.retry_after import MAX_RETRY_WAIT_SECONDS, retry_after_seconds
from ..domain.retry_policy import PERSISTENT_401_ADVICE, Next, RetryOn401, step_up_scope
from ..domain.sse import OversizedEvent, SseDecoder, SseEvent
from ..domain.tool_headers import HeaderParam, InvalidAnnotation, header_params, param_headers
from ..domain.upstream_retry import UNAVAILABLE_STATUSES, Failure, UpstreamRetry
from ..domain.wire import (
    CANCELLED,
    EVENT_STREAM,
    INITIALIZE,
    INITIALIZED,
    WireState,
    modern_version,
)
from .legacy_sse import LegacySse
from .token_manager import TokenManager

log = package_logger()

ERROR_BODY_BYTES = 2048
SHOWN_BODY_CHARS = 300
SHUTDOWN_GRACE_SECONDS = 1.5
# How long an answer may wait for the client to read it once it is due (see `_answer`).
ANSWER_WRITE_SECONDS = 30.0
RESUME_ATTEMPTS = 5
DELETE_TIMEOUT_SECONDS = 2.0
# Requests that legitimately stay open as long as the client wants (2026-07-28
# subscriptions/listen): the upstream timeout does not cut them.
LONG_LIVED_METHODS = frozenset({"subscriptions/listen"})
UNQUEUED_METHODS = LONG_LIVED_METHODS | {"ping"}
TOOLS_LIST = "tools/list"
BATCH_VERSION = "2025-03-26"
TOOLS_CALL = "tools/call"
# While requests waiting for an upstream slot hold more than this, the proxy stops reading
# its input: a client that writes faster than the upstream answers is held back by the pipe
# (its writes block), instead of this process buffering without bound.
WAITING_BYTES_LIMIT = 64 * 1024 * 1024


# A request waiting for a worker: the message, the barrier it waits for, the barrier it
# holds (if any) and its cancel scope.
_Job = tuple[Message, anyio.Event, anyio.Event | None, anyio.CancelScope]


@dataclass
class _InFlight:
    """A client request waiting for its answer."""

    scope: anyio.CancelScope
    modern: bool
    cancelled: bool = False
    # Set when the client has been given its answer (or error); nothing more goes out for it.
    answered: bool = False


@dataclass
class _Delivery:
    """What happened to one message: whether its request was answered."""

    message: Message
    answered: bool = False
    oversized: bool = False
    # Upstream messages written to the client for this delivery; none means a read-only
    # request may be sent again without the client seeing anything twice.
    forwarded: int = 0
    # Upstream data that was not JSON-RPC, kept for the error that explains the failure.
    garbled: str | None = None
    initialize_result: dict[str, object] | None = field(default=None)
    # The decoder of the request's event stream, kept for resuming it if it breaks off.
    stream: SseDecoder | None = None


@dataclass
class _Tries:
    """What one message has been through so far; each resend is bounded by these."""

    moves_seen: int
    renewals: int = 0
    failures: int = 0
    stepped_up: bool = False
    moved: bool = False
    renewed_session: bool = False


@dataclass(frozen=True)
class _Outcome:
    """What one POST came to, and so what happens next."""

    status: int = 0
    required: str | None = None
    step: Next = Next.DELIVER
    fall_back: bool = False
    expired: bool = False
    # Send the message again after this many seconds.
    wait: float | None = None


class Bridge:
    """Carries one client's MCP session to the upstream until stdin ends."""

    def __init__(
        self,
        channel: ClientChannel,
        upstream: UpstreamTransport,
        tokens: TokenManager,
        config: UpstreamConfig,
        redactor: Redactor,
        *,
        policy: RetryOn401 | None = None,
        retry: UpstreamRetry | None = None,
        backoff: Backoff | None = None,
        draw: Callable[[], float] = random.random,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._channel = channel
        self._upstream = upstream
        self._tokens = tokens
        self._config = config
        self._redactor = redactor
        self._policy = policy or RetryOn401()
        self._retry = retry or UpstreamRetry()
        self._backoff = backoff or Backoff()
        self._draw = draw
        self._now = now
        self._max_bytes = config.max_message_bytes
        # At most upstream.maxInFlight requests wait on the upstream, each carried by one of
        # as many long-lived workers; the rest wait in `_queue`, in arrival order, while
        # responses, notifications and cancellations keep flowing (each in a task of its own).
        self._queue: deque[_Job] = deque()
        self._sleepers: deque[anyio.Event] = deque()
        self._workers = 0
        self._waiting_bytes = 0
        self._room = _set_event()
        self._state = WireState(configured_version=config.protocol_version)
        self._barrier = _set_event()
        self._inflight: dict[JsonId, _InFlight] = {}
        self._idle = _set_event()
        self._stream_started = False
        self._tasks: anyio.abc.TaskGroup | None = None
        self._reading = anyio.CancelScope()
        self._gone = False
        self._modern_seen = False
        self._tool_params: dict[str, tuple[HeaderParam, ...]] = {}
        self._legacy: LegacySse | None = None
        self._legacy_lock = anyio.Lock()
        # The client's initialize, replayed to start a new session when the old one expires.
        self._initialize: Message | None = None
        self._session_lock = anyio.Lock()
        self._renewals_finished = 0
        self._renewal_error: UpstreamError | None = None

    async def run(self) -> None:
        """Serve until the client's input ends, `stop()` is called or the client stops
        reading; then give in-flight requests a grace period and end the session."""
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            with self._reading:
                try:
                    await self._read_client()
                except ClientGone:
                    self._client_gone()
            await self._drain()
            tasks.cancel_scope.cancel()
        await self._end_session()

    def stop(self) -> None:
        """Stop reading the client (SIGINT, SIGTERM) and shut down as on end of input."""
        self._reading.cancel()

    def _client_gone(self) -> None:
        if not self._gone:
            self._gone = True
            log.info("the MCP client stopped reading stdout; shutting down")
        self._reading.cancel()

    async def _read_client(self) -> None:
        async for line in self._channel.lines():
            if isinstance(line, Oversized):
                log.warning("refused an oversized line from the client")
                await self._send(
                    error_line(
                        None,
                        INVALID_REQUEST,
                        "Invalid Request: the message is larger than this proxy accepts",
                    )
                )
                continue
            parsed = parse_client_line(line)
            if isinstance(parsed, Batch):
                if BATCH_VERSION not in (self._state.version, self._state.negotiated_version):
                    await self._send(BATCH_REFUSED)
                    continue
                # Each member travels on its own, through the same path as any message (its
                # own POST, 401 handling and errors), and is answered on its own line.
                for member in parsed.messages:
                    await self._dispatch(member)
                await self._admit()
                continue
            if isinstance(parsed, Invalid):
                log.warning(
                    "answered an invalid line from the client", extra={"reason": parsed.reason}
                )
                await self._send(parsed.reply)
                continue
            await self._dispatch(parsed)
            await self._admit()
        log.debug("the client's input ended")

    async def _admit(self) -> None:
        """Read no further while the requests waiting for a slot hold too much."""
        while self._waiting_bytes > WAITING_BYTES_LIMIT:
            log.debug("holding back the client's input until the upstream catches up")
            self._room = anyio.Event()
            await self._room.wait()

    async def _dispatch(self, message: Message) -> None:
        """Start the message's task now; only the barrier it must wait for is decided here,
        in reading order."""
        assert self._tasks is not None
        if message.method == CANCELLED and self._cancel(message):
            return
        if message.kind is Kind.REQUEST and message.id in self._inflight:
            # Its answer could not be told from the first one's (MCP: ids are never reused
            # within a session); the first request goes on.
            log.warning("refused a request whose id is already in flight")
            await self._send(
                error_line(
                    message.id,
                    INVALID_REQUEST,
                    "Invalid Request: a request with this id is still in flight; use a new id",
                )
            )
            return
        gate = self._barrier
        done: anyio.Event | None = None
        if message.method in (INITIALIZE, INITIALIZED) and modern_version(message) is None:
            done = anyio.Event()
            self._barrier = done
        scope = anyio.CancelScope()
        modern = modern_version(message) is not None
        self._modern_seen = self._modern_seen or modern
        if message.kind is Kind.REQUEST:
            self._inflight[message.id] = _InFlight(scope, modern)
            if self._idle.is_set():
                self._idle = anyio.Event()
        if _needs_slot(message):
            self._waiting_bytes += len(message.raw)
            self._queue.append((message, gate, done, scope))
            if self._sleepers:
                self._sleepers.popleft().set()
            elif self._workers < self._config.max_in_flight:
                self._workers += 1
                self._tasks.start_soon(self._work)
        else:
            self._tasks.start_soon(self._handle, message, gate, done, scope)

    def _cancel(self, message: Message) -> bool:
        """Handle the client's notifications/cancelled; True when nothing is left to post.

        The cancelled request's answer is not written (the client no longer expects it). On
        the 2026-07-28 wire closing its response stream is the cancellation, so nothing is
        posted; on the 2025 wire the notification goes to the server.
        """
        request_id = message.params.get("requestId")
        pending = self._inflight.get(request_id) if _hashable(request_id) else None
        if pending is None:
            # Nothing in flight to cancel; on the stateless wire there is nothing to post.
            return self._modern_seen
        pending.cancelled = True
        pending.scope.cancel()
        return pending.modern

    async def _work(self) -> None:
        """Carry waiting requests to the upstream, the longest-waiting first, for as long as
        the bridge runs. Long-lived workers instead of a task per request: starting an anyio
        task costs more than the rest of the proxy's own work on a message
        (docs/performance.md)."""
        while True:
            while not self._queue:
                wake = anyio.Event()
                self._sleepers.append(wake)
                await wake.wait()
            job = self._queue.popleft()
            self._leave_queue(job[0])
            await self._handle(*job)

    async def _handle(
        self,
        message: Message,
        gate: anyio.Event,
        done: anyio.Event | None,
        scope: anyio.CancelScope,
    ) -> None:
        try:
            with scope:
                if not gate.is_set():
                    await gate.wait()
                # A request cancelled before its turn is never sent. (Checked here because a
                # cancelled scope stops its task only at the next wait, and a request can
                # leave on a pooled connection without one.)
                if not scope.cancel_called:
                    await self._deliver_or_explain(message)
        except ClientGone:
            self._client_gone()
        except Exception:
            # A bug of ours must not leave the client waiting for an answer forever.
            log.exception("unexpected failure while forwarding a message")
            with anyio.CancelScope(shield=True):
                try:
                    await self._fail(
                        message,
                        INTERNAL_ERROR,
                        "internal error in the proxy; see its log on stderr",
                    )
                except ClientGone:
                    self._client_gone()
        finally:
            if done is not None:
                done.set()
            if message.kind is Kind.REQUEST:
                self._inflight.pop(message.id, None)
                if not self._inflight:
                    self._idle.set()

    def _leave_queue(self, message: Message) -> None:
        """The message no longer waits; wake the reader if it held back for room."""
        self._waiting_bytes -= len(message.raw)
        if self._waiting_bytes <= WAITING_BYTES_LIMIT:
            self._room.set()

    async def _deliver_or_explain(self, message: Message) -> None:
        try:
            delivery = await self._deliver(message)
        except TimeoutError:
            await self._fail(
                message,
                UPSTREAM_TRANSPORT_ERROR,
                f"upstream timed out after {self._config.timeout_ms} ms; raise "
                "upstream.timeoutMs / UPSTREAM_TIMEOUT_MS if the server needs longer",
            )
            return
        except UpstreamError as error:
            await self._fail(message, UPSTREAM_TRANSPORT_ERROR, str(error))
            return
        except OAuthError as error:
            await self._fail(
                message,
                UPSTREAM_TRANSPORT_ERROR,
                f"could not obtain an access token for the upstream: {error}",
            )
            return
        if message.kind is Kind.REQUEST and not delivery.answered:
            reason = "the upstream ended its answer without a response to this request"
            if delivery.oversized:
                reason += (
                    f"; it sent a message larger than {self._max_bytes} bytes, which was "
                    "dropped (raise upstream.maxMessageBytes / UPSTREAM_MAX_MESSAGE_BYTES "
                    "if the server's answers are that large)"
                )
            if delivery.garbled is not None:
                reason += f"; it sent data that is not JSON-RPC: {delivery.garbled}"
            await self._fail(message, UPSTREAM_TRANSPORT_ERROR, reason)
        if delivery.initialize_result is not None:
            self._on_initialized_session()
        if message.method == INITIALIZED and modern_version(message) is None:
            self._start_server_stream()

    async def _deliver(self, message: Message) -> _Delivery:
        """POST the message and relay the answer. The upstream deadline covers each HTTP
        exchange, not the token work between them: a browser login for a step-up must not
        be cut short by upstream.timeoutMs."""
        delivery = _Delivery(message)
        limit = math.inf if message.method in LONG_LIVED_METHODS else self._config.timeout_ms / 1000
        legacy_wire = modern_version(message) is None
        if legacy_wire and (self._legacy is not None or self._config.transport == "sse"):
            return await self._deliver_legacy(message, limit)
        tries = _Tries(moves_seen=self._tokens.moves)
        while True:
            token = await self._tokens.token()
            headers = {
                **self._state.post_headers(message),
                **self._param_headers(message),
                "Authorization": token.authorization,
            }
            sent_session = headers.get("Mcp-Session-Id")
            renewals_seen = self._renewals_finished
            outcome = await self._post(delivery, headers, limit, tries)
            if outcome.wait is not None:
                tries.failures += 1
                await anyio.sleep(outcome.wait)
                continue
            if outcome.expired:
                assert sent_session is not None
                tries.renewed_session = True
                await self._renew_session(sent_session, limit, renewals_seen)
                continue
            if outcome.fall_back:
                log.info(
                    "the upstream refused streamable HTTP; trying the HTTP+SSE transport",
                    extra={"status": outcome.status},
                )
                return await self._deliver_legacy(message, limit)
            if outcome.required is None and outcome.step is Next.DELIVER:
                if delivery.stream is not None and not delivery.answered:
                    await self._resume(delivery, delivery.stream, limit)
                return delivery
            if outcome.required is not None:
                tries.stepped_up = True
                if await self._tokens.step_up(outcome.required):
                    continue
                await self._fail(
                    message,
                    UPSTREAM_HTTP_ERROR,
                    f"the upstream needs scope {outcome.required!r} for this request "
                    "(insufficient_scope), and this proxy's grant cannot log in again by "
                    "itself: add the scope to oauth2.scope / OAUTH2_SCOPE and restart",
                    {"status": 403, "scope": outcome.required},
                )
                delivery.answered = True
                return delivery
            if outcome.step is Next.RENEW_AND_RESEND:
                log.info(
                    "the upstream rejected the access token; renewing it and resending",
                    extra={"method": message.method},
                )
                self._tokens.invalidate(token)
                tries.renewals += 1
                continue
            if not tries.moved and await self._tokens.follow_move(tries.moves_seen):
                tries.moved, tries.renewals = True, 0
                continue
            await self._fail(message, UPSTREAM_HTTP_ERROR, PERSISTENT_401_ADVICE, {"status": 401})
            delivery.answered = True
            return delivery

    async def _post(
        self, delivery: _Delivery, headers: Mapping[str, str], limit: float, tries: _Tries
    ) -> _Outcome:
        """One POST of the message: relay its answer, or say what to do next.

        Raises:
            UpstreamError: no answer, and sending again is not safe or not worth it.
            TimeoutError: no complete answer within `limit`.
        """
        message = delivery.message
        try:
            # anyio.fail_after without its generator wrapper: this is on every message's path.
            with anyio.CancelScope(deadline=anyio.current_time() + limit):
                async with self._upstream.exchange("POST", headers, message.raw) as reply:
                    return await self._judge(delivery, reply, headers, tries)
            raise TimeoutError  # only the deadline ends the scope without a return
        except UpstreamUnreachableError as error:
            # No connection, so the message was never sent: safe to send again.
            wait = self._retry_wait(Failure.UNREACHABLE, message, tries.failures, None, error)
            if wait is None:
                raise
            return _Outcome(wait=wait)
        except UpstreamError as error:
            if delivery.forwarded or delivery.answered:
                raise  # part of the answer reached the client; it must not see it twice
            wait = self._retry_wait(Failure.BROKEN, message, tries.failures, None, error)
            if wait is None:
                raise
            delivery.stream = None
            return _Outcome(wait=wait)

    async def _judge(
        self,
        delivery: _Delivery,
        reply: UpstreamReply,
        headers: Mapping[str, str],
        tries: _Tries,
    ) -> _Outcome:
        message = delivery.message
        status = reply.status
        challenge = bearer_challenge(reply.headers.get("www-authenticate"))
        outcome = _Outcome(
            status=status,
            required=step_up_scope(status, challenge, tries.stepped_up),
            step=self._policy.decide(status, tries.renewals),
            # transports §Backwards Compatibility: a server that refuses the first initialize
            # POST this way may speak the HTTP+SSE transport instead.
            fall_back=(
                message.method == INITIALIZE
                and modern_version(message) is None
                and self._config.transport == "auto"
                and status in (400, 404, 405)
            ),
        )
        # transports §Session Management: 404 to a request with a session id means the
        # session is gone (and the request did not run); 429 and an unavailable gateway may
        # be worth another try. Unless the server answered the request itself in JSON-RPC
        # (such as "resource not found"): then that answer is what the client gets.
        session_gone = (
            status == 404
            and "Mcp-Session-Id" in headers
            and self._initialize is not None
            and not tries.renewed_session
        )
        if session_gone or status == 429 or status in UNAVAILABLE_STATUSES:
            body = await reply.read(ERROR_BODY_BYTES)
            if message.kind is Kind.REQUEST and _answers(body, message.id):
                await self._explain_error(delivery, status, body)
                return outcome
            if session_gone:
                return replace(outcome, expired=True)
            failure = Failure.RATE_LIMITED if status == 429 else Failure.UNAVAILABLE
            wait = self._retry_wait(
                failure, message, tries.failures, reply.headers.get("retry-after"), status
            )
            if wait is not None:
                return replace(outcome, wait=wait)
            if status == 429 and message.kind is Kind.REQUEST:
                shown = self._redactor.redact(_shown(body))
                await self._fail(
                    message,
                    UPSTREAM_HTTP_ERROR,
                    _rate_limited(
                        reply.headers.get("retry-after"), shown, self._retry.max_attempts
                    ),
                    {"status": status, "body": shown},
                )
                delivery.answered = True
                return outcome
            await self._explain_error(delivery, status, body)
            return outcome
        if outcome.required is None and outcome.step is Next.DELIVER and not outcome.fall_back:
            session_id = reply.headers.get("mcp-session-id")
            await self._relay(delivery, reply)
            if message.method == INITIALIZE and delivery.initialize_result is not None:
                self._state.learn(delivery.initialize_result, session_id)
                self._initialize = message
        return outcome

    def _retry_wait(
        self,
        failure: Failure,
        message: Message,
        failures: int,
        retry_after: str | None,
        cause: object,
    ) -> float | None:
        """How long to wait before sending `message` again, or None not to (logged)."""
        wait = self._retry.delay(
            failure,
            message.method if message.kind is Kind.REQUEST else None,
            failures,
            self._draw(),
            retry_after_seconds(retry_after, self._now()),
        )
        if wait is not None:
            log.info(
                "the upstream did not answer; sending the message again",
                extra={
                    "method": message.method or "(response)",
                    "reason": failure.value,
                    "detail": str(cause),
                    "in_s": f"{wait:.2f}",
                },
            )
        return wait

    async def _renew_session(self, expired: str, limit: float, renewals_seen: int) -> None:
        """Start a new session with the client's own initialize (its answer is not shown to
        the client again) and notifications/initialized, once for all the requests the old
        session refused.

        Raises:
            UpstreamError: the new session could not be started; the message says so.
        """
        async with self._session_lock:
            if self._state.session_id != expired:
                return  # another request has started the new session already
            if self._renewals_finished != renewals_seen and self._renewal_error is not None:
                # A start that failed after this request was sent: so would another one.
                raise self._renewal_error
            assert self._initialize is not None
            log.warning("the upstream's session expired; starting a new one")
            self._renewal_error = None  # a start cut short leaves waiters to try again
            try:
                await self._start_session(self._initialize, limit)
            except UpstreamError as error:
                self._renewal_error = error
                raise
            finally:
                self._renewals_finished += 1
            log.info("started a new upstream session")

    async def _start_session(self, initialize: Message, limit: float) -> None:
        """Replay `initialize` and post notifications/initialized; the new session is taken
        on only once both are done, so a cancelled or failed start leaves the old one (whose
        next 404 starts over), never a session without its initialized."""
        token = await self._tokens.token()
        with anyio.move_on_after(limit) as waiting:
            result, session_id = await self._initialize_again(initialize, token.authorization)
            fresh = replace(self._state, session_id=None)
            fresh.learn(result, session_id)
            headers = {
                **fresh.post_headers(_INITIALIZED_MESSAGE),
                "Authorization": token.authorization,
            }
            async with self._upstream.exchange("POST", headers, _INITIALIZED_MESSAGE.raw) as reply:
                if reply.status >= 400:
                    raise UpstreamError(
                        f"{_NEW_SESSION_FAILED}: notifications/initialized got HTTP {reply.status}"
                    )
        if waiting.cancelled_caught:
            raise UpstreamError(f"{_NEW_SESSION_FAILED}: no answer within {limit:g} s")
        self._state = fresh

    async def _initialize_again(
        self, initialize: Message, authorization: str
    ) -> tuple[Mapping[str, Any], str | None]:
        headers = {**self._state.post_headers(initialize), "Authorization": authorization}
        async with self._upstream.exchange("POST", headers, initialize.raw) as reply:
            if reply.status >= 400:
                raise UpstreamError(f"{_NEW_SESSION_FAILED}: initialize got HTTP {reply.status}")
            session_id = reply.headers.get("mcp-session-id")
            answer = await _first_response(reply, initialize.id, self._max_bytes)
        result = answer.document.get("result") if answer is not None else None
        if not isinstance(result, dict):
            raise UpstreamError(f"{_NEW_SESSION_FAILED}: initialize got no result")
        return result, session_id

    async def _relay(self, delivery: _Delivery, reply: UpstreamReply) -> None:
        message = delivery.message
        if reply.status >= 400:
            await self._relay_error(delivery, reply)
            return
        content_type = reply.headers.get("content-type", "").split(";")[0].strip().lower()
        if reply.status in (202, 204) or (message.kind is not Kind.REQUEST and not content_type):
            return
        if content_type == EVENT_STREAM:
            await self._relay_events(delivery, reply)
        elif content_type == "application/json":
            body = await reply.read(self._max_bytes + 1)
            if len(body) > self._max_bytes:
                delivery.oversized = True
                return
            await self._forward_body(delivery, body)
        elif message.kind is Kind.REQUEST:
            await self._fail(
                message,
                UPSTREAM_HTTP_ERROR,
                f"upstream answered HTTP {reply.status} with content type "
                f"{content_type or 'none'}, not JSON or an event stream",
                {"status": reply.status},
            )
            delivery.answered = True

    async def _relay_events(self, delivery: _Delivery, reply: UpstreamReply) -> None:
        stream = delivery.stream = delivery.stream or SseDecoder(self._max_bytes)
        try:
            async with aclosing(_events(reply, stream)) as events:
                async for event in events:
                    if isinstance(event, OversizedEvent):
                        delivery.oversized = True
                    else:
                        await self._forward_body(delivery, event.data)
                    if delivery.answered:
                        return
        except UpstreamError as error:
            if stream.last_event_id is None or modern_version(delivery.message) is not None:
                raise
            log.info("the response stream broke off; resuming it", extra={"reason": str(error)})

    async def _resume(self, delivery: _Delivery, stream: SseDecoder, limit: float) -> None:
        """A request's event stream ended before its response: resume it with GET and
        Last-Event-ID after the server's `retry:` delay (2025 wire, transports §Resumability
        and Redelivery). A refused connection (a server restarting) or an expired token is
        one more attempt; a server that does not resume leaves the request to be answered
        with an error. The 2026-07-28 wire has no resumption.

        Raises:
            UpstreamError: the last attempt found no connection; the message says the
                request may have run, so that nobody sends it again on the proxy's word.
        """
        message = delivery.message
        renewed = False
        failure: str | None = None
        for attempt in range(RESUME_ATTEMPTS):
            if delivery.answered or stream.last_event_id is None or modern_version(message):
                return
            delay = (
                stream.retry_ms / 1000
                if stream.retry_ms is not None
                else self._backoff.delay(attempt, self._draw())
            )
            if failure is not None:
                # A server coming back from a restart needs more than its usual `retry:`.
                delay = max(delay, self._backoff.base_seconds * 2**attempt)
            await anyio.sleep(delay)
            token = await self._tokens.token()
            headers = {
                **self._state.stream_headers(stream.last_event_id),
                "Authorization": token.authorization,
            }
            log.debug(
                "resuming an interrupted response stream",
                extra={"method": message.method, "last_event_id": stream.last_event_id},
            )
            stream = delivery.stream = stream.reconnected()
            failure = None
            try:
                with anyio.fail_after(limit):
                    async with self._upstream.exchange("GET", headers) as reply:
                        if reply.status == 401 and not renewed:
                            self._tokens.invalidate(token)
                            renewed = True
                            continue
                        content_type = reply.headers.get("content-type", "")
                        if (
                            reply.status != 200
                            or content_type.split(";")[0].strip() != EVENT_STREAM
                        ):
                            log.warning(
                                "the upstream did not resume the response stream",
                                extra={"status": reply.status},
                            )
                            return
                        await self._relay_events(delivery, reply)
            except UpstreamError as error:
                failure = str(error)
                log.info("could not resume the response stream yet", extra={"reason": failure})
        if failure is not None and not delivery.answered:
            raise UpstreamError(
                f"the response stream broke off and could not be resumed ({failure}); the "
                "server may have run the request"
            )

    async def _forward_body(self, delivery: _Delivery, body: bytes) -> None:
        request = delivery.message
        screen: Callable[[Message], Message] | None = None
        if request.method == TOOLS_LIST and modern_version(request) is not None:

            def screen(message: Message) -> Message:
                return self._screen_tools(message) if _answers_to(request, message) else message

        sent = await self._forward(body, screen)
        if sent is None:
            delivery.garbled = self._redactor.redact(_shown(body))
            return
        delivery.forwarded += len(sent)
        if request.kind is not Kind.REQUEST:
            return
        pending = self._inflight.get(request.id)
        if pending is not None and pending.answered:
            # Answered on another stream (or this one repeats itself): nothing more to wait for.
            delivery.answered = True
        for message in sent:
            if _answers_to(request, message):
                delivery.answered = True
                if request.method == INITIALIZE:
                    result = message.document.get("result")
                    if isinstance(result, dict):
                        delivery.initialize_result = result

    def _screen_tools(self, message: Message) -> Message:
        """Remember each tool's x-mcp-header arguments; leave out tools whose annotations
        are invalid, as the 2026-07-28 spec requires of a client."""
        result = message.document.get("result")
        if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
            return message
        tools: list[object] = result["tools"]
        kept: list[object] = []
        for tool in tools:
            name = tool.get("name") if isinstance(tool, dict) else None
            try:
                params = header_params(tool) if isinstance(tool, dict) else ()
            except InvalidAnnotation as problem:
                log.warning(
                    "left out a tool with an invalid x-mcp-header annotation",
                    extra={"tool": name, "reason": str(problem)},
                )
                continue
            if isinstance(name, str):
                self._tool_params[name] = params
            kept.append(tool)
        if len(kept) == len(tools):
            return message
        document = {**message.document, "result": {**result, "tools": kept}}
        return Message(message.kind, compact(document), document, message.id, message.method)

    def _param_headers(self, message: Message) -> dict[str, str]:
        """`Mcp-Param-*` for a 2026-07-28 tools/call of a tool listed with annotations."""
        if message.method != TOOLS_CALL or modern_version(message) is None:
            return {}
        name = message.params.get("name")
        params = self._tool_params.get(name) if isinstance(name, str) else None
        return param_headers(params, message.params.get("arguments")) if params else {}

    async def _forward(
        self, data: bytes, screen: Callable[[Message], Message] | None = None
    ) -> list[Message] | None:
        """Write the upstream's messages in `data` to the client, one line each (after
        `screen`, which may replace one); return those written, or None when `data` is not
        JSON-RPC.

        A response goes out only for a request still waiting for one: a response the client
        did not ask for, or a second one (a server resending after a resumption), would
        confuse the client, so it is dropped and logged."""
        if not data.strip():
            return []  # an SSE event without data, such as a resumption primer
        try:
            messages = parse_upstream_body(data)
        except ValueError:
            log.warning(
                "dropped upstream data that is not JSON-RPC",
                extra={"data": self._redactor.redact(_shown(data))},
            )
            return None
        if screen is not None:
            messages = [screen(message) for message in messages]
        return [message for message in messages if await self._pass_on(message)]

    async def _pass_on(self, message: Message) -> bool:
        """Write one upstream message to the client; False when it was dropped."""
        if message.kind is not Kind.RESPONSE:
            await self._send(message.raw)
            return True
        if not await self._answer(message.id, message.raw):
            log.warning(
                "dropped an upstream response to no request waiting for one",
                extra={"id": json.dumps(message.id)},
            )
            return False
        return True

    async def _answer(self, request_id: JsonId, line: bytes) -> bool:
        """Write the one answer to a request still waiting for it; False when it is not.

        From the claim on, the request counts as answered, so the write is shielded: a
        timeout or shutdown cancelling it would otherwise leave the request with no answer
        at all. It is bounded, for a client that never reads again."""
        pending = self._inflight.get(request_id) if _hashable(request_id) else None
        if pending is None or pending.answered or pending.cancelled:
            return False
        pending.answered = True
        with anyio.move_on_after(ANSWER_WRITE_SECONDS, shield=True) as writing:
            await self._send(line)
        if writing.cancelled_caught:
            log.warning(
                "the MCP client read no answer for a while; one was not delivered",
                extra={"id": json.dumps(request_id), "waited_s": ANSWER_WRITE_SECONDS},
            )
        return True

    async def _relay_error(self, delivery: _Delivery, reply: UpstreamReply) -> None:
        await self._explain_error(delivery, reply.status, await reply.read(ERROR_BODY_BYTES))

    async def _explain_error(self, delivery: _Delivery, status: int, body: bytes) -> None:
        message = delivery.message
        if message.kind is not Kind.REQUEST:
            log.warning(
                "the upstream refused a client message",
                extra={"method": message.method, "status": status, "body": _shown(body)},
            )
            return
        try:
            answers = [
                m
                for m in parse_upstream_body(body)
                if m.kind is Kind.RESPONSE and m.id == message.id
            ]
        except ValueError:
            answers = []
        if answers:
            # The server answered in JSON-RPC terms: its own error is the best explanation.
            delivery.answered = True
            await self._answer(message.id, self._scrub(answers[0].raw, message.id))
            return
        shown = self._redactor.redact(_shown(body))
        await self._fail(
            message,
            UPSTREAM_HTTP_ERROR,
            f"upstream answered HTTP {status}: {shown}",
            {"status": status, "body": shown},
        )
        delivery.answered = True

    def _scrub(self, raw: bytes, request_id: JsonId) -> bytes:
        """An upstream error as the client may see it: a server that echoes the request's
        Authorization header in its error must not hand our token to the client."""
        text = raw.decode("utf-8", "replace")
        cleaned = self._redactor.redact(text)
        if cleaned == text:
            return raw
        try:
            return compact(json.loads(cleaned))
        except ValueError:
            return error_line(
                request_id,
                UPSTREAM_HTTP_ERROR,
                "the upstream refused the request (its error "
                "message repeated a credential, so it is not shown)",
            )

    async def _fail(
        self, message: Message, code: int, text: str, data: dict[str, object] | None = None
    ) -> None:
        """Answer a failed request with an error; log a failed notification or response."""
        if message.kind is not Kind.REQUEST:
            log.warning(
                "could not deliver a client message",
                extra={"method": message.method or "(response)", "reason": text},
            )
            return
        pending = self._inflight.get(message.id)
        if pending is None or pending.cancelled or pending.answered:
            return
        # Whatever the text quotes (an IdP's or a server's error page) may hold a credential.
        text = self._redactor.redact(text)
        log.warning(
            "answering a request with an error",
            extra={"method": message.method, "code": code, "reason": text},
        )
        await self._answer(message.id, error_line(message.id, code, text, data))

    async def _send(self, line: bytes) -> None:
        log.log(TRACE, "to client", extra={"bytes": len(line)})
        await self._channel.send(line)

    def _on_initialized_session(self) -> None:
        log.info(
            "upstream session started",
            extra={
                "protocol_version": self._state.negotiated_version or "unknown",
                "session": "yes" if self._state.session_id else "no",
            },
        )

    async def _deliver_legacy(self, message: Message, limit: float) -> _Delivery:
        """POST to the HTTP+SSE endpoint; the answer arrives on its event stream."""
        legacy = await self._legacy_session()
        delivery = _Delivery(message)
        if message.kind is Kind.REQUEST:
            legacy.expect(message.id)
        renewals = 0
        while True:
            token = await self._tokens.token()
            headers = {"Content-Type": "application/json", "Authorization": token.authorization}
            with anyio.fail_after(limit):
                async with self._upstream.exchange(
                    "POST", headers, message.raw, url=legacy.endpoint
                ) as reply:
                    step = self._policy.decide(reply.status, renewals)
                    if step is Next.DELIVER and reply.status >= 400:
                        await self._relay_error(delivery, reply)
                        return delivery
            if step is Next.RENEW_AND_RESEND:
                self._tokens.invalidate(token)
                renewals += 1
                continue
            if step is Next.GIVE_UP:
                await self._fail(
                    message, UPSTREAM_HTTP_ERROR, PERSISTENT_401_ADVICE, {"status": 401}
                )
                delivery.answered = True
                return delivery
            break
        if message.kind is Kind.REQUEST:
            with anyio.fail_after(limit):
                delivery.answered = await legacy.answer(message.id)
        return delivery

    async def _legacy_session(self) -> LegacySse:
        async with self._legacy_lock:
            if self._legacy is None:
                assert self._tasks is not None
                legacy = LegacySse(
                    self._upstream, self._tokens, self._config.url, self._pass_on, self._max_bytes
                )
                await legacy.open(self._tasks)
                self._legacy = legacy
            return self._legacy

    def _start_server_stream(self) -> None:
        if self._stream_started or not self._config.open_server_stream or self._tasks is None:
            return
        if self._legacy is not None:
            return  # the HTTP+SSE transport's one stream already carries server messages
        self._stream_started = True
        self._tasks.start_soon(self._server_stream)

    async def _server_stream(self) -> None:
        """Hold the GET stream for server-initiated messages; reconnect with backoff."""
        decoder = SseDecoder(self._max_bytes)
        attempt = 0
        renewed = opened = session_renewed = False
        stream_session = self._state.session_id
        while not self._backoff.exhausted(attempt):
            if self._state.session_id != stream_session:
                # A new session: the old stream's event ids mean nothing to it.
                decoder, session_renewed = SseDecoder(self._max_bytes), False
                stream_session = self._state.session_id
            else:
                decoder = decoder.reconnected()
            token = await self._tokens.token()
            headers = {
                **self._state.stream_headers(decoder.last_event_id),
                "Authorization": token.authorization,
            }
            sent_session = headers.get("Mcp-Session-Id")
            renewals_seen = self._renewals_finished
            try:
                async with self._upstream.exchange("GET", headers) as reply:
                    # A 404 from a server whose stream was open before is its session
                    # expiring; before that, it may just mean there is no stream.
                    expired = (
                        reply.status == 404
                        and opened
                        and sent_session is not None
                        and self._initialize is not None
                        and not session_renewed
                    )
                    if reply.status in (404, 405) and not (expired or opened):
                        log.info(
                            "the upstream offers no server stream; server-initiated "
                            "messages will only arrive with responses",
                            extra={"status": reply.status},
                        )
                        return
                    if reply.status == 401 and not renewed:
                        self._tokens.invalidate(token)
                        renewed = True
                        continue
                    content_type = reply.headers.get("content-type", "").split(";")[0].strip()
                    if expired:
                        pass
                    elif reply.status == 200 and content_type == EVENT_STREAM:
                        renewed = session_renewed = False
                        opened = True
                        log.debug("server stream open")
                        if await self._relay_stream(decoder, reply):
                            # It carried something: a working stream that ended, not a
                            # failure. A stream that opens and closes empty counts as one.
                            attempt = 0
                        log.debug("server stream ended")
                    else:
                        log.warning(
                            "the server stream was refused",
                            extra={"status": reply.status, "body": _shown(await reply.read(512))},
                        )
                if expired:
                    assert sent_session is not None
                    session_renewed = True
                    await self._renew_session(
                        sent_session, self._config.timeout_ms / 1000, renewals_seen
                    )
                    continue
            except (UpstreamError, OAuthError) as error:
                log.warning("server stream failed", extra={"reason": str(error)})
            except ClientGone:
                self._client_gone()
                return
            delay = self._backoff.delay(attempt, self._draw())
            if decoder.retry_ms is not None:
                delay = max(delay, decoder.retry_ms / 1000)
            attempt += 1
            await anyio.sleep(delay)
        log.warning(
            "gave up on the server stream after repeated failures; server-initiated "
            "messages will only arrive with responses",
            extra={"setting": "upstream.openServerStream / UPSTREAM_OPEN_SERVER_STREAM"},
        )

    async def _relay_stream(self, decoder: SseDecoder, reply: UpstreamReply) -> int:
        """Forward the stream's messages; return how many events it carried."""
        events = 0
        async with aclosing(_events(reply, decoder)) as stream:
            async for event in stream:
                if isinstance(event, SseEvent):
                    events += 1
                    await self._forward(event.data)
        return events

    async def _drain(self) -> None:
        """Give in-flight requests a short grace to finish, then answer the rest."""
        with anyio.move_on_after(SHUTDOWN_GRACE_SECONDS):
            await self._idle.wait()
        for request_id, pending in list(self._inflight.items()):
            answered_now = not (pending.cancelled or pending.answered or self._gone)
            pending.cancelled = True
            pending.scope.cancel()
            if answered_now:
                try:
                    await self._channel.send(
                        error_line(
                            request_id,
                            UPSTREAM_TRANSPORT_ERROR,
                            "the proxy is shutting down (its input ended or it was stopped) "
                            "before the upstream "
                            "answered",
                        )
                    )
                except ClientGone:
                    break

    async def _end_session(self) -> None:
        """DELETE the session (2025 wire), so the server can free it at once."""
        if self._state.session_id is None:
            return
        with anyio.move_on_after(DELETE_TIMEOUT_SECONDS, shield=True):
            try:
                token = await self._tokens.token()
                headers = {**self._state.stream_headers(None), "Authorization": token.authorization}
                del headers["Accept"]
                async with self._upstream.exchange("DELETE", headers) as reply:
                    log.debug("session deleted", extra={"status": reply.status})
            except (UpstreamError, OAuthError) as error:
                log.debug("could not delete the session", extra={"reason": str(error)})


async def _events(
    reply: UpstreamReply, decoder: SseDecoder
) -> AsyncGenerator[SseEvent | OversizedEvent, None]:
    """The events of an event-stream body, as they arrive. Whoever stops reading before the
    end closes it (`aclosing`), and it closes the body's chunks in turn: an async generator
    left half-way costs the event loop a finalizer task and a wake-up write when it is
    collected, which on the hot path was a tenth of the proxy's CPU (docs/performance.md)."""
    async with aclosing(reply.chunks()) as chunks:
        async for chunk in chunks:
            for event in decoder.feed(chunk):
                if isinstance(event, OversizedEvent):
                    log.warning(
                        "dropped an upstream event larger than the limit",
                        extra={"limit_bytes": event.limit},
                    )
                yield event


def _rate_limited(retry_after: str | None, shown: str, attempts: int) -> str:
    asked = f" (Retry-After: {retry_after.strip()})" if retry_after else ""
    return (
        f"upstream answered HTTP 429 Too Many Requests{asked}: it limits how often this "
        f"client may call it, and the proxy sends a message at most {attempts} times and "
        f"waits at most {MAX_RETRY_WAIT_SECONDS:g} s in between; try again later. The server "
        f"said: {shown or 'nothing'}"
    )


def _answers_to(request: Message, message: Message) -> bool:
    """Whether `message` is the response to the client's `request`."""
    return (
        message.kind is Kind.RESPONSE and message.id == request.id and request.kind is Kind.REQUEST
    )


def _needs_slot(message: Message) -> bool:
    """Requests count against upstream.maxInFlight. A subscription that stays open as long as
    the client wants would hold its slot for good, and a ping is a client's keep-alive, which
    must not wait behind long calls: those do not count."""
    return message.kind is Kind.REQUEST and message.method not in UNQUEUED_METHODS


def _set_event() -> anyio.Event:
    event = anyio.Event()
    event.set()
    return event


def _hashable(value: object) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _shown(body: bytes) -> str:
    text = " ".join(body.decode("utf-8", "replace").split())
    return text if len(text) <= SHOWN_BODY_CHARS else text[:SHOWN_BODY_CHARS] + "…"


_NEW_SESSION_FAILED = "the upstream's session expired and a new one could not be started"
_INITIALIZED_MESSAGE = Message(
    Kind.NOTIFICATION,
    compact({"jsonrpc": "2.0", "method": INITIALIZED}),
    {"jsonrpc": "2.0", "method": INITIALIZED},
    method=INITIALIZED,
)


async def _first_response(
    reply: UpstreamReply, request_id: JsonId, max_bytes: int
) -> Message | None:
    """The response to `request_id` in a JSON or event-stream body; what comes before it is
    not for the client (the answer to a replayed initialize is the proxy's own)."""
    content_type = reply.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == EVENT_STREAM:
        async for event in _events(reply, SseDecoder(max_bytes)):
            if isinstance(event, SseEvent) and event.data.strip():
                found = _response_in(event.data, request_id)
                if found is not None:
                    return found
        return None
    return _response_in(await reply.read(max_bytes), request_id)


def _response_in(data: bytes, request_id: JsonId) -> Message | None:
    try:
        messages = parse_upstream_body(data)
    except ValueError:
        return None
    return next((m for m in messages if m.kind is Kind.RESPONSE and m.id == request_id), None)


def _answers(body: bytes, request_id: JsonId) -> bool:
    """Whether an error body is the server's own JSON-RPC answer to `request_id`."""
    return _response_in(body, request_id) is not None
