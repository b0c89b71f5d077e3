"""Browser login end to end, against a real authorization server on loopback (the MCP SDK's
authorization routes), with a scripted browser that follows the authorize URL and the
redirect to the proxy's real callback listener; and several processes sharing one cache."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest

from mcp_oauth2_proxy import OAuth2Config, Proxy, ProxyConfig, UpstreamConfig

from .auth_server import (
    CLIENT_ID,
    AuthServer,
    FollowingBrowser,
    UnusableBrowser,
    free_port,
    running_auth_server,
)

pytestmark = [pytest.mark.anyio, pytest.mark.contract]

HERE = Path(__file__).parent
COMMAND = str(Path(sys.executable).with_name("mcp-oauth2-proxy"))
BOUND_SECONDS = 60


@pytest.fixture
def callback_port() -> int:
    return free_port()


@pytest.fixture
async def auth_server(callback_port: int) -> AsyncIterator[AuthServer]:
    async with running_auth_server(f"http://127.0.0.1:{callback_port}/callback") as server:
        yield server


def config(server: AuthServer, callback_port: int, cache: Path) -> ProxyConfig:
    return ProxyConfig(
        upstream=UpstreamConfig(url="https://mcp.example/mcp"),
        oauth2=OAuth2Config(
            client_id=CLIENT_ID,
            token_url=server.token_url,
            authorization_url=server.authorize_url,
            callback_port=callback_port,
            token_cache_dir=str(cache),
            scope="mcp",
        ),
    )


def env(server: AuthServer, callback_port: int, cache: Path, log: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OAUTH2_", "UPSTREAM_"))}
    return {
        **clean,
        "UPSTREAM_URL": "https://mcp.example/mcp",
        "OAUTH2_CLIENT_ID": CLIENT_ID,
        "OAUTH2_TOKEN_URL": server.token_url,
        "OAUTH2_AUTHORIZATION_URL": server.authorize_url,
        "OAUTH2_CALLBACK_PORT": str(callback_port),
        "OAUTH2_TOKEN_CACHE_DIR": str(cache),
        "BROWSER": f"{sys.executable} {HERE / 'scripted_browser.py'} %s",
        "SCRIPTED_BROWSER_LOG": str(log),
        "PYTHONPATH": str(HERE.parent.parent),
    }


async def test_the_first_run_logs_in_and_the_second_is_silent(
    auth_server: AuthServer, callback_port: int, tmp_path: Path
) -> None:
    browser = FollowingBrowser()
    with anyio.fail_after(BOUND_SECONDS):
        async with Proxy(config(auth_server, callback_port, tmp_path), browser=browser) as proxy:
            first = await proxy.access_token()
    (url,) = browser.opened
    query = parse_qs(urlsplit(url).query)
    assert query["response_type"] == ["code"]
    assert query["code_challenge_method"] == ["S256"]
    assert query["redirect_uri"] == [f"http://127.0.0.1:{callback_port}/callback"]
    assert query["scope"] == ["mcp"]

    no_browser = UnusableBrowser()
    with anyio.fail_after(BOUND_SECONDS):
        async with Proxy(config(auth_server, callback_port, tmp_path), browser=no_browser) as proxy:
            second = await proxy.access_token()
    assert no_browser.opened == []
    assert second.value != first.value
    assert auth_server.provider.authorizations == 1
    assert auth_server.provider.reused_refresh_tokens == []


async def test_login_status_and_logout_commands(
    auth_server: AuthServer, callback_port: int, tmp_path: Path
) -> None:
    log = tmp_path / "browser.log"
    environment = env(auth_server, callback_port, tmp_path / "cache", log)

    async def run(command: str) -> tuple[int, str]:
        result = await anyio.run_process([COMMAND, command], env=environment, check=False)
        return result.returncode, result.stdout.decode()

    with anyio.fail_after(BOUND_SECONDS):
        assert (await run("status"))[0] == 1
        code, out = await run("login")
        assert code == 0, out
        assert "Logged in as client proxy-client" in out
        code, out = await run("status")
        assert (code, out.startswith("Logged in: client proxy-client")) == (0, True)
        code, out = await run("logout")
        assert (code, out.startswith("Logged out")) == (0, True)
        assert (await run("status"))[0] == 1
    assert len(log.read_text().splitlines()) == 1


async def test_several_processes_share_one_login_and_never_burn_a_refresh_token(
    auth_server: AuthServer, callback_port: int, tmp_path: Path
) -> None:
    log = tmp_path / "browser.log"
    environment = {**env(auth_server, callback_port, tmp_path / "cache", log), "ROUNDS": "4"}
    outputs: list[tuple[int, str]] = []

    async def worker() -> None:
        result = await anyio.run_process(
            [sys.executable, str(HERE / "rotation_worker.py")], env=environment, check=False
        )
        outputs.append((result.returncode, result.stderr.decode()))

    with anyio.fail_after(BOUND_SECONDS * 2):
        async with anyio.create_task_group() as workers:
            for _ in range(4):
                workers.start_soon(worker)
    for code, stderr in outputs:
        assert code == 0, stderr
        assert "invalid_grant" not in stderr
    assert len(log.read_text().splitlines()) == 1
    assert auth_server.provider.authorizations == 1
    assert auth_server.provider.reused_refresh_tokens == []
