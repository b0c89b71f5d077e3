"""`Proxy`: the public entry point that assembles one proxy from a configuration."""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import anyio.abc
from dependency_injector import providers

from ..adapters.stderr_log import attach_redaction, detach_redaction, package_logger
from ..domain.cached_login import CachedLogin
from ..domain.config import ProxyConfig
from ..domain.config_merge import LoadedConfig
from ..domain.ports import (
    BrowserOpener,
    CallbackListener,
    Clock,
    Entropy,
    TokenEndpoint,
    TokenStore,
    UpstreamTransport,
)
from ..domain.token_lifecycle import AccessToken
from .bridge import Bridge
from .config_loading import check_config
from .container import ConfigLoading, Container

log = package_logger()


class Proxy:
    """One proxy: one upstream MCP server, one OAuth2 client, one token.

    Ports passed as keyword arguments replace the real adapters, so a test harness can run
    the proxy against a fake IdP without touching the container; `proxy.container` is there
    for anything else (`proxy.container.clock.override(...)`).

    Example:
        >>> config = ProxyConfig(
        ...     upstream=UpstreamConfig(url="https://mcp.example.com/mcp"),
        ...     oauth2=OAuth2Config(grant="client_credentials", client_id="app",
        ...                         client_secret="s3cret", token_url="https://idp/token"),
        ... )
        >>> async with Proxy(config) as proxy:  # doctest: +SKIP
        ...     await proxy.access_token()        # log in before the client's first message
        ...     await proxy.serve(receive, send)  # any pair of anyio byte streams

    Args:
        config: a `ProxyConfig`, or a `LoadedConfig` that also knows where values came from.
        clock: replaces the system clock.
        token_endpoint: replaces the HTTP token endpoint.
        upstream: replaces the HTTP transport to the upstream MCP server.
        token_store: replaces the encrypted refresh-token cache on disk.
        browser: replaces the system browser that shows the login page.
        callback_listener: replaces the loopback listener for the login callback.
        entropy: replaces the OS random source (PKCE verifiers, states).

    Raises:
        ConfigError: the configuration lacks a setting its grant needs, or a URL is unsafe.
    """

    def __init__(
        self,
        config: ProxyConfig | LoadedConfig,
        *,
        clock: Clock | None = None,
        token_endpoint: TokenEndpoint | None = None,
        upstream: UpstreamTransport | None = None,
        token_store: TokenStore | None = None,
        browser: BrowserOpener | None = None,
        callback_listener: CallbackListener | None = None,
        entropy: Entropy | None = None,
    ) -> None:
        loaded = config if isinstance(config, LoadedConfig) else LoadedConfig(config)
        check_config(loaded)
        self.config = loaded.config
        self.container = Container()
        self.container.loaded_config.override(providers.Object(loaded))
        ports: list[tuple[providers.Provider[Any], object | None]] = [
            (self.container.clock, clock),
            (self.container.token_endpoint, token_endpoint),
            (self.container.upstream, upstream),
            (self.container.token_store, token_store),
            (self.container.browser, browser),
            (self.container.callback_listener, callback_listener),
            (self.container.entropy, entropy),
        ]
        for provider, port in ports:
            if port is not None:
                provider.override(providers.Object(port))
        self._stack = AsyncExitStack()
        self._bridges: list[Bridge] = []

    @staticmethod
    def load_config(env: Mapping[str, str] | None = None) -> LoadedConfig:
        """Read the file named by MCP_PROXY_CONFIG and the environment, as the command does.

        Raises:
            ConfigError: naming every offending field and where its value came from.
        """
        reader = ConfigLoading(env=dict(os.environ if env is None else env))
        return reader.loaded_config()

    async def __aenter__(self) -> Proxy:
        redactor = self.container.redactor()
        redactor.register(*self.config.secrets())
        self._stack.callback(detach_redaction, attach_redaction(redactor))
        try:
            await self._stack.enter_async_context(self.container.http_client())
            if not self.container.upstream.overridden:
                await self._stack.enter_async_context(self.container.upstream_http_client())
            await self._discover()
        except BaseException:
            # __aexit__ will not run for a failed __aenter__: undo what was set up.
            await self._stack.aclose()
            raise
        return self

    async def _discover(self) -> None:
        """Fill in what the configuration lacks from the upstream's metadata, once, before
        anything uses the token machinery (whose parts are built from the result)."""
        original = self.container.loaded_config()
        loaded, found = await self.container.discovery().resolve(original)
        check_config(loaded, discovery_pending=False)
        if found is not None:
            self.container.original_config.override(providers.Object(original))
            self.container.redactor().register(*loaded.config.secrets())
            self.container.loaded_config.override(providers.Object(loaded))
            self.container.discovered.override(providers.Object(found))
            self.config = loaded.config

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def access_token(self) -> AccessToken:
        """A valid access token, fetched or renewed if needed.

        Raises:
            OAuthError: the IdP refused or could not be reached; the message says why.
        """
        return await self.container.token_manager().token()

    async def login(self) -> AccessToken:
        """Run the browser login now and cache its refresh token (the `login` command).

        Raises:
            OAuthError: the grant has no browser login, or the IdP refused.
            ConfigError: no authorization endpoint, or the callback port is taken.
        """
        return await self.container.token_manager().login()

    def logout(self) -> bool:
        """Forget the cached login of this configuration; True when there was one."""
        return self.container.token_manager().forget_login()

    def cached_login(self) -> CachedLogin | None:
        """The cached login of this configuration, if any (never shown: its token)."""
        return self.container.token_manager().cached_login()

    def invalidate(self, token: AccessToken) -> None:
        """Forget `token` after the upstream rejected it (a newer token is kept)."""
        self.container.token_manager().invalidate(token)

    async def serve(
        self, receive: anyio.abc.ByteReceiveStream, send: anyio.abc.ByteSendStream
    ) -> None:
        """Bridge the MCP client on these byte streams to the upstream until `receive` ends
        or `stop()` is called; then finish in-flight requests and end the upstream session.

        Raises:
            ClientGone: never; a client that stops reading just ends the serving.
        """
        channel = self.container.client_channel(receive, send)
        bridge = self.container.bridge(channel)
        self._bridges.append(bridge)
        try:
            await bridge.run()
        finally:
            self._bridges.remove(bridge)

    async def serve_stdio(self) -> None:
        """`serve()` on this process's stdin and stdout: what the command does."""
        receive, send = await self.container.process_stdio().open()
        await self.serve(receive, send)

    def stop(self) -> None:
        """Shut down every `serve()` as if its input had ended."""
        for bridge in self._bridges:
            bridge.stop()
