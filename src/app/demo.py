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


async def run_demo(
    servers: DemoServers,
    client: SdkDemoClient,
    report: Report,
    *,
    interactive: bool = False,
    cache_dir: str,
) -> None:
    """Start the servers, check the MCP server refuses anonymous requests, then drive a
    session through a freshly spawned proxy that knows only the server's URL and its client:
    it discovers the IdP and gets a token itself (with `interactive`, through the browser
    login). Raises whatever breaks, after reporting what worked."""
    async with servers.running(report) as endpoints:
        status = await servers.status_without_token(endpoints.mcp_url)
        report("MCP server", f"{endpoints.mcp_url} answers HTTP {status} without a token")
        # The user's own proxy settings must not leak into the demo's proxy.
        ours = {setting.env for setting in SETTINGS} | {CONFIG_FILE_ENV}
        env = {
            **{name: value for name, value in os.environ.items() if name not in ours},
            "UPSTREAM_URL": endpoints.mcp_url,
            "OAUTH2_CLIENT_ID": endpoints.client_id,
            # A throwaway cache: the demo's login must not replace a real one.
            "OAUTH2_TOKEN_CACHE_DIR": cache_dir,
            "LOG_LEVEL": "warn",
        }
        if interactive:
            env |= {"OAUTH2_GRANT": "authorization_code", "OAUTH2_CALLBACK_PORT": "0"}
            how = "the browser login (authorization_code with PKCE)"
        else:
            env |= {
                "OAUTH2_GRANT": "client_credentials",
                "OAUTH2_CLIENT_SECRET": endpoints.client_secret,
            }
            how = "client_credentials"
        report("proxy", f"spawned over stdio with UPSTREAM_URL and a client id; grant: {how}")
        try:
            await client.drive([sys.executable, "-m", "mcp_oauth2_proxy"], env, report)
        except Exception as broken:  # the SDK's task groups wrap it: say it plainly instead
            stopped = broken
        else:
            return
    # Raised once the servers are down, so they stop cleanly instead of mid-request.
    raise DemoFailed("the session did not finish; the proxy's log above says why") from stopped


class DemoFailed(Exception):
    """The demo's session broke off (the proxy's own log line says why)."""
