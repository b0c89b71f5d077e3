"""The `demo` use case: the whole path, proxy included, against servers on loopback.

A newcomer sees it work before configuring anything: an IdP issues a token to the proxy, the
proxy forwards an MCP session to a server that refuses requests without one, and the
official SDK client on the other side never sees a token.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from dependency_injector import containers, providers

from ..adapters.demo_client import SdkDemoClient
from ..adapters.demo_servers import DemoServers
from ..domain.settings import CONFIG_FILE_ENV, SETTINGS

Report = Callable[[str, str], None]


class DemoContainer(containers.DeclarativeContainer):
    """The demo's composition root. Apart from `Container` because its adapters need the
    optional MCP SDK (the `demo` extra): importing this module is what requires it."""

    servers: providers.Provider[DemoServers] = providers.Factory(DemoServers)
    client: providers.Provider[SdkDemoClient] = providers.Factory(SdkDemoClient)


async def run_demo(servers: DemoServers, client: SdkDemoClient, report: Report) -> None:
    """Start the servers, check the MCP server refuses anonymous requests, then drive a
    session through a freshly spawned proxy. Raises whatever breaks, after reporting."""
    async with servers.running() as endpoints:
        report("IdP token endpoint", endpoints.token_url)
        status = await servers.status_without_token(endpoints.mcp_url)
        report("MCP server", f"{endpoints.mcp_url} (HTTP {status} without a token)")
        # The user's own proxy settings must not leak into the demo's proxy.
        ours = {setting.env for setting in SETTINGS} | {CONFIG_FILE_ENV}
        env = {
            **{name: value for name, value in os.environ.items() if name not in ours},
            "UPSTREAM_URL": endpoints.mcp_url,
            "OAUTH2_GRANT": "client_credentials",
            "OAUTH2_TOKEN_URL": endpoints.token_url,
            "OAUTH2_CLIENT_ID": endpoints.client_id,
            "OAUTH2_CLIENT_SECRET": endpoints.client_secret,
            "LOG_LEVEL": "warn",
        }
        report("proxy", f"spawned over stdio, client_credentials as {endpoints.client_id!r}")
        await client.drive([sys.executable, "-m", "mcp_oauth2_proxy"], env, report)
