"""Which certificates the proxy trusts, and what it says when a certificate is not trusted:
a company CA in SSL_CERT_FILE works, the operating system's store is the default, and a
failed verification names the settings that fix it."""

from __future__ import annotations

import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
import trustme
import truststore
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSListener, TLSStream

from mcp_oauth2_proxy.adapters import http_client
from mcp_oauth2_proxy.adapters.http11_transport import Http11Transport
from mcp_oauth2_proxy.adapters.http_client import failure_reason, tls_context
from mcp_oauth2_proxy.adapters.http_token_endpoint import HttpTokenEndpoint
from mcp_oauth2_proxy.domain.errors import IdpUnreachableError
from mcp_oauth2_proxy.domain.token_exchange import TokenRequest

from .test_http_upstream import loopback

pytestmark = pytest.mark.anyio

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


@pytest.fixture(autouse=True)
def no_trust_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from a machine without SSL_CERT_FILE / SSL_CERT_DIR."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


@pytest.fixture
def company_ca() -> trustme.CA:
    return trustme.CA(organization_name="Example Corp TLS inspection")


@asynccontextmanager
async def tls_server(ca: trustme.CA) -> AsyncIterator[str]:
    """An HTTPS server on 127.0.0.1 whose certificate `ca` signed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    async def answer(stream: TLSStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(ANSWER)

    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
    listener = TLSListener(tcp, context, standard_compatible=False)
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, answer)
        yield f"https://127.0.0.1:{tcp.extra(SocketAttribute.local_port)}/token"
        tasks.cancel_scope.cancel()


def fresh_context() -> ssl.SSLContext:
    """tls_context() as a new process would build it (the real one is cached)."""
    return tls_context.__wrapped__()


async def test_ssl_cert_file_makes_a_company_ca_trusted(
    company_ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "company-ca.pem"
    company_ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    async with tls_server(company_ca) as url, httpx.AsyncClient(verify=fresh_context()) as client:
        response = await client.get(url)
    assert response.status_code == 200


@pytest.mark.parametrize("platform", ["darwin", "win32"])
async def test_the_operating_systems_trust_store_is_the_default_on_macos_and_windows(
    monkeypatch: pytest.MonkeyPatch, platform: str
) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    context = fresh_context()
    assert isinstance(context, truststore.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


async def test_on_linux_the_system_store_is_loaded_once_without_truststore(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(http_client, "_system_store_found", lambda: True)
    context = fresh_context()
    assert not isinstance(context, truststore.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


async def test_on_linux_without_a_system_store_truststore_looks_further(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(http_client, "_system_store_found", lambda: False)
    assert isinstance(fresh_context(), truststore.SSLContext)


async def test_an_untrusted_certificate_names_the_trust_settings(company_ca: trustme.CA) -> None:
    async with tls_server(company_ca) as url, httpx.AsyncClient(verify=fresh_context()) as client:
        request = TokenRequest(url=url, grant="client_credentials", form=(), headers=())
        with pytest.raises(IdpUnreachableError) as raised:
            await HttpTokenEndpoint(client).post(request)
    message = str(raised.value)
    assert "TLS certificate was not trusted" in message
    assert "SSL_CERT_FILE" in message
    assert "trust store" in message


async def test_the_upstream_engine_reports_an_untrusted_certificate_the_same_way(
    company_ca: trustme.CA,
) -> None:
    context = fresh_context()
    transport = Http11Transport(lambda: context)
    async with tls_server(company_ca) as url, httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError) as raised:
            await client.post(url, content=b"{}")
    assert "SSL_CERT_FILE" in failure_reason(raised.value)


async def test_https_to_a_cleartext_port_says_the_handshake_failed() -> None:
    async def cleartext(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")

    async with loopback(cleartext) as url, httpx.AsyncClient(verify=fresh_context()) as client:
        with pytest.raises(httpx.ConnectError) as raised:
            await client.get(url.replace("http://", "https://"))
    assert "TLS handshake failed" in failure_reason(raised.value)
