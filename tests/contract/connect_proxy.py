"""A company HTTP proxy in miniature: HTTP CONNECT tunnels on 127.0.0.1, each target noted.

Only CONNECT is served (an https:// request through a proxy is always a tunnel); anything
else gets 405, so a client that bypassed the tunnel would show up as a missing entry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
from anyio.abc import ByteStream, SocketAttribute, SocketStream

MAX_HEAD_BYTES = 16 * 1024


@dataclass
class ConnectProxy:
    url: str = ""
    tunnels: list[str] = field(default_factory=list)


@asynccontextmanager
async def connect_proxy() -> AsyncIterator[ConnectProxy]:
    proxy = ConnectProxy()

    async def tunnel(client: SocketStream) -> None:
        async with client:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < MAX_HEAD_BYTES:
                head += await client.receive()
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            if method != "CONNECT":
                await client.send(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
                return
            host, port = target.rsplit(":", 1)
            proxy.tunnels.append(target)
            async with await anyio.connect_tcp(host, int(port)) as server:
                await client.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
                async with anyio.create_task_group() as pipes:
                    pipes.start_soon(_pipe, client, server, pipes.cancel_scope)
                    pipes.start_soon(_pipe, server, client, pipes.cancel_scope)

    async with (
        await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
        anyio.create_task_group() as tasks,
    ):
        proxy.url = f"http://127.0.0.1:{listener.extra(SocketAttribute.local_port)}"
        tasks.start_soon(listener.serve, tunnel)
        yield proxy
        tasks.cancel_scope.cancel()


async def _pipe(source: ByteStream, sink: ByteStream, scope: anyio.CancelScope) -> None:
    try:
        async for chunk in source:
            await sink.send(chunk)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass
    scope.cancel()
