"""The two clients the benchmark compares, with one interface: `call(method, params)`.

`DirectClient` is the practical limit: a keep-alive Python HTTP client doing exactly what the
proxy does for each message (Bearer token, session and version headers, JSON or event-stream
answers) with nothing in between. `ProxyClient` is an MCP
client of the installed command: JSON-RPC lines on its stdin and stdout.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp

Document = dict[str, Any]
PROTOCOL_VERSION = "2025-11-25"
INITIALIZE_PARAMS: Document = {
    "protocolVersion": PROTOCOL_VERSION,
    "capabilities": {},
    "clientInfo": {"name": "bench", "version": "1"},
}
COMMAND = Path(sys.executable).parent / "mcp-oauth2-proxy"
# Environment variables of the user's shell that would change what the proxy does.
_INHERITED_PREFIXES = ("UPSTREAM_", "OAUTH2_", "DISCOVERY_", "LOG_", "SECURITY_")


class DirectClient:
    """MCP over streamable HTTP straight to the upstream with aiohttp, the fastest of the
    common Python HTTP clients, on a keep-alive pool: what a Python MCP client with no proxy
    in between would do for each call (the issue that asked for this benchmark measured the
    field against such a client)."""

    def __init__(self, port: int) -> None:
        self._base = f"http://127.0.0.1:{port}"
        self._session: aiohttp.ClientSession | None = None
        self._headers: dict[str, str] = {}
        self._next_id = 0

    async def start(self) -> None:
        """Get a token and initialize, as the proxy does before its first call."""
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        async with self._session.post(
            f"{self._base}/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "bench",
                "client_secret": "bench-secret",
            },
        ) as response:
            token = (await response.json())["access_token"]
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "Authorization": f"Bearer {token}",
        }
        status, headers, body = await self._post(_request(0, "initialize", INITIALIZE_PARAMS))
        assert status == 200, body
        self._headers["Mcp-Session-Id"] = headers["mcp-session-id"]
        self._headers["MCP-Protocol-Version"] = PROTOCOL_VERSION
        await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def call(self, method: str, params: Document) -> Document:
        self._next_id += 1
        status, headers, body = await self._post(_request(self._next_id, method, params))
        if status != 200:
            raise RuntimeError(f"upstream answered HTTP {status}")
        return _answer(headers, body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _post(self, document: Document) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        async with self._session.post(
            f"{self._base}/mcp", data=json.dumps(document).encode(), headers=self._headers
        ) as response:
            headers = {name.lower(): value for name, value in response.headers.items()}
            return response.status, headers, await response.read()


class ProxyClient:
    """The installed command, spawned with its configuration in the environment; requests
    are matched to answers by id, so any number may be in flight."""

    def __init__(
        self, port: int, cache_dir: Path, command: Sequence[str] = (str(COMMAND),)
    ) -> None:
        self._port = port
        self._cache_dir = cache_dir
        self._command = command
        self._process: asyncio.subprocess.Process | None = None
        self._waiting: dict[int, asyncio.Future[Document]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._next_id = 0
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    async def start(self) -> float:
        """Spawn the proxy and initialize; return the seconds from spawn to the answer."""
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(_INHERITED_PREFIXES) and not name.lower().endswith("_proxy")
        }
        env.update(
            UPSTREAM_URL=f"http://127.0.0.1:{self._port}/mcp",
            OAUTH2_GRANT="client_credentials",
            OAUTH2_TOKEN_URL=f"http://127.0.0.1:{self._port}/token",
            OAUTH2_CLIENT_ID="bench",
            OAUTH2_CLIENT_SECRET="bench-secret",  # noqa: S106 - the local upstream's own
            OAUTH2_TOKEN_CACHE_DIR=str(self._cache_dir),
            DISCOVERY_ENABLED="false",
            LOG_LEVEL="warn",
        )
        self.started_at = time.perf_counter()
        self._process = await asyncio.create_subprocess_exec(
            *self._command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=env,
            limit=1 << 24,
        )
        self._reader = asyncio.create_task(self._read())
        answer = await self._exchange(_request(0, "initialize", INITIALIZE_PARAMS))
        cold_start = time.perf_counter() - self.started_at
        assert "result" in answer, answer
        await self._write({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return cold_start

    async def call(self, method: str, params: Document) -> Document:
        self._next_id += 1
        return await self._exchange(_request(self._next_id, method, params))

    async def close(self) -> int:
        """End input, as an MCP client does; return the exit status."""
        assert self._process is not None
        assert self._process.stdin is not None
        self._process.stdin.close()
        status = await asyncio.wait_for(self._process.wait(), 15)
        if self._reader is not None:
            await self._reader
        return status

    async def _exchange(self, request: Document) -> Document:
        answer = self._waiting[request["id"]] = asyncio.get_running_loop().create_future()
        await self._write(request)
        return await asyncio.wait_for(answer, 60)

    async def _write(self, document: Document) -> None:
        assert self._process is not None
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(document).encode() + b"\n")
        await self._process.stdin.drain()

    async def _read(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        async for line in self._process.stdout:
            document = json.loads(line)
            waiting = self._waiting.pop(document.get("id"), None)
            if waiting is not None and not waiting.done():
                waiting.set_result(document)


def _request(request_id: int, method: str, params: Document) -> Document:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def _answer(headers: Mapping[str, str], body: bytes) -> Document:
    if headers.get("content-type", "").startswith("text/event-stream"):
        data = b"\n".join(
            line[5:].lstrip() for line in body.splitlines() if line.startswith(b"data:")
        )
        document: Document = json.loads(data)
        return document
    parsed: Document = json.loads(body)
    return parsed
