"""The benchmark's upstream: an MCP streamable-HTTP server and an OAuth2 token endpoint.

The benchmark measures the proxy, so this side must cost as little as Python allows and
never be the bottleneck: it is a bare ``asyncio.Protocol`` with no framework, no
third-party packages and no per-request allocation beyond what the JSON itself needs. It
speaks only the slice of HTTP/1.1 the proxy uses (Content-Length bodies, keep-alive, one
request at a time per connection) and answers only the requests the benchmark sends.

Run it as ``python -m bench.upstream [--mode json|sse] [--port 0]``: it prints one line,
``{"port": <n>}``, once it listens on 127.0.0.1, and exits 0 when stdin reaches EOF or on
SIGTERM/SIGINT. In-process, ``serve()`` starts it and ``stop()`` ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeGuard

HOST: Final = "127.0.0.1"
MODES: Final = ("json", "sse")
PROTOCOL_VERSION: Final = "2025-11-25"
SESSION_ID: Final = b"bench-session"
BEARER: Final = b"bench-token"

# A header block or body beyond these is not something the proxy sends; refusing it keeps a
# confused client from growing the buffer without bound.
_MAX_HEAD: Final = 64 * 1024
_MAX_BODY: Final = 16 * 1024 * 1024
_READ_SIZE: Final = 64 * 1024

# The colon's index is the header name's length, so comparing it against these lengths skips
# lowercasing every header except the five that matter.
_NAME_LENGTHS: Final = frozenset((10, 13, 14, 17))

# json.dumps(obj, separators=...) builds a new encoder on every call; one shared encoder gives
# byte-identical output for less. Decoding str with the decoder itself skips json.loads's
# sniffing for UTF-16/32, which MCP never sends: about a microsecond a request.
_encode: Final = json.JSONEncoder(separators=(",", ":")).encode
_decode: Final = json.JSONDecoder().decode

_TOOLS: Final = {
    "tools": [
        {
            "name": "echo",
            "description": "Returns its text.",
            "inputSchema": {
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
            },
        },
        {
            "name": "sleep",
            "description": "Answers after the given number of seconds.",
            "inputSchema": {
                "type": "object",
                "properties": {"seconds": {"type": "number"}},
                "required": ["seconds"],
            },
        },
    ]
}
_INITIALIZE: Final = {
    "protocolVersion": PROTOCOL_VERSION,
    "capabilities": {"tools": {}},
    "serverInfo": {"name": "bench-upstream", "version": "1"},
}
_SLEPT: Final = {"content": [{"type": "text", "text": "slept"}]}


def _response(status: bytes, headers: bytes, body: bytes, keep_alive: bool) -> bytes:
    """Every response carries Content-Length, so the client never has to wait for a close."""
    return b"HTTP/1.1 %b\r\n%bContent-Length: %d\r\nConnection: %b\r\n\r\n%b" % (
        status,
        headers,
        len(body),
        b"keep-alive" if keep_alive else b"close",
        body,
    )


def _static(status: bytes, headers: bytes = b"", body: bytes = b"") -> dict[bool, bytes]:
    """Fixed answers are built once, in both their keep-alive and their closing form."""
    return {ka: _response(status, headers, body, ka) for ka in (True, False)}


_JSON: Final = b"Content-Type: application/json\r\n"
_SSE: Final = b"Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
_SESSION: Final = b"Mcp-Session-Id: " + SESSION_ID + b"\r\n"

_TOKEN: Final = _static(
    b"200 OK",
    _JSON,
    b'{"access_token":"' + BEARER + b'","token_type":"Bearer","expires_in":3600}',
)
_ACCEPTED: Final = _static(b"202 Accepted")
_DELETED: Final = _static(b"200 OK")
_UNAUTHORIZED: Final = _static(b"401 Unauthorized", b"WWW-Authenticate: Bearer\r\n")
_NO_SESSION: Final = _static(b"404 Not Found")
_NO_STREAM: Final = _static(b"405 Method Not Allowed", b"Allow: POST, DELETE\r\n")
_NOT_FOUND: Final = _static(b"404 Not Found")
_BAD_REQUEST: Final = _response(b"400 Bad Request", b"", b"", False)
_TOO_LARGE: Final = _response(b"413 Content Too Large", b"", b"", False)
_HEAD_TOO_LARGE: Final = _response(b"431 Request Header Fields Too Large", b"", b"", False)
_CHUNKED: Final = _response(b"501 Not Implemented", b"", b"", False)


_Frame = Callable[[dict[str, Any], bytes, bool], bytes]


def _frame_json(answer: dict[str, Any], headers: bytes, keep_alive: bool) -> bytes:
    return _response(b"200 OK", _JSON + headers, _encode(answer).encode(), keep_alive)


def _frame_sse(answer: dict[str, Any], headers: bytes, keep_alive: bool) -> bytes:
    """One complete event with a Content-Length: the proxy still goes through its SSE parsing,
    and this side never has to hold a stream open.
    """
    body = b"event: message\ndata: " + _encode(answer).encode() + b"\n\n"
    return _response(b"200 OK", _SSE + headers, body, keep_alive)


def _error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def _is_seconds(value: object) -> TypeGuard[float]:
    """bool is an int to Python but not a number to JSON Schema; NaN would never wake."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


class _Connection(asyncio.BufferedProtocol):
    """One client connection; it handles one request at a time, as HTTP/1.1 without
    pipelining does, and holds any bytes that arrive early until the previous answer is out.

    Buffered, because a plain Protocol makes asyncio allocate a fresh 256 KiB bytes object for
    every read: receiving into one reused buffer instead nearly halved this server's CPU time
    per request.
    """

    __slots__ = ("_buf", "_connections", "_frame", "_read", "_timer", "_transport")

    def __init__(self, frame: _Frame, connections: set[_Connection]) -> None:
        self._frame = frame
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._read = memoryview(bytearray(_READ_SIZE))
        self._buf = b""
        # A pending sleep call: while it is set the connection is busy and reads only buffer.
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read

    def buffer_updated(self, nbytes: int) -> None:
        # The usual request arrives whole in one read: then this is its only copy.
        data = self._read[:nbytes].tobytes()
        self._buf = self._buf + data if self._buf else data
        if self._timer is None:
            self._drain()

    def _drain(self) -> None:
        """Answers every complete request in the buffer, stopping at a partial one, at a
        sleep call (the rest waits for its answer) or once the connection is closing.
        """
        buf = self._buf
        while buf:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    self._abort(_HEAD_TOO_LARGE)
                    return
                break
            lines = buf[:end].split(b"\r\n")
            parts = lines[0].split(b" ")
            if len(parts) != 3:
                self._abort(_BAD_REQUEST)
                return
            method, target, version = parts
            length = 0
            auth = b""
            session: bytes | None = None
            keep_alive = version != b"HTTP/1.0"
            for line in lines[1:]:
                colon = line.find(b":")
                if colon not in _NAME_LENGTHS:
                    continue
                name = line[:colon].lower()
                if name == b"content-length":
                    value = line[colon + 1 :].strip()
                    if not value.isdigit():
                        self._abort(_BAD_REQUEST)
                        return
                    length = int(value)
                    if length > _MAX_BODY:
                        self._abort(_TOO_LARGE)
                        return
                elif name == b"authorization":
                    auth = line[colon + 1 :].strip()
                elif name == b"mcp-session-id":
                    session = line[colon + 1 :].strip()
                elif name == b"connection":
                    value = line[colon + 1 :].lower()
                    if b"close" in value:
                        keep_alive = False
                    elif b"keep-alive" in value:
                        keep_alive = True
                elif name == b"transfer-encoding":
                    self._abort(_CHUNKED)
                    return
            start = end + 4
            finish = start + length
            if len(buf) < finish:
                break
            body = buf[start:finish]
            buf = self._buf = buf[finish:]

            query = target.find(b"?")
            path = target if query < 0 else target[:query]
            if path == b"/mcp":
                if method == b"POST":
                    if not self._post(body, auth, session, keep_alive):
                        return  # a sleep call owns the connection until it answers
                elif method == b"DELETE":
                    self._send(_DELETED[keep_alive], keep_alive)
                elif method == b"GET":
                    self._send(_NO_STREAM[keep_alive], keep_alive)
                else:
                    self._send(_NOT_FOUND[keep_alive], keep_alive)
            elif path == b"/token" and method == b"POST":
                self._send(_TOKEN[keep_alive], keep_alive)
            else:
                self._send(_NOT_FOUND[keep_alive], keep_alive)
            if not keep_alive:
                return
        self._buf = buf

    def _post(self, body: bytes, auth: bytes, session: bytes | None, keep_alive: bool) -> bool:
        """Answers one JSON-RPC message; False when the answer is deferred (a sleep call)."""
        if auth[7:] != BEARER or auth[:7].lower() != b"bearer ":
            self._send(_UNAUTHORIZED[keep_alive], keep_alive)
            return True
        # No session header is accepted (the benchmark may call without one), but a wrong
        # one is the proxy mixing up sessions, which the spec answers with 404.
        if session is not None and session != SESSION_ID:
            self._send(_NO_SESSION[keep_alive], keep_alive)
            return True
        try:
            message = _decode(body.decode())
        except ValueError:  # UnicodeDecodeError included
            error = _encode(_error(None, -32700, "Parse error")).encode()
            self._send(_response(b"400 Bad Request", _JSON, error, keep_alive), keep_alive)
            return True
        if type(message) is not dict:
            error = _encode(_error(None, -32600, "Invalid Request")).encode()
            self._send(_response(b"400 Bad Request", _JSON, error, keep_alive), keep_alive)
            return True
        if "id" not in message or "method" not in message:
            self._send(_ACCEPTED[keep_alive], keep_alive)
            return True

        request_id = message["id"]
        method = message["method"]
        extra = b""
        answer: dict[str, Any]
        if method == "tools/call":
            params = message.get("params")
            name = params.get("name") if type(params) is dict else None
            arguments = params.get("arguments") if type(params) is dict else None
            if type(arguments) is not dict:
                answer = _error(request_id, -32602, "arguments must be an object")
            elif name == "echo":
                text = arguments.get("text")
                if type(text) is str:
                    content = [{"type": "text", "text": text}]
                    answer = {"jsonrpc": "2.0", "id": request_id, "result": {"content": content}}
                else:
                    answer = _error(request_id, -32602, "echo needs a string 'text'")
            elif name == "sleep":
                seconds = arguments.get("seconds")
                if _is_seconds(seconds):
                    # What asyncio.sleep does underneath, without a task per call.
                    loop = asyncio.get_running_loop()
                    self._timer = loop.call_later(seconds, self._wake, request_id, keep_alive)
                    return False
                answer = _error(request_id, -32602, "sleep needs a number 'seconds' >= 0")
            else:
                answer = _error(request_id, -32602, f"Unknown tool: {name!r}")
        elif method == "initialize":
            answer = {"jsonrpc": "2.0", "id": request_id, "result": _INITIALIZE}
            extra = _SESSION
        elif method == "ping":
            answer = {"jsonrpc": "2.0", "id": request_id, "result": {}}
        elif method == "tools/list":
            answer = {"jsonrpc": "2.0", "id": request_id, "result": _TOOLS}
        else:
            answer = _error(request_id, -32601, "Method not found")
        self._send(self._frame(answer, extra, keep_alive), keep_alive)
        return True

    def _wake(self, request_id: Any, keep_alive: bool) -> None:
        self._timer = None
        if self._transport is None or self._transport.is_closing():
            return
        answer = {"jsonrpc": "2.0", "id": request_id, "result": _SLEPT}
        self._send(self._frame(answer, b"", keep_alive), keep_alive)
        if keep_alive:
            self._drain()

    def _send(self, data: bytes, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None:
            return
        transport.write(data)
        if not keep_alive:
            transport.close()  # after the write is flushed

    def _abort(self, data: bytes) -> None:
        """After a request it cannot parse the stream has no known boundary, so it ends."""
        self._buf = b""
        self._send(data, False)


# Each server's open connections, so that stop() can end the idle keep-alive ones too:
# Server.close() leaves them open (and on 3.12+ wait_closed() would wait for them forever).
_OPEN: dict[asyncio.AbstractServer, set[_Connection]] = {}


async def serve(mode: str, port: int = 0) -> tuple[asyncio.AbstractServer, int]:
    """Starts listening on 127.0.0.1 (port 0 picks a free one); returns the server and its port."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    frame: _Frame = _frame_json if mode == "json" else _frame_sse
    connections: set[_Connection] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Connection(frame, connections), HOST, port, reuse_address=True, backlog=1024
    )
    _OPEN[server] = connections
    bound: int = server.sockets[0].getsockname()[1]
    return server, bound


async def stop(server: asyncio.AbstractServer) -> None:
    """Stops listening and closes every connection, idle or not, without waiting on clients."""
    server.close()
    for connection in list(_OPEN.pop(server, ())):
        connection.close()
    await server.wait_closed()


def _watch_stdin(loop: asyncio.AbstractEventLoop, done: asyncio.Event) -> None:
    """EOF on stdin is how a parent that dies without signalling still stops us. A thread,
    because connect_read_pipe refuses regular files; a daemon, so it never delays the exit.
    """

    def watch() -> None:
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            return  # no readable stdin: only the signals stop us
        # A RuntimeError means the loop is already closed: we are exiting anyway.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(done.set)

    threading.Thread(target=watch, name="stdin-eof", daemon=True).start()


async def _run(mode: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, done.set)
    server, bound = await serve(mode, port)
    sys.stdout.write(json.dumps({"port": bound}) + "\n")
    sys.stdout.flush()
    _watch_stdin(loop, done)
    await done.wait()
    await stop(server)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.upstream", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--mode", choices=MODES, default="json")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    asyncio.run(_run(args.mode, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
