"""Only UPSTREAM_URL is set: the proxy discovers the authorization server from the MCP
server (the SDK's protected resource metadata and authorization routes), registers itself,
logs in with a scripted browser and carries a tool call for the real SDK client; and a tool
that needs more scope gets it by step-up authorization."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import mcp_types as types
import pytest
import uvicorn
from mcp import Client, StdioServerParameters
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth_server import AuthServer, MemoryProvider, free_port, running_auth_server

pytestmark = [pytest.mark.anyio, pytest.mark.contract]

HERE = Path(__file__).parent
COMMAND = str(Path(sys.executable).with_name("mcp-oauth2-proxy"))
BOUND_SECONDS = 90


class ProviderTokens:
    """The MCP server accepts exactly the tokens the authorization server issued."""

    def __init__(self, provider: MemoryProvider) -> None:
        self._provider = provider

    async def verify_token(self, token: str) -> AccessToken | None:
        issued = self._provider.access_tokens.get(token)
        if issued is None:
            return None
        return AccessToken(token=token, client_id=issued.client_id, scopes=issued.scopes)


class NeedsAdminScope:
    """ASGI middleware standing in for a server with a per-tool scope: calling the `admin`
    tool without scope `admin` gets 403 insufficient_scope (MCP authorization §Scope
    Challenge Handling)."""

    def __init__(self, app: ASGIApp, provider: MemoryProvider, metadata_url: str) -> None:
        self._app = app
        self._provider = provider
        self._metadata_url = metadata_url
        self.refusals = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self._app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = dict(scope["headers"])
        token = headers.get(b"authorization", b"").decode().removeprefix("Bearer ")
        issued = self._provider.access_tokens.get(token)
        if issued is not None and _calls_admin(body) and "admin" not in issued.scopes:
            self.refusals += 1
            challenge = (
                f'Bearer error="insufficient_scope", scope="mcp admin", '
                f'resource_metadata="{self._metadata_url}"'
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [(b"www-authenticate", challenge.encode())],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self._app(scope, replay, send)


def _calls_admin(body: bytes) -> bool:
    try:
        document = json.loads(body)
    except ValueError:
        return False
    params = document.get("params") if isinstance(document, dict) else None
    return isinstance(params, dict) and params.get("name") == "admin"


@dataclass
class World:
    upstream_url: str
    auth: AuthServer
    step_up: NeedsAdminScope


@asynccontextmanager
async def discovered_world(callback_port: int) -> AsyncIterator[World]:
    redirect = f"http://127.0.0.1:{callback_port}/callback"
    async with running_auth_server(redirect, registration=True) as auth:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        upstream_url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
        server = MCPServer(
            "discovered-upstream",
            log_level="WARNING",
            token_verifier=ProviderTokens(auth.provider),
            auth=AuthSettings(
                issuer_url=auth.issuer,
                resource_server_url=upstream_url,
                validate_token_resource=False,
                required_scopes=["mcp"],
            ),
        )

        @server.tool()
        async def echo(text: str) -> str:
            """Return the text."""
            return text

        @server.tool()
        async def admin() -> str:
            """Something that needs scope `admin`."""
            return "admin done"

        metadata_url = upstream_url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")
        step_up = NeedsAdminScope(server.streamable_http_app(), auth.provider, metadata_url)
        app_server = uvicorn.Server(uvicorn.Config(step_up, log_level="warning", lifespan="on"))
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(lambda: app_server.serve(sockets=[sock]))
            try:
                yield World(upstream_url, auth, step_up)
            finally:
                app_server.should_exit = True
        sock.close()


def only_the_upstream(world: World, callback_port: int, tmp_path: Path) -> dict[str, str]:
    """The environment of a user who set UPSTREAM_URL and nothing else, plus what a test
    needs: a private cache, a free callback port, a scripted browser."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OAUTH2_", "UPSTREAM_"))}
    return {
        **clean,
        "UPSTREAM_URL": world.upstream_url,
        "OAUTH2_TOKEN_CACHE_DIR": str(tmp_path / "cache"),
        "OAUTH2_CALLBACK_PORT": str(callback_port),
        "BROWSER": f"{sys.executable} {HERE / 'scripted_browser.py'} %s",
        "SCRIPTED_BROWSER_LOG": str(tmp_path / "browser.log"),
        "LOG_LEVEL": "debug",
    }


def text_of(result: types.CallToolResult) -> str:
    (content,) = result.content
    assert isinstance(content, types.TextContent)
    return content.text


async def test_only_the_upstream_url_is_needed(tmp_path: Path) -> None:
    callback_port = free_port()
    with anyio.fail_after(BOUND_SECONDS):
        async with discovered_world(callback_port) as world:
            env = only_the_upstream(world, callback_port, tmp_path)
            params = StdioServerParameters(command=COMMAND, env=env)
            async with Client(params, mode="legacy") as session:
                assert text_of(await session.call_tool("echo", {"text": "found"})) == "found"
            provider = world.auth.provider
            (registration,) = provider.registrations
            # The SDK's metadata lists only secret-based methods, so a secret is asked for.
            assert registration.token_endpoint_auth_method == "client_secret_post"
            assert [str(uri) for uri in registration.redirect_uris or []] == [
                f"http://127.0.0.1:{callback_port}/callback"
            ]
            assert provider.authorizations == 1

            # A second launch reuses the registration and the login: no browser, no register.
            async with Client(StdioServerParameters(command=COMMAND, env=env)) as session:
                assert text_of(await session.call_tool("echo", {"text": "again"})) == "again"
            assert len(provider.registrations) == 1
            assert provider.authorizations == 1
    browser_log = (tmp_path / "browser.log").read_text().splitlines()
    assert len(browser_log) == 1
    assert "resource=" in browser_log[0]


async def test_a_tool_that_needs_more_scope_gets_it_by_step_up(tmp_path: Path) -> None:
    callback_port = free_port()
    with anyio.fail_after(BOUND_SECONDS):
        async with discovered_world(callback_port) as world:
            env = only_the_upstream(world, callback_port, tmp_path)
            async with Client(StdioServerParameters(command=COMMAND, env=env)) as session:
                assert text_of(await session.call_tool("admin", {})) == "admin done"
            assert world.step_up.refusals == 1
            assert world.auth.provider.authorizations == 2
    logins = (tmp_path / "browser.log").read_text().splitlines()
    assert "scope=mcp+admin" in logins[-1]


async def test_login_status_and_logout_work_from_just_the_upstream_url(tmp_path: Path) -> None:
    callback_port = free_port()
    with anyio.fail_after(BOUND_SECONDS):
        async with discovered_world(callback_port) as world:
            env = only_the_upstream(world, callback_port, tmp_path)

            async def run(command: str) -> tuple[int, str]:
                done = await anyio.run_process([COMMAND, command], env=env, check=False)
                return done.returncode, done.stdout.decode()

            assert (await run("status"))[0] == 1
            code, out = await run("login")
            assert (code, world.auth.issuer in out) == (0, True)
            assert (await run("status"))[0] == 0
            assert (await run("logout"))[0] == 0
            assert (await run("status"))[0] == 1
