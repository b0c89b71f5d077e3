"""The one pooled httpx client the proxy's HTTP adapters share.

httpx stays inside adapters (docs/dependencies.md, docs/architecture.md): the rest of the
code sees ports, so moving to httpx2 or another transport is a change here only.
"""

from __future__ import annotations

import httpx

from .._version import __version__

USER_AGENT = f"mcp-oauth2-proxy/{__version__}"


def build_http_client() -> httpx.AsyncClient:
    """A client that never follows redirects on its own: a redirected POST to a token
    endpoint is an error to report, not a request to resend with credentials elsewhere.
    Proxy variables (HTTPS_PROXY, NO_PROXY) are honoured through httpx's trust_env."""
    return httpx.AsyncClient(
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
        timeout=httpx.Timeout(30.0),
    )


HttpClient = httpx.AsyncClient
