"""A fast, fault-injecting MCP upstream (streamable HTTP, 2025 wire) and OAuth2 token endpoint
for the soak test, on 127.0.0.1 only.

Hand-written on h11 over anyio sockets, so that every byte it sends, and where it stops
sending, is under the test's control. It runs in a thread of its own with its own event loop
(an anyio blocking portal): the test's loop, this server's loop and the proxy process share
nothing but sockets.

- `POST /token` (IdP listener, never restarted): client_credentials with the client id and
  secret checked (form fields or HTTP Basic); opaque random tokens with a short `expires_in`.
- `/mcp` (MCP listener): `POST` carries one JSON-RPC message; `initialize` starts a session
  (`Mcp-Session-Id`), `notifications/initialized` and every other notification get 202,
  `ping`, `tools/list` (one tool, `echo`) and `tools/call echo` (its `text` argument back as
  text content) are answered as `application/json` or as `text/event-stream` (a priming event
  with an id and `retry:`, sometimes a `notifications/message` about the request, then the
  response, every event with an id). `GET` with `Last-Event-ID` naming a response stream's
  event replays that stream's later events (transports §Resumability and Redelivery), waiting
  for the response if the work is still running; `GET` without one opens the session's server
  stream, which sends a `notifications/message` now and then. `DELETE` ends a session.
  Unknown or expired tokens get 401 with `WWW-Authenticate: Bearer`, unknown sessions 404.

Faults, drawn from one seeded RNG and each counted in `faults`:

- `restart`: the MCP listener and every open connection are closed, every session and stored
  stream forgotten, and the listener reopened on the same port after a short pause;
- `session_expired`: one session is forgotten (its next request gets 404);
- `stream_dropped`: an event-stream answer is cut after its priming event (and the request's
  notification, if any), before the response; the work still finishes and its response is
  kept for the `GET` that resumes the stream;
- `body_reset`: a JSON answer's headers and half its body are sent, then the connection is
  closed;
- `token_expired`: a token used after its expiry got 401 (natural, from the short lifetime).

Restarts and session expiries come from a clock at random intervals (alternating, so a
short run sees both); dropped streams and reset bodies are drawn per answer.

`anomalies` counts what a correct proxy never causes (a request without its session id or
with the wrong protocol version, a request in a session before its
`notifications/initialized`, a `tools/call` run twice, ...); the test asserts it stays empty.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import secrets
import socket
import traceback
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import anyio
import anyio.abc
import h11
from anyio.abc import TaskStatus
from anyio.from_thread import BlockingPortal, start_blocking_portal

LOOPBACK = "127.0.0.1"
MCP_PATH = "/mcp"
TOKEN_PATH = "/token"
SERVER_NAME = "soak-fault-upstream"
LATEST_VERSION = "2025-11-25"
KNOWN_VERSIONS = ("2025-03-26", "2025-06-18", LATEST_VERSION)
# From 2025-06-18 on, every request after initialize carries MCP-Protocol-Version.
VERSIONS_WITH_HEADER = ("2025-06-18", LATEST_VERSION)
EVENT_STREAM = "text/event-stream"
JSON = "application/json"
READ_BYTES = 65536
# The bound of every loop here that otherwise runs until the server stops.
MAX_TICKS = 10_000_000
# How long a resuming GET waits for work that is still running.
RESUME_WAIT_SECONDS = 10.0
BIND_ATTEMPTS = 50
STOP_SECONDS = 10.0

ECHO_TOOL: dict[str, Any] = {
    "name": "echo",
    "description": "Returns its text argument.",
    "inputSchema": {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    },
}

Document = dict[str, Any]


@dataclass(frozen=True)
class FaultPlan:
    """What the server does, and how often it misbehaves."""

    seed: int = 20251125
    client_id: str = "soak-client"
    client_secret: str = "soak-secret"
    token_ttl_seconds: int = 3
    # The MCP endpoint takes a token for expired this long before the end the IdP announced:
    # the clock skew between an IdP and a resource server, which makes a proxy that renews
    # just in time meet an expired-token 401 now and then.
    token_early_expiry_seconds: float = 0.05
    event_stream_share: float = 0.5
    request_notification_share: float = 0.3
    slow_share: float = 0.3
    slow_seconds: tuple[float, float] = (0.001, 0.02)
    fault_every_seconds: tuple[float, float] = (0.3, 0.9)
    restart_pause_seconds: tuple[float, float] = (0.1, 0.3)
    drop_stream_chance: float = 0.03
    reset_body_chance: float = 0.02
    retry_ms: int = 20
    server_notify_every_seconds: tuple[float, float] = (0.02, 0.3)
    stored_streams: int = 2048


@dataclass
class _Session:
    id: str
    version: str
    ended: anyio.Event
    initialized: bool = False


@dataclass
class _StoredStream:
    """A response stream's events, kept so that a GET with Last-Event-ID can resume it."""

    number: int
    session: str
    complete: anyio.Event
    retry_ms: int
    events: list[bytes] = field(default_factory=list)

    def add(self, payload: Document | None) -> bytes:
        """Append an event (an empty-data priming event for None); return its encoding."""
        event_id = f"{self.number}-{len(self.events)}"
        data = b"" if payload is None else _encode(payload)
        retry = f"retry: {self.retry_ms}\n".encode() if payload is None else b""
        encoded = f"id: {event_id}\n".encode() + retry + b"data: " + data + b"\n\n"
        self.events.append(encoded)
        return encoded


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


_Handler = Callable[["_Http", _Request], Awaitable[None]]


class _HangUp(Exception):
    """The connection was closed on purpose; its handler stops."""


class _Http:
    """One server-side HTTP/1.1 connection: its h11 state machine and its non-blocking
    socket, read and written through anyio's readiness waits."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._conn = h11.Connection(h11.SERVER)

    async def next_request(self) -> _Request | None:
        """The next whole request, or None when the client closed the connection."""
        head = await self._next_event()
        if not isinstance(head, h11.Request):
            return None
        body = bytearray()
        for _ in range(MAX_TICKS):
            part = await self._next_event()
            if isinstance(part, h11.Data):
                body += part.data
            elif isinstance(part, h11.EndOfMessage):
                break
            else:
                return None
        headers = {name.decode().lower(): value.decode("latin-1") for name, value in head.headers}
        return _Request(
            head.method.decode(), head.target.decode().split("?")[0], headers, bytes(body)
        )

    async def _next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        for _ in range(MAX_TICKS):
            event = self._conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self._conn.receive_data(await self.receive())
        raise RuntimeError("unbounded HTTP read")

    async def receive(self) -> bytes:
        """Some bytes, or b"" once the peer has closed (or reset) the connection."""
        await anyio.lowlevel.checkpoint()
        for _ in range(MAX_TICKS):
            try:
                return self.sock.recv(READ_BYTES)
            except BlockingIOError:
                await anyio.wait_readable(self.sock)
            except OSError:
                return b""
        raise RuntimeError("unbounded socket read")

    async def _send_bytes(self, data: bytes) -> None:
        view = memoryview(data)
        for _ in range(MAX_TICKS):
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:
                await anyio.wait_writable(self.sock)
                continue
            except OSError:
                raise _HangUp from None  # the peer is gone
            if not view:
                await anyio.lowlevel.checkpoint()
                return
        raise RuntimeError("unbounded socket write")

    async def _send(self, *events: h11.Event) -> None:
        """Send the events' bytes at once (one segment where they fit)."""
        await self._send_bytes(b"".join(self._conn.send(event) or b"" for event in events))

    async def respond(
        self, status: int, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        head = _response(status, (*headers, ("content-length", str(len(body)))))
        await self._send(head, *([h11.Data(data=body)] if body else []), h11.EndOfMessage())

    async def respond_json(
        self, status: int, document: object, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        await self.respond(status, _encode(document), (("content-type", JSON), *headers))

    async def start(self, status: int, headers: tuple[tuple[str, str], ...]) -> None:
        await self._send(_response(status, headers))

    async def start_event_stream(
        self, first: bytes, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        """Response headers without a length (h11 frames the body as chunked), and the first
        event with them."""
        stream_headers = (("content-type", EVENT_STREAM), ("cache-control", "no-cache"))
        await self._send(_response(200, (*stream_headers, *headers)), h11.Data(data=first))

    async def send_data(self, data: bytes) -> None:
        await self._send(h11.Data(data=data))

    async def end(self) -> None:
        await self._send(h11.EndOfMessage())

    async def hang_up(self) -> None:
        """Close the connection now, mid-answer."""
        self.sock.close()
        raise _HangUp

    async def watch_hang_up(self, scope: anyio.CancelScope) -> None:
        """Cancel `scope` when the client closes the connection (nothing else may arrive
        while a server stream is open: the client sends its next request elsewhere)."""
        await self.receive()
        scope.cancel()

    def reusable(self) -> bool:
        return self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE

    def next_cycle(self) -> None:
        self._conn.start_next_cycle()


def _response(status: int, headers: tuple[tuple[str, str], ...]) -> h11.Response:
    return h11.Response(status_code=status, headers=[("server", SERVER_NAME), *headers])


def _listening_socket(port: int) -> socket.socket:
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((LOOPBACK, port))
        listening.listen(512)
        listening.setblocking(False)
    except OSError:
        listening.close()
        raise
    return listening


class FaultUpstream:
    """The server; its methods run on the server's own loop (see `running_fault_upstream`)."""

    def __init__(self, plan: FaultPlan, portal: BlockingPortal) -> None:
        self.plan = plan
        self._portal = portal
        self._rng = random.Random(plan.seed)  # noqa: S311 - fault injection, not security
        self.faults: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self.anomalies: Counter[str] = Counter()
        self.crashes: list[str] = []
        self.mcp_port = 0
        self.idp_port = 0
        self._tokens: dict[str, float] = {}
        self._sessions: dict[str, _Session] = {}
        self._streams: OrderedDict[int, _StoredStream] = OrderedDict()
        self._executed: set[str] = set()
        self._stream_numbers = itertools.count(1)
        self._faults_on = False
        self._root = anyio.CancelScope()
        self._generation = anyio.CancelScope()
        self._tasks: anyio.abc.TaskGroup | None = None
        self._listening: anyio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.mcp_port}{MCP_PATH}"

    @property
    def token_url(self) -> str:
        return f"http://{LOOPBACK}:{self.idp_port}{TOKEN_PATH}"

    # -- control, from the test's thread ------------------------------------------------

    async def set_faults(self, on: bool) -> None:
        """Turn fault injection on or off (from the test's loop); off also waits for a
        restart in progress to finish, so the server is listening when this returns."""
        await anyio.to_thread.run_sync(self._portal.call, self._set_faults, on)

    async def snapshot(self) -> dict[str, dict[str, int]]:
        """A copy of the counters, taken on the server's loop."""
        return await anyio.to_thread.run_sync(self._portal.call, self._snapshot)

    async def _set_faults(self, on: bool) -> None:
        self._faults_on = on
        if self._listening is not None:
            await self._listening.wait()

    async def _snapshot(self) -> dict[str, dict[str, int]]:
        return {
            "faults": dict(self.faults),
            "stats": dict(self.stats),
            "anomalies": dict(self.anomalies),
        }

    # -- the server's life ----------------------------------------------------------------

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._listening = anyio.Event()
        idp = _listening_socket(0)
        self.idp_port = idp.getsockname()[1]
        accepted: set[socket.socket] = set()
        with self._root:
            try:
                async with anyio.create_task_group() as root:
                    root.start_soon(self._accept, idp, self._idp_request, root, accepted)
                    await root.start(self._serve_mcp)
                    root.start_soon(self._fault_clock)
                    task_status.started()
            finally:
                _close_all(idp, accepted)

    async def stop(self) -> None:
        self._root.cancel()

    async def _serve_mcp(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve generations of the MCP listener; a restart ends one and starts the next on
        the same port."""
        started = False
        for _ in range(MAX_TICKS):
            listening = await self._bind_mcp()
            # Every socket this generation accepts, closed when it ends whatever state its
            # handler reached (one cancelled before it first ran never closes its own).
            accepted: set[socket.socket] = set()
            try:
                with anyio.CancelScope() as generation:
                    self._generation = generation
                    async with anyio.create_task_group() as tasks:
                        self._tasks = tasks
                        assert self._listening is not None
                        self._listening.set()
                        if not started:
                            started = True
                            task_status.started()
                        await self._accept(listening, self._mcp_request, tasks, accepted)
            finally:
                _close_all(listening, accepted)
            # A restart: every connection is closed; nothing of the old server survives.
            self._tasks = None
            self._forget_everything()
            await anyio.sleep(self._rng.uniform(*self.plan.restart_pause_seconds))

    async def _bind_mcp(self) -> socket.socket:
        for _ in range(BIND_ATTEMPTS):
            try:
                listening = _listening_socket(self.mcp_port)
            except OSError:
                self.stats["rebind_retried"] += 1
                await anyio.sleep(0.05)
                continue
            self.mcp_port = listening.getsockname()[1]
            return listening
        raise RuntimeError(f"could not listen on {LOOPBACK}:{self.mcp_port} again")

    async def _accept(
        self,
        listening: socket.socket,
        handle: _Handler,
        tasks: anyio.abc.TaskGroup,
        accepted: set[socket.socket],
    ) -> None:
        """Accept connections until cancelled. No await stands between accepting a socket
        and registering it, so a cancellation cannot lose one."""
        for _ in range(MAX_TICKS):
            await anyio.wait_readable(listening)
            try:
                sock, _ = listening.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            accepted.add(sock)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tasks.start_soon(self._connection, sock, handle, accepted)

    async def _connection(
        self, sock: socket.socket, handle: _Handler, accepted: set[socket.socket]
    ) -> None:
        self.stats["connections"] += 1
        http = _Http(sock)
        try:
            for _ in range(MAX_TICKS):
                request = await http.next_request()
                if request is None:
                    return
                await handle(http, request)
                if not http.reusable():
                    return
                http.next_cycle()
        except _HangUp:
            return
        except h11.ProtocolError:
            self.stats["http_protocol_errors"] += 1
        except Exception:
            self.crashes.append(traceback.format_exc())
        finally:
            accepted.discard(sock)
            sock.close()

    async def _fault_clock(self) -> None:
        kinds = itertools.cycle(("restart", "session_expired"))
        for _ in range(MAX_TICKS):
            await anyio.sleep(self._rng.uniform(*self.plan.fault_every_seconds))
            if not self._faults_on:
                continue
            if next(kinds) == "restart":
                await self._restart()
            elif self._sessions:
                victim = self._rng.choice(sorted(self._sessions))
                self._forget_session(victim)
                self.faults["session_expired"] += 1

    async def _restart(self) -> None:
        self.faults["restart"] += 1
        self._listening = anyio.Event()
        self._generation.cancel()
        await self._listening.wait()

    def _forget_everything(self) -> None:
        for session in list(self._sessions):
            self._forget_session(session)
        self._streams.clear()

    def _forget_session(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            session.ended.set()
        for number in [n for n, s in self._streams.items() if s.session == session_id]:
            del self._streams[number]

    # -- the IdP ---------------------------------------------------------------------------

    async def _idp_request(self, http: _Http, request: _Request) -> None:
        if (request.method, request.path) != ("POST", TOKEN_PATH):
            await http.respond(404)
            return
        form = dict(parse_qsl(request.body.decode()))
        client = (form.get("client_id"), form.get("client_secret"))
        basic = request.headers.get("authorization", "")
        if basic.lower().startswith("basic "):
            user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
            client = (user, password)
        if client != (self.plan.client_id, self.plan.client_secret):
            self.anomalies["token_request_with_wrong_client"] += 1
            await http.respond_json(401, {"error": "invalid_client"})
            return
        if form.get("grant_type") != "client_credentials":
            self.anomalies["token_request_with_wrong_grant"] += 1
            await http.respond_json(400, {"error": "unsupported_grant_type"})
            return
        now = anyio.current_time()
        for stale in [t for t, end in self._tokens.items() if end < now - 60]:
            del self._tokens[stale]
        token = secrets.token_urlsafe(24)
        self._tokens[token] = now + self.plan.token_ttl_seconds
        self.stats["tokens_issued"] += 1
        await http.respond_json(
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.plan.token_ttl_seconds,
            },
            (("cache-control", "no-store"),),
        )

    # -- the MCP endpoint ----------------------------------------------------------------

    async def _mcp_request(self, http: _Http, request: _Request) -> None:
        self.stats[f"http_{request.method}"] += 1
        if request.path != MCP_PATH:
            self.anomalies["wrong_path"] += 1
            await http.respond(404)
            return
        if not self._authorized(request):
            await http.respond_json(
                401,
                {"error": "invalid_token"},
                (("www-authenticate", 'Bearer error="invalid_token"'),),
            )
            return
        if request.method == "POST":
            await self._post(http, request)
        elif request.method == "GET":
            await self._get(http, request)
        elif request.method == "DELETE":
            await self._delete(http, request)
        else:
            self.anomalies["unexpected_http_method"] += 1
            await http.respond(405, headers=(("allow", "GET, POST, DELETE"),))

    def _authorized(self, request: _Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            self.anomalies["request_without_bearer_token"] += 1
            return False
        expiry = self._tokens.get(token)
        if expiry is None:
            self.stats["token_unknown"] += 1
            return False
        if anyio.current_time() >= expiry - self.plan.token_early_expiry_seconds:
            self.faults["token_expired"] += 1
            return False
        return True

    async def _session_of(self, http: _Http, request: _Request) -> _Session | None:
        """The request's live session, or None once the request has been answered (400
        without a session id or with the wrong version, 404 for a forgotten session)."""
        session_id = request.headers.get("mcp-session-id")
        if session_id is None:
            self.anomalies[f"{request.method}_without_session_id"] += 1
            await http.respond(400, b"Mcp-Session-Id is required")
            return None
        session = self._sessions.get(session_id)
        if session is None:
            self.stats["unknown_session_404"] += 1
            await http.respond_json(
                404,
                {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {"code": -32001, "message": "Session not found"},
                },
            )
            return None
        sent_version = request.headers.get("mcp-protocol-version")
        if session.version in VERSIONS_WITH_HEADER and sent_version != session.version:
            self.anomalies["wrong_protocol_version_header"] += 1
            await http.respond(400, b"MCP-Protocol-Version does not match the session")
            return None
        return session

    async def _post(self, http: _Http, request: _Request) -> None:
        accept = request.headers.get("accept", "")
        if JSON not in accept or EVENT_STREAM not in accept:
            self.anomalies["post_without_accept_both"] += 1
        try:
            message = json.loads(request.body)
        except ValueError:
            self.anomalies["post_body_not_json"] += 1
            await http.respond(400, b"not JSON")
            return
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            self.anomalies["post_body_not_one_jsonrpc_message"] += 1
            await http.respond(400, b"not one JSON-RPC message")
            return
        method = message.get("method")
        self.stats[f"rpc {method or '(response)'}"] += 1
        if method == "initialize":
            await self._initialize(http, request, message)
            return
        session = await self._session_of(http, request)
        if session is None:
            return
        if "id" not in message or method is None:
            if method == "notifications/initialized":
                session.initialized = True
            await http.respond(202)
            return
        if not session.initialized:
            self.anomalies["request_before_initialized"] += 1
        await self._answer(http, session, message)

    async def _initialize(self, http: _Http, request: _Request, message: Document) -> None:
        if "mcp-session-id" in request.headers:
            self.anomalies["initialize_with_session_id"] += 1
        params = message.get("params") or {}
        asked = params.get("protocolVersion")
        version = asked if asked in KNOWN_VERSIONS else LATEST_VERSION
        session = _Session(secrets.token_hex(16), version, anyio.Event())
        self._sessions[session.id] = session
        self.stats["sessions_started"] += 1
        result = {
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": False}, "logging": {}},
            "serverInfo": {"name": SERVER_NAME, "version": "1"},
        }
        answer = {"jsonrpc": "2.0", "id": message.get("id"), "result": result}
        await self._answer(http, session, message, answer, (("mcp-session-id", session.id),))

    async def _answer(
        self,
        http: _Http,
        session: _Session,
        message: Document,
        ready: Document | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Answer a request as JSON or as an event stream (the work done here unless the
        answer is `ready`), with this answer's share of faults."""
        if self._rng.random() < self.plan.event_stream_share:
            await self._answer_as_stream(http, session, message, ready, headers)
            return
        body = _encode(ready or await self._work(message))
        if self._faults_on and self._rng.random() < self.plan.reset_body_chance:
            self.faults["body_reset"] += 1
            await http.start(
                200, (("content-type", JSON), ("content-length", str(len(body))), *headers)
            )
            await http.send_data(body[: len(body) // 2])
            await http.hang_up()
        await http.respond(200, body, (("content-type", JSON), *headers))

    async def _answer_as_stream(
        self,
        http: _Http,
        session: _Session,
        message: Document,
        ready: Document | None,
        headers: tuple[tuple[str, str], ...],
    ) -> None:
        stored = self._store_stream(session.id)
        await http.start_event_stream(stored.add(None), headers)
        if self._rng.random() < self.plan.request_notification_share:
            await http.send_data(stored.add(_request_notification(message.get("id"))))
        if self._faults_on and self._rng.random() < self.plan.drop_stream_chance:
            self.faults["stream_dropped"] += 1
            assert self._tasks is not None
            self._tasks.start_soon(self._finish_dropped, stored, message, ready)
            await http.hang_up()
        answer = ready or await self._work(message)
        await http.send_data(stored.add(answer))
        stored.complete.set()
        await http.end()

    async def _finish_dropped(
        self, stored: _StoredStream, message: Document, ready: Document | None
    ) -> None:
        """The work goes on after its stream was cut; its response waits for a resume."""
        stored.add(ready or await self._work(message))
        stored.complete.set()

    def _store_stream(self, session_id: str) -> _StoredStream:
        stored = _StoredStream(
            next(self._stream_numbers), session_id, anyio.Event(), self.plan.retry_ms
        )
        self._streams[stored.number] = stored
        while len(self._streams) > self.plan.stored_streams:
            self._streams.popitem(last=False)
        return stored

    async def _work(self, message: Document) -> Document:
        method = message.get("method")
        reply: Document = {"jsonrpc": "2.0", "id": message.get("id")}
        if method == "ping":
            return {**reply, "result": {}}
        if method == "tools/list":
            return {**reply, "result": {"tools": [ECHO_TOOL]}}
        if method != "tools/call":
            return {**reply, "error": {"code": -32601, "message": f"Method not found: {method}"}}
        params = message.get("params") or {}
        text = (params.get("arguments") or {}).get("text")
        if params.get("name") != "echo" or not isinstance(text, str):
            return {**reply, "error": {"code": -32602, "message": "echo takes a text argument"}}
        if text in self._executed:
            self.anomalies["tools_call_run_twice"] += 1
        self._executed.add(text)
        self.stats["tools_call_runs"] += 1
        if self._rng.random() < self.plan.slow_share:
            await anyio.sleep(self._rng.uniform(*self.plan.slow_seconds))
        return {**reply, "result": {"content": [{"type": "text", "text": text}], "isError": False}}

    async def _get(self, http: _Http, request: _Request) -> None:
        if EVENT_STREAM not in request.headers.get("accept", ""):
            self.anomalies["get_without_accept_event_stream"] += 1
            await http.respond(406)
            return
        session = await self._session_of(http, request)
        if session is None:
            return
        last = request.headers.get("last-event-id")
        if last is not None and not last.startswith("g"):
            await self._resume(http, session, last)
            return
        await self._server_stream(http, session)

    async def _resume(self, http: _Http, session: _Session, last: str) -> None:
        number, _, index = last.partition("-")
        stored = self._streams.get(int(number)) if number.isdigit() else None
        if stored is None or stored.session != session.id or not index.isdigit():
            # Not a stream of this session: nothing of another stream may be replayed here.
            self.stats["resume_refused"] += 1
            await http.respond(400, b"unknown Last-Event-ID for this session")
            return
        self.stats["resumed"] += 1
        with anyio.move_on_after(RESUME_WAIT_SECONDS):
            await stored.complete.wait()
        await http.start_event_stream(b"".join(stored.events[int(index) + 1 :]))
        await http.end()

    async def _server_stream(self, http: _Http, session: _Session) -> None:
        """The session's GET stream: quiet but for a notification now and then; it ends with
        the session or the connection."""
        self.stats["server_streams"] += 1
        number = next(self._stream_numbers)
        await http.start_event_stream(
            f"id: g{number}-0\nretry: {self.plan.retry_ms}\ndata: \n\n".encode()
        )
        async with anyio.create_task_group() as watch:
            watch.start_soon(http.watch_hang_up, watch.cancel_scope)
            for tick in range(1, MAX_TICKS):
                with anyio.move_on_after(self._rng.uniform(*self.plan.server_notify_every_seconds)):
                    await session.ended.wait()
                if session.ended.is_set():
                    break
                self.stats["server_notifications"] += 1
                notification = {
                    "jsonrpc": "2.0",
                    "method": "notifications/message",
                    "params": {
                        "level": "info",
                        "logger": "soak",
                        "data": {"server_seq": self.stats["server_notifications"]},
                    },
                }
                await http.send_data(
                    f"id: g{number}-{tick}\ndata: ".encode() + _encode(notification) + b"\n\n"
                )
            watch.cancel_scope.cancel()
        await http.end()
        await http.hang_up()

    async def _delete(self, http: _Http, request: _Request) -> None:
        session = await self._session_of(http, request)
        if session is None:
            return
        self._forget_session(session.id)
        self.stats["sessions_deleted"] += 1
        await http.respond(200)


def _close_all(listening: socket.socket, accepted: set[socket.socket]) -> None:
    listening.close()
    for sock in list(accepted):
        sock.close()
    accepted.clear()


def _request_notification(request_id: object) -> Document:
    return {
        "jsonrpc": "2.0",
        "method": "notifications/message",
        "params": {"level": "info", "logger": "soak", "data": {"request": request_id}},
    }


def _encode(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


@contextmanager
def running_fault_upstream(plan: FaultPlan) -> Iterator[FaultUpstream]:
    """Run the server on a thread of its own until the block ends."""
    with start_blocking_portal(backend="asyncio") as portal:
        # Built on the server's own loop, where its cancel scopes and events belong.
        server = portal.call(FaultUpstream, plan, portal)
        done, _ = portal.start_task(server.serve)
        try:
            yield server
        finally:
            portal.call(server.stop)
            done.result(timeout=STOP_SECONDS)
