"""The ClientChannel port over byte streams: the MCP stdio transport.

Any pair of anyio byte streams works (a harness passes in-memory ones); for the real process
the streams are the stdin and stdout pipes, driven by the event loop without a thread per
read (`process_stdio`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import sys
import threading
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import anyio.lowlevel

from ..domain.errors import ClientGone
from ..domain.line_framing import DEFAULT_MAX_LINE_BYTES, LineSplitter, Oversized

_READ_SIZE = 1 << 16


class StdioChannel:
    """Reads lines from `receive`; writes whole lines to `send`, one writer at a time."""

    def __init__(
        self,
        receive: anyio.abc.ByteReceiveStream,
        send: anyio.abc.ByteSendStream,
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ) -> None:
        self._receive = receive
        self._send = send
        self._max_line_bytes = max_line_bytes
        self._write_lock = anyio.Lock()

    async def lines(self) -> AsyncIterator[bytes | Oversized]:
        splitter = LineSplitter(self._max_line_bytes)
        while True:
            try:
                chunk = await self._receive.receive(_READ_SIZE)
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                break
            for line in splitter.feed(chunk):
                yield line
        for line in splitter.finish():
            yield line

    async def send(self, line: bytes) -> None:
        # `async with self._write_lock` without its yield to the event loop when the lock is
        # free (as it nearly always is): every answer comes through here. A cancelled caller
        # still stops before writing, as it would at the lock.
        await anyio.lowlevel.checkpoint_if_cancelled()
        try:
            self._write_lock.acquire_nowait()
        except anyio.WouldBlock:
            await self._write_lock.acquire()
        try:
            await self._send.send(line + b"\n")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise ClientGone(f"the MCP client stopped reading stdout: {exc}") from None
        finally:
            self._write_lock.release()


class _PipeReceiveStream(anyio.abc.ByteReceiveStream):
    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    async def receive(self, max_bytes: int = _READ_SIZE) -> bytes:
        data = await self._reader.read(max_bytes)
        if not data:
            raise anyio.EndOfStream
        return data

    async def aclose(self) -> None:
        """The pipe belongs to the process; it closes at exit."""


class _PipeSendStream(anyio.abc.ByteSendStream):
    """Lines sent in the same turn of the event loop go out in one write. With many requests
    in flight, many answers finish in one turn, and a write is a system call: one per answer
    took a sixth of the proxy's CPU at 64 in flight (docs/performance.md)."""

    def __init__(self, transport: asyncio.WriteTransport, protocol: asyncio.BaseProtocol) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport = transport
        self._writer = asyncio.StreamWriter(transport, protocol, None, self._loop)
        self._pending: list[bytes] = []

    async def send(self, item: bytes) -> None:
        if self._writer.is_closing():
            raise anyio.BrokenResourceError
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(item)
        if self._transport.get_write_buffer_size():
            # The client reads slower than answers come: write now, and wait for it as
            # before once too much is waiting.
            self._flush()
            await self._writer.drain()

    def _flush(self) -> None:
        # Never a write to a closing transport: uvloop raises there, where asyncio ignores it.
        if self._pending and not self._writer.is_closing():
            self._writer.write(b"".join(self._pending))
        self._pending.clear()

    async def aclose(self) -> None:
        self._flush()
        self._writer.close()


class _ThreadReceiveStream(anyio.abc.ByteReceiveStream):
    """For stdin the event loop cannot watch (a regular file, /dev/null, a console): a
    daemon thread reads it, so a read still blocked at exit never holds the process up."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)
        self._thread: threading.Thread | None = None

    async def receive(self, max_bytes: int = _READ_SIZE) -> bytes:
        if self._thread is None:
            loop = asyncio.get_running_loop()
            self._thread = threading.Thread(
                target=self._pump, args=(loop,), name="stdin-reader", daemon=True
            )
            self._thread.start()
        data = await self._chunks.get()
        if not data:
            raise anyio.EndOfStream
        return data

    def _pump(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            try:
                data = os.read(self._fd, _READ_SIZE)
            except OSError:
                data = b""
            put = self._chunks.put(data)
            try:
                asyncio.run_coroutine_threadsafe(put, loop).result()
            except RuntimeError:  # the loop is closed: the process is ending
                put.close()  # never to run, and so not to be reported as never awaited
                return
            if not data:
                return

    async def aclose(self) -> None:
        """The descriptor belongs to the process."""


class _FileSendStream(anyio.abc.ByteSendStream):
    """For stdout redirected to a regular file: writes complete at once."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    async def send(self, item: bytes) -> None:
        view = memoryview(item)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    async def aclose(self) -> None:
        """The descriptor belongs to the process."""


class ProcessStdio:
    """Opens this process's stdin and stdout as anyio byte streams (asyncio only)."""

    async def open(self) -> tuple[anyio.abc.ByteReceiveStream, anyio.abc.ByteSendStream]:
        loop = asyncio.get_running_loop()
        stdin = sys.stdin.buffer
        stdout = sys.stdout.buffer
        if _same_socket(stdin.fileno(), stdout.fileno()):
            return await _socket_streams(loop, stdin.fileno())
        receive: anyio.abc.ByteReceiveStream = _ThreadReceiveStream(stdin.fileno())
        send: anyio.abc.ByteSendStream = _FileSendStream(stdout.fileno())
        # Only pipes and sockets (what MCP hosts give us) go on the event loop; epoll refuses
        # regular files and /dev/null, and a console is better read by a thread.
        if _is_pipe(stdin.fileno()):
            reader = asyncio.StreamReader(limit=_READ_SIZE, loop=loop)
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
            receive = _PipeReceiveStream(reader)
        if _is_pipe(stdout.fileno()):
            transport, protocol = await loop.connect_write_pipe(
                asyncio.streams.FlowControlMixin, stdout
            )
            send = _PipeSendStream(transport, protocol)
        return receive, send


async def _socket_streams(
    loop: asyncio.AbstractEventLoop, fd: int
) -> tuple[anyio.abc.ByteReceiveStream, anyio.abc.ByteSendStream]:
    """Stdin and stdout are one socket (socat, a socket-activated service): one transport
    reads and writes it. A pipe transport on stdout would take the requests arriving on the
    socket for the client's having hung up, and close."""
    reader = asyncio.StreamReader(limit=_READ_SIZE, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader)
    sock = socket.socket(fileno=os.dup(fd))
    if sock.family == socket.AF_UNIX:
        transport, _ = await loop.create_unix_connection(lambda: protocol, sock=sock)
    else:
        transport, _ = await loop.create_connection(lambda: protocol, sock=sock)
    return _PipeReceiveStream(reader), _PipeSendStream(transport, protocol)


def _same_socket(first: int, second: int) -> bool:
    if sys.platform == "win32":
        return False
    one, other = os.fstat(first), os.fstat(second)
    same = (one.st_dev, one.st_ino) == (other.st_dev, other.st_ino)
    return same and stat.S_ISSOCK(one.st_mode)


def _is_pipe(fd: int) -> bool:
    if sys.platform == "win32":
        return False
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
