"""The composition root: every provider resolves, a proxy builds, an adapter can be swapped."""

from __future__ import annotations

import logging

import pytest
from dependency_injector import providers
from pydantic import SecretStr

from mcp_oauth2_proxy import (
    ConfigError,
    InsecureUrlError,
    OAuth2Config,
    Proxy,
    ProxyConfig,
    ProxyError,
    UpstreamConfig,
)
from mcp_oauth2_proxy.adapters.http_token_endpoint import HttpTokenEndpoint
from mcp_oauth2_proxy.adapters.stderr_log import package_logger
from mcp_oauth2_proxy.app.container import Container
from mcp_oauth2_proxy.app.token_manager import TokenManager

from ..fakes import FakeClock, FakeTokenEndpoint, token_reply

CONFIG = ProxyConfig(
    upstream=UpstreamConfig(url="https://mcp.example/mcp"),
    oauth2=OAuth2Config(
        grant="client_credentials",
        client_id="app",
        client_secret=SecretStr("client-secret-1"),
        token_url="https://idp.example/token",
    ),
)


def test_every_dependency_is_provided_and_the_graph_builds() -> None:
    container = Container(env={"UPSTREAM_URL": "https://mcp.example/mcp"})
    container.check_dependencies()
    container.loaded_config.override(providers.Object(Proxy(CONFIG).container.loaded_config()))
    assert isinstance(container.token_manager(), TokenManager)
    assert isinstance(container.token_endpoint(), HttpTokenEndpoint)


def test_the_container_reads_the_environment() -> None:
    env = {
        "UPSTREAM_URL": "https://mcp.example/mcp",
        "OAUTH2_GRANT": "client_credentials",
        "OAUTH2_CLIENT_ID": "app",
        "OAUTH2_CLIENT_SECRET": "s",
        "OAUTH2_TOKEN_URL": "https://idp.example/token",
    }
    loaded = Proxy.load_config(env)
    assert loaded.config.oauth2.client_id == "app"
    assert loaded.source_of("oauth2.clientId").describe() == "env OAUTH2_CLIENT_ID"


@pytest.mark.anyio
async def test_an_adapter_swapped_through_the_container_is_used() -> None:
    endpoint = FakeTokenEndpoint(token_reply("from-override"))
    proxy = Proxy(CONFIG)
    proxy.container.token_endpoint.override(providers.Object(endpoint))
    async with proxy:
        assert (await proxy.access_token()).value == "from-override"
    assert endpoint.forms[0]["client_secret"] == "client-secret-1"


@pytest.mark.anyio
async def test_ports_passed_to_proxy_replace_the_adapters(caplog: pytest.LogCaptureFixture) -> None:
    endpoint = FakeTokenEndpoint(token_reply("access-1", expires_in=100), token_reply("access-2"))
    clock = FakeClock()
    async with Proxy(CONFIG, clock=clock, token_endpoint=endpoint) as proxy:
        first = await proxy.access_token()
        clock.advance(100)
        assert (await proxy.access_token()).value == "access-2"
        proxy.invalidate(first)
        with caplog.at_level(logging.INFO, logger="mcp_oauth2_proxy"):
            package_logger().info("secret is client-secret-1, token access-2")
    assert len(endpoint.requests) == 2
    assert "secret is ***, token ***" in caplog.text
    assert package_logger().filters == []


def test_a_python_config_is_checked_like_a_loaded_one() -> None:
    with pytest.raises(ConfigError, match="OAUTH2_CLIENT_SECRET"):
        Proxy(
            CONFIG.model_copy(
                update={
                    "oauth2": OAuth2Config(
                        grant="client_credentials", client_id="a", token_url="https://i/t"
                    )
                }
            )
        )
    with pytest.raises(InsecureUrlError, match="ALLOW_INSECURE_HTTP"):
        Proxy(CONFIG.model_copy(update={"upstream": UpstreamConfig(url="http://mcp.example/mcp")}))


@pytest.mark.anyio
async def test_a_proxy_that_fails_to_start_leaves_nothing_behind() -> None:
    # Discovery runs (no token URL) against a closed loopback port, and fails.
    config = CONFIG.model_copy(
        update={
            "upstream": UpstreamConfig(url="http://127.0.0.1:9/mcp"),
            "oauth2": OAuth2Config(client_id="app", client_secret=SecretStr("s")),
        }
    )
    before = list(package_logger().filters)
    proxy = Proxy(config)
    with pytest.raises(ProxyError):
        async with proxy:
            raise AssertionError("the proxy should not have started")
    assert package_logger().filters == before
