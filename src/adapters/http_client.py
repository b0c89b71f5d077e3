"""The one pooled httpx client the proxy's HTTP adapters share.

httpx stays inside adapters (docs/dependencies.md, docs/architecture.md): the rest of the
code sees ports, so moving to httpx2 or another transport is a change here only.
"""

from __future__ import annotations

import httpx

from .._version import __version__

USER_AGENT = f"mcp-oauth2-proxy/{__version__}"


def build_http_client() -> httpx.AsyncClient:
    """The shared client.

    It never follows redirects on its own: a redirected request that carries a token or a
    client secret is an error to report, not a request to resend elsewhere. There is no read
    timeout here: an upstream request's deadline is upstream.timeoutMs, applied around the
    whole exchange by the bridge, and the server's event stream may rightly stay quiet for
    hours. Proxy variables (HTTPS_PROXY, NO_PROXY) are honoured through httpx's trust_env.
    """
    return httpx.AsyncClient(
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
        timeout=httpx.Timeout(connect=10.0, read=None, write=30.0, pool=None),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
    )


HttpClient = httpx.AsyncClient
