"""The composition root: the only place that chooses and constructs adapters.

Used with the least magic dependency-injector offers: explicit providers and constructor
injection, no wiring. A fresh container per `Proxy`; tests and harnesses swap an adapter with
`container.<provider>.override(...)`. Async lifecycles (the httpx client) are opened and
closed by `Proxy`, since dependency-injector's async resources are asyncio-only.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING

from dependency_injector import containers, providers

from ..adapters.client_registry import FileClientRegistry
from ..adapters.config_file import JsonConfigFile
from ..adapters.entropy import SystemEntropy
from ..adapters.http_client import HttpClient, build_http_client, build_upstream_client
from ..adapters.http_discovery import HttpDiscovery
from ..adapters.http_token_endpoint import HttpTokenEndpoint
from ..adapters.http_upstream import HttpUpstream
from ..adapters.port_checker import LoopbackPortChecker
from ..adapters.stdio import ProcessStdio, StdioChannel
from ..adapters.system_clock import SystemClock
from ..domain.config import OAuth2Config, ProxyConfig, UpstreamConfig
from ..domain.config import TokenStore as TokenStoreMode
from ..domain.config_merge import LoadedConfig, Source
from ..domain.discovery import Discovered
from ..domain.ports import (
    BrowserOpener,
    CallbackListener,
    ClientRegistry,
    Clock,
    ConfigFileReader,
    DiscoveryTransport,
    Entropy,
    PortChecker,
    TokenCommand,
    TokenEndpoint,
    TokenStore,
    UpstreamTransport,
)
from ..domain.redaction import Redactor
from ..domain.token_command import command_words
from ..domain.token_exchange import TokenRequestBuilder
from .bridge import Bridge
from .client_assertions import ClientAssertions
from .config_loading import load_config
from .discovery import Discovery, Rediscovery, Registrar
from .grants import Grant, build_grant, build_token_requests
from .token_client import TokenClient
from .token_manager import TokenManager

if TYPE_CHECKING:
    from .device_login import DeviceLogin
    from .interactive_login import InteractiveLogin


def loopback_callback_listener() -> CallbackListener:
    """The browser login's listener, imported when first needed: h11 and the listener cost
    nothing to a proxy that never logs in with a browser (docs/performance.md)."""
    from ..adapters.callback_listener import LoopbackCallbackListener

    return LoopbackCallbackListener()


def system_browser() -> BrowserOpener:
    """Imported when first needed, like the listener: the browser login's code (and the
    standard library's webbrowser) is no part of the cold start of the other grants."""
    from ..adapters.browser import SystemBrowser

    return SystemBrowser()


def build_interactive_login(
    oauth: OAuth2Config,
    client: TokenClient,
    builder: TokenRequestBuilder,
    listener: CallbackListener,
    browser: BrowserOpener,
    entropy: Entropy,
    discovered: Discovered | None,
) -> InteractiveLogin:
    """The browser login, imported when its grant first asks for it (see system_browser)."""
    from .interactive_login import InteractiveLogin

    return InteractiveLogin(oauth, client, builder, listener, browser, entropy, discovered)


def build_device_login(
    oauth: OAuth2Config, client: TokenClient, builder: TokenRequestBuilder, clock: Clock
) -> DeviceLogin:
    """The device login, imported when its grant first asks for it (see system_browser)."""
    from .device_login import DeviceLogin

    return DeviceLogin(oauth, client, builder, clock)


def cache_directory(oauth: OAuth2Config) -> Path:
    """OAUTH2_TOKEN_CACHE_DIR when set, else the per-OS config directory."""
    if oauth.token_cache_dir is not None:
        return Path(oauth.token_cache_dir).expanduser()
    from ..adapters.token_store import default_cache_dir

    return default_cache_dir()


def cache_directory_source(loaded: LoadedConfig) -> str:
    """Where OAUTH2_TOKEN_CACHE_DIR came from, for the message when the directory is unusable."""
    return loaded.source_of("oauth2.tokenCacheDir").describe()


def encrypted_file_token_store(
    directory: Path, source: str = "default", mode: TokenStoreMode = "file"
) -> TokenStore:
    """The token cache, imported when first needed: its file locking, cryptography and the
    keychain cost nothing to a grant that keeps no login (docs/performance.md)."""
    from ..adapters.cache_keys import cache_key
    from ..adapters.token_store import EncryptedFileTokenStore

    return EncryptedFileTokenStore(directory, source=source, keys=cache_key(directory, mode))


def caches_logins(oauth: OAuth2Config) -> bool:
    """Only the grants that live on refresh tokens use the cache; client credentials,
    passwords and the token command can always ask again, and never touch the disk."""
    return oauth.token_command is None and oauth.grant in (
        "authorization_code",
        "refresh_token",
        "device_code",
    )


def client_assertions_for(
    oauth: OAuth2Config, clock: Clock, entropy: Entropy
) -> ClientAssertions | None:
    """The private_key_jwt signer, when the client authenticates that way. The key is read
    now, so a missing or wrong key stops the proxy at its start, naming the setting; and
    cryptography is imported only by those who sign."""
    if oauth.auth_style != "private_key_jwt" or oauth.client_assertion_key_file is None:
        return None
    from ..adapters.assertion_signer import PemAssertionSigner

    signer = PemAssertionSigner(oauth.client_assertion_key_file, oauth.client_assertion_alg)
    return ClientAssertions(signer, clock, entropy, oauth.client_assertion_kid)


def subprocess_token_command(oauth: OAuth2Config) -> TokenCommand:
    """The user's credential helper (only built when oauth2.tokenCommand is set)."""
    from ..adapters.token_command import SubprocessTokenCommand

    assert oauth.token_command is not None  # build_grant asks only then
    return SubprocessTokenCommand(command_words(oauth.token_command))


def store_for_grant(oauth: OAuth2Config, store: Callable[[], TokenStore]) -> TokenStore | None:
    return store() if caches_logins(oauth) else None


def registrar_for(
    loaded: LoadedConfig,
    found: Discovered | None,
    discovery: Discovery,
    builder: TokenRequestBuilder,
) -> Registrar | None:
    """A Registrar when this proxy registered its own client (and may need to again)."""
    source = loaded.source_of("oauth2.clientId")
    if found is None or source != Source("discovery", "dynamic client registration"):
        return None  # configured, or a metadata document URL: nothing to register again
    return Registrar(discovery, found, loaded.config.oauth2, builder)


def rediscovery_for(
    original: LoadedConfig | None,
    found: Discovered | None,
    discovery: Discovery,
    builder: TokenRequestBuilder,
    registrar: Registrar | None,
    redactor: Redactor,
) -> Rediscovery | None:
    """A Rediscovery when the authorization server was discovered (and so may move)."""
    if original is None or found is None:
        return None
    return Rediscovery(discovery, original, found, builder, registrar, redactor)


class ConfigLoading(containers.DeclarativeContainer):
    """What reading the configuration takes, on its own for `Proxy.load_config`: a container
    copies every provider it has when made, and the command reads its configuration before
    the proxy that gets its own `Container` exists."""

    env: providers.Provider[dict[str, str]] = providers.Dependency(instance_of=dict, default={})
    config_file_reader: providers.Provider[ConfigFileReader] = providers.Singleton(JsonConfigFile)
    loaded_config: providers.Provider[LoadedConfig] = providers.Singleton(
        load_config, env=env, reader=config_file_reader
    )


class Container(ConfigLoading):
    """Every part of one proxy process, built on first use from its configuration."""

    config: providers.Provider[ProxyConfig] = providers.Callable(
        attrgetter("config"), ConfigLoading.loaded_config
    )
    oauth2: providers.Provider[OAuth2Config] = providers.Callable(attrgetter("oauth2"), config)
    upstream_config: providers.Provider[UpstreamConfig] = providers.Callable(
        attrgetter("upstream"), config
    )

    clock: providers.Provider[Clock] = providers.Singleton(SystemClock)
    redactor: providers.Provider[Redactor] = providers.Singleton(Redactor)
    http_client: providers.Provider[HttpClient] = providers.Singleton(build_http_client)
    token_endpoint: providers.Provider[TokenEndpoint] = providers.Singleton(
        HttpTokenEndpoint, http_client
    )

    token_requests: providers.Provider[TokenRequestBuilder] = providers.Singleton(
        build_token_requests, oauth2
    )
    entropy: providers.Provider[Entropy] = providers.Singleton(SystemEntropy)
    token_client: providers.Provider[TokenClient] = providers.Singleton(
        TokenClient,
        token_endpoint,
        clock,
        redactor,
        refresh_skew_seconds=providers.Callable(attrgetter("refresh_skew_seconds"), oauth2),
        requests=token_requests,
        assertions=providers.Callable(client_assertions_for, oauth2, clock, entropy),
    )
    browser: providers.Provider[BrowserOpener] = providers.Singleton(system_browser)
    callback_listener: providers.Provider[CallbackListener] = providers.Singleton(
        loopback_callback_listener
    )
    port_checker: providers.Provider[PortChecker] = providers.Singleton(LoopbackPortChecker)
    token_store: providers.Provider[TokenStore] = providers.Singleton(
        encrypted_file_token_store,
        providers.Callable(cache_directory, oauth2),
        providers.Callable(cache_directory_source, ConfigLoading.loaded_config),
        providers.Callable(attrgetter("token_store"), oauth2),
    )
    discovery_transport: providers.Provider[DiscoveryTransport] = providers.Singleton(
        HttpDiscovery,
        http_client,
        allow_insecure_http=providers.Callable(
            lambda config: config.security.allow_insecure_http, config
        ),
    )
    client_registry: providers.Provider[ClientRegistry] = providers.Singleton(
        FileClientRegistry, providers.Callable(cache_directory, oauth2)
    )
    discovery: providers.Provider[Discovery] = providers.Singleton(
        Discovery, discovery_transport, client_registry
    )
    # What startup discovery found (set by Proxy once it has run), else None.
    discovered: providers.Provider[Discovered | None] = providers.Object(None)
    # The configuration as loaded, before discovery filled it in (Proxy sets it too).
    original_config: providers.Provider[LoadedConfig | None] = providers.Object(None)
    registrar: providers.Provider[Registrar | None] = providers.Singleton(
        registrar_for, ConfigLoading.loaded_config, discovered, discovery, token_requests
    )
    rediscovery: providers.Provider[Rediscovery | None] = providers.Singleton(
        rediscovery_for,
        original_config,
        discovered,
        discovery,
        token_requests,
        registrar,
        redactor,
    )
    interactive_login: providers.Provider[InteractiveLogin] = providers.Singleton(
        build_interactive_login,
        oauth2,
        token_client,
        token_requests,
        callback_listener,
        browser,
        entropy,
        discovered,
    )
    device_login: providers.Provider[DeviceLogin] = providers.Singleton(
        build_device_login, oauth2, token_client, token_requests, clock
    )
    token_command: providers.Provider[TokenCommand] = providers.Singleton(
        subprocess_token_command, oauth2
    )
    grant: providers.Provider[Grant] = providers.Singleton(
        build_grant,
        oauth2,
        token_client,
        token_requests,
        interactive_login.provider,
        device_login.provider,
        token_command.provider,
        clock,
        redactor,
    )
    token_manager: providers.Provider[TokenManager] = providers.Singleton(
        TokenManager,
        grant,
        token_client,
        token_requests,
        clock,
        providers.Callable(store_for_grant, oauth2, token_store.provider),
        registrar,
        rediscovery,
    )

    # The upstream gets its own client: every tool call goes through it (see http_client).
    upstream_http_client: providers.Provider[HttpClient] = providers.Singleton(
        build_upstream_client, providers.Callable(urllib.request.getproxies)
    )
    upstream: providers.Provider[UpstreamTransport] = providers.Singleton(
        HttpUpstream, upstream_http_client, providers.Callable(attrgetter("url"), upstream_config)
    )
    process_stdio: providers.Provider[ProcessStdio] = providers.Singleton(ProcessStdio)
    # Built per served connection, from the streams `Proxy.serve` is given.
    client_channel: providers.Provider[StdioChannel] = providers.Factory(
        StdioChannel,
        max_line_bytes=providers.Callable(attrgetter("max_message_bytes"), upstream_config),
    )
    bridge: providers.Factory[Bridge] = providers.Factory(
        Bridge,
        upstream=upstream,
        tokens=token_manager,
        config=upstream_config,
        redactor=redactor,
        now=providers.Callable(attrgetter("now"), clock),
    )
