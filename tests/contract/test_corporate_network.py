"""A company network with zero flags: an HTTP proxy that only allows CONNECT tunnels, and
servers whose certificates a company CA signed. The installed command, driven by the MCP
SDK's client, reaches both the IdP and the upstream through the tunnel."""

from __future__ import annotations

import ssl
import sys
from pathlib import Path

import anyio
import mcp_types as types
import pytest
import trustme
from mcp import Client, StdioServerParameters

from .connect_proxy import connect_proxy
from .environment import clean_env
from .local_idp import local_idp
from .upstream import running_upstream

pytestmark = [pytest.mark.anyio, pytest.mark.contract]

COMMAND = str(Path(sys.executable).with_name("mcp-oauth2-proxy"))
BOUND_SECONDS = 60


async def test_requests_go_through_an_https_proxy_tunnel_and_arrive(tmp_path: Path) -> None:
    ca = trustme.CA(organization_name="Example Corp")
    issued = ca.issue_cert("127.0.0.1")
    bundle, chain, key = tmp_path / "ca.pem", tmp_path / "chain.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(bundle))
    chain.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    idp_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    issued.configure_cert(idp_tls)

    with local_idp(tls=idp_tls) as idp:
        async with (
            running_upstream(idp, tls=(str(chain), str(key))) as upstream,
            connect_proxy() as proxy,
        ):
            env = clean_env(
                HTTPS_PROXY=proxy.url,
                SSL_CERT_FILE=str(bundle),
                UPSTREAM_URL=upstream.url,
                OAUTH2_GRANT="client_credentials",
                OAUTH2_CLIENT_ID=idp.client_id,
                OAUTH2_CLIENT_SECRET=idp.client_secret,
                OAUTH2_TOKEN_URL=idp.url,
            )
            params = StdioServerParameters(command=COMMAND, env=env)
            with anyio.fail_after(BOUND_SECONDS):
                async with Client(params) as session:
                    result = await session.call_tool("echo", {"text": "through the tunnel"})
    (content,) = result.content
    assert isinstance(content, types.TextContent)
    assert content.text == "through the tunnel"
    upstream_authority = upstream.url.split("/")[2]
    idp_authority = idp.url.split("/")[2]
    assert upstream_authority in proxy.tunnels
    assert idp_authority in proxy.tunnels
    assert upstream.posts("tools/call")
