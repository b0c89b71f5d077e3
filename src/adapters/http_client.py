"""The one pooled httpx client the proxy's HTTP adapters share.

httpx stays inside adapters (docs/dependencies.md, docs/architecture.md): the rest of the
code sees ports, so moving to httpx2 or another transport is a change here only.
"""

from __future__ import annotations

import functools
import os
import ssl
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx

from .._version import __version__
from .http11_transport import Http11Transport
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
    """The one TLS context of the process, shared by the IdP's client and the upstream's (on
    either engine), since loading trust anchors is one of the costlier things done at start.

    What it trusts, in order: the PEM bundle SSL_CERT_FILE (or the directory SSL_CERT_DIR)
    names, alone, as curl and httpx do; else the operating system's trust store, so a
    company CA installed on the laptop (TLS-inspecting proxies) just works: through
    truststore on macOS and Windows, and on Linux OpenSSL's own system store, which is what
    truststore would read there too, but loaded once here rather than at every handshake;
    else, where neither can run, certifi's public roots."""
    cafile = os.environ.get("SSL_CERT_FILE") or None
    capath = os.environ.get("SSL_CERT_DIR") or None
    if cafile is not None or capath is not None:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    if sys.platform not in ("darwin", "win32") and _system_store_found():
        return ssl.create_default_context()
    try:
        import truststore

        return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    except (ImportError, OSError, NotImplementedError) as unusable:
        log.warning(
            "the operating system's trust store cannot be used; trusting certifi's public "
            "roots only (set SSL_CERT_FILE to add a company CA)",
            extra={"reason": repr(unusable)},
        )
        return httpx.create_ssl_context()


def _system_store_found() -> bool:
    """Whether OpenSSL's default CA file or directory exists (truststore searches the usual
    other places when it does not)."""
    paths = ssl.get_default_verify_paths()
    return paths.cafile is not None or (
        paths.capath is not None and any(Path(paths.capath).glob("*.[0-9]"))
    )


def failure_reason(exc: httpx.HTTPError) -> str:
    """What went wrong in a failed exchange, in words that point at the fix: a certificate
    that could not be verified names the trust settings, since behind a TLS-inspecting
    company proxy that is the usual cause."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            # Some wrappers carry no verify_message of their own; their text has it.
            said = getattr(cause, "verify_message", None) or str(cause)
            return (
                f"the server's TLS certificate was not trusted ({said}); if "
                "a company proxy or CA signs it, install that CA in the operating system's "
                "trust store (the proxy uses it) or set SSL_CERT_FILE to a PEM bundle that "
                "includes it, and check HTTPS_PROXY / NO_PROXY"
            )
        if isinstance(cause, ssl.SSLError):
            said = getattr(cause, "reason", None) or cause
            return (
                f"the TLS handshake failed ({said}); check that the URL is https:// on a TLS "
                "port and, behind a company proxy, HTTPS_PROXY / NO_PROXY"
            )
        cause = cause.__cause__ or cause.__context__
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


def build_upstream_client(proxies: Mapping[str, str]) -> httpx.AsyncClient:
    """The client for the upstream, where every tool call goes: the same httpx client on a
    leaner HTTP/1.1 engine (`Http11Transport`), unless an HTTP proxy is configured.
    `proxies` is what httpx itself reads (`urllib.request.getproxies()`: HTTP_PROXY,
    HTTPS_PROXY, ALL_PROXY, and on macOS and Windows the system settings); httpx applies them
    only to its own transport, so behind a proxy the shared client is used."""
    if any(proxies.get(scheme, "").strip() for scheme in _PROXIED_SCHEMES):
        return build_http_client()
    return httpx.AsyncClient(
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
        timeout=_TIMEOUT,
        transport=Http11Transport(tls_context),
    )


_PROXIED_SCHEMES = ("http", "https", "all")
HttpClient = httpx.AsyncClient
