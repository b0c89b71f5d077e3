"""The one pooled httpx client the proxy's HTTP adapters share.

httpx stays inside adapters (docs/dependencies.md, docs/architecture.md): the rest of the
code sees ports, so moving to httpx2 or another transport is a change here only.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import ssl
from collections.abc import Callable, Mapping

import httpx

from .._version import __version__
from .stderr_log import package_logger

log = package_logger()

USER_AGENT = f"mcp-oauth2-proxy/{__version__}"
_TIMEOUT = httpx.Timeout(connect=10.0, read=None, write=30.0, pool=None)
_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=64)


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
        timeout=_TIMEOUT,
        limits=_LIMITS,
        verify=tls_context(),
    )


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one TLS context of the process: loading the CA bundle takes about 40 ms, so the
    IdP's client and the upstream's (on either engine) share it. It trusts what httpx trusts,
    SSL_CERT_FILE and SSL_CERT_DIR included."""
    return httpx.create_ssl_context()


def build_upstream_client(proxies: Mapping[str, str]) -> httpx.AsyncClient:
    """The client for the upstream, where every tool call goes: the same httpx client, moved
    onto aiohttp's faster engine once that is loaded (`WarmingTransport`), unless an HTTP
    proxy is configured. `proxies` is what httpx itself reads (`urllib.request.getproxies()`:
    HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, and on macOS and Windows the system settings); httpx
    applies them only to its own transport, so behind a proxy the shared client is used."""
    if any(proxies.get(scheme, "").strip() for scheme in _PROXIED_SCHEMES):
        return build_http_client()
    return httpx.AsyncClient(
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
        timeout=_TIMEOUT,
        transport=WarmingTransport(),
    )


class WarmingTransport(httpx.AsyncBaseTransport):
    """httpx's own transport for the first requests, aiohttp's from when it is loaded.

    Importing aiohttp takes longer than everything else the proxy loads (about 150 ms), and
    the first request is the client's `initialize`, which is waiting: so aiohttp is imported
    in a worker thread after that first request, and later requests move onto it. Requests
    already under way finish where they started."""

    def __init__(self) -> None:
        self._first = httpx.AsyncHTTPTransport(limits=_LIMITS, verify=tls_context())
        self._fast: httpx.AsyncBaseTransport | None = None
        self._loading: asyncio.Future[_TransportMaker] | None = None
        self._failed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._fast is not None:
            return await self._fast.handle_async_request(request)
        if self._loading is not None and self._loading.done() and not self._failed:
            if self._loading.exception() is None:
                self._fast = self._loading.result()(tls_context)
                return await self._fast.handle_async_request(request)
            # Slower, but working: a broken aiohttp installation must not break the proxy.
            self._failed = True
            log.warning(
                "could not load aiohttp; the upstream stays on httpx's own transport",
                extra={"reason": repr(self._loading.exception())},
            )
        response = await self._first.handle_async_request(request)
        if self._loading is None:
            self._loading = asyncio.get_running_loop().run_in_executor(None, _aiohttp_transport)
        return response

    async def aclose(self) -> None:
        await self._first.aclose()
        if self._fast is not None:
            await self._fast.aclose()


_TransportMaker = Callable[[Callable[[], ssl.SSLContext]], httpx.AsyncBaseTransport]


def _aiohttp_transport() -> _TransportMaker:
    module = importlib.import_module(f"{__package__}.aiohttp_transport")
    maker: _TransportMaker = module.AiohttpTransport
    return maker


_PROXIED_SCHEMES = ("http", "https", "all")
HttpClient = httpx.AsyncClient
