"""Discovery and client registration: from just the upstream URL to a usable OAuth2 client.

One round at startup, the metadata lookups bounded by DISCOVERY_TIMEOUT_SECONDS (30 s, a
constant): probe the upstream
without a token, read its protected resource metadata, read its authorization server's
metadata, then find a client id (configured, else registered dynamically). Explicit settings
always win over what is discovered; what is discovered is checked before it is used
(domain.discovery). docs/discovery.md describes each step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import anyio
from pydantic import SecretStr

from ..adapters.stderr_log import notice_logger, package_logger
from ..domain.client_registration import (
    RegisteredClient,
    read_registration,
    registration_request,
)
from ..domain.config import OAuth2Config, ProxyConfig
from ..domain.config_merge import LoadedConfig, Source
from ..domain.discovery import (
    ASK_FOR_HTTPS,
    FIX_METADATA_OR_SET_ENDPOINTS,
    SET_ENDPOINTS_YOURSELF,
    Discovered,
    DiscoveryError,
    ResourceMetadata,
    ServerMetadata,
    authorization_server_metadata_urls,
    bearer_challenge,
    choose_scope,
    read_resource_metadata,
    read_server_metadata,
    resource_metadata_urls,
    unsafe_endpoints,
)
from ..domain.errors import ConfigError, ConfigProblem, InsecureUrlError, OAuthError
from ..domain.ports import ClientRegistry, DiscoveryTransport, MetadataReply
from ..domain.redaction import Redactor
from ..domain.settings import SETTINGS_BY_PATH
from ..domain.token_exchange import TokenRequestBuilder, resource_indicator
from ..domain.url_guard import insecure_reason

if TYPE_CHECKING:
    from .grants import Login

log = package_logger()
notices = notice_logger()

# Configured values that belong to one authorization server (setting → field): a move is
# not followed with them.
_BOUND_TO_THE_SERVER = {
    "oauth2.tokenUrl": "token_url",
    "oauth2.authorizationUrl": "authorization_url",
    "oauth2.deviceAuthorizationUrl": "device_authorization_url",
    "oauth2.clientAssertionKeyFile": "client_assertion_key_file",
    "oauth2.clientSecret": "client_secret",
    "oauth2.password": "password",
    "oauth2.authorizationCode": "authorization_code",
    "oauth2.codeVerifier": "code_verifier",
}

DISCOVERY_TIMEOUT_SECONDS = 30.0


def needs_discovery(config: ProxyConfig) -> bool:
    """Whether anything the grant needs is missing and discovery may find it."""
    oauth = config.oauth2
    if not config.discovery.enabled or oauth.token_command is not None:
        return False
    browser = (
        oauth.grant == "authorization_code"
        and oauth.interactive
        and oauth.authorization_url is None
    )
    device = oauth.grant == "device_code" and oauth.device_authorization_url is None
    return oauth.token_url is None or oauth.client_id is None or browser or device


class Discovery:
    """Finds the IdP and a client id for one configuration."""

    def __init__(self, transport: DiscoveryTransport, registry: ClientRegistry) -> None:
        self._transport = transport
        self._registry = registry

    async def resolve(self, loaded: LoadedConfig) -> tuple[LoadedConfig, Discovered | None]:
        """The configuration with discovered values filled in (explicit ones kept).

        Raises:
            DiscoveryError: nothing usable was found; the message lists what was tried.
            InsecureUrlError: a discovered endpoint would carry secrets in cleartext.
        """
        config = loaded.config
        if not needs_discovery(config):
            return loaded, None
        return await self.adopt(loaded, await self.locate(config))

    async def locate(self, config: ProxyConfig) -> Discovered:
        """The authorization server the upstream names, and what its metadata says.

        Raises:
            DiscoveryError: nothing usable was found, or not in time.
        """
        with anyio.move_on_after(DISCOVERY_TIMEOUT_SECONDS) as waiting:
            found = await self._discover(config)
        if waiting.cancelled_caught:
            raise DiscoveryError(
                f"discovery did not finish within {DISCOVERY_TIMEOUT_SECONDS:g} s; check that "
                f"{config.upstream.url} and its authorization server are reachable from this "
                f"machine (VPN, HTTPS_PROXY), or {SET_ENDPOINTS_YOURSELF}"
            )
        return found

    async def adopt(
        self, loaded: LoadedConfig, found: Discovered
    ) -> tuple[LoadedConfig, Discovered]:
        """`loaded` with what `found` says filled in, registering a client if none is set."""
        config = loaded.config
        oauth, sources = _apply(config.oauth2, found, config.upstream.url, loaded)
        if oauth.client_id is None:
            client = await self._client_for(found, oauth)
            secret = SecretStr(client.client_secret) if client.client_secret else None
            oauth = oauth.model_copy(
                update={
                    "client_id": client.client_id,
                    "client_secret": secret,
                    "auth_style": client.auth_style,
                }
            )
            how = (
                "client id metadata document"
                if client.client_id == oauth.client_metadata_url
                else "dynamic client registration"
            )
            sources["oauth2.clientId"] = Source("discovery", how)
        resolved = config.model_copy(update={"oauth2": oauth})
        log.info(
            "discovered the authorization server",
            extra={
                "issuer": found.issuer,
                "token_url": oauth.token_url,
                "client_id": oauth.client_id,
            },
        )
        return LoadedConfig(resolved, sources), found

    async def register_again(self, found: Discovered, oauth: OAuth2Config) -> RegisteredClient:
        """Forget the registration the server no longer accepts and register anew."""
        self._registry.forget(found.issuer)
        return await self._client_for(found, oauth)

    async def _discover(self, config: ProxyConfig) -> Discovered:
        upstream = config.upstream.url
        allow = config.security.allow_insecure_http
        tried: list[str] = []
        probe = await self._transport.probe(upstream)
        tried.append(f"POST {upstream} (no token) → {_answer(probe)}")
        challenge = bearer_challenge(probe.challenge) if probe.status in (401, 403) else {}
        resource = await self._resource_metadata(upstream, challenge, tried, allow)
        issuers = resource.authorization_servers if resource else [_origin(upstream)]
        if len(issuers) > 1:
            log.info(
                "the server names several authorization servers; using the first",
                extra={"using": issuers[0], "others": " ".join(issuers[1:])},
            )
        server = await self._server_metadata(issuers[0], tried, allow)
        return Discovered(
            issuer=server.issuer,
            token_url=server.token_endpoint,
            authorization_url=server.authorization_endpoint,
            registration_url=server.registration_endpoint,
            device_authorization_url=server.device_authorization_endpoint,
            scope=choose_scope(
                challenge.get("scope"),
                resource,
                server,
                offline=config.oauth2.grant in ("authorization_code", "device_code"),
            ),
            # RFC 8707 with RFC 9728 §1.2: the resource identifier is the one the server
            # published (already checked to cover the upstream).
            resource=resource.resource if resource is not None else None,
            s256_advertised="S256" in (server.code_challenge_methods_supported or []),
            iss_parameter_supported=server.authorization_response_iss_parameter_supported,
            client_id_metadata_documents=server.client_id_metadata_document_supported,
            token_auth_methods=(
                tuple(server.token_endpoint_auth_methods_supported)
                if server.token_endpoint_auth_methods_supported is not None
                else None
            ),
            tried=tuple(tried),
            authorization_servers=tuple(issuers),
        )

    async def _resource_metadata(
        self, upstream: str, challenge: dict[str, str], tried: list[str], allow: bool
    ) -> ResourceMetadata | None:
        for url in resource_metadata_urls(upstream, challenge.get("resource_metadata")):
            if (reason := insecure_reason(url, allow_insecure_http=allow)) is not None:
                tried.append(f"skipped {url}: {reason}")
                continue
            reply = await self._transport.get_json(url)
            tried.append(f"GET {url} → {_answer(reply)}")
            if reply.status == 200 and reply.document is not None:
                return read_resource_metadata(reply.document, upstream, url)
        return None

    async def _server_metadata(self, issuer: str, tried: list[str], allow: bool) -> ServerMetadata:
        if (reason := insecure_reason(issuer, allow_insecure_http=allow)) is not None:
            raise InsecureUrlError(
                [
                    ConfigProblem(
                        "discovered authorization server", issuer, f"{reason}; {ASK_FOR_HTTPS}"
                    )
                ]
            )
        for url in authorization_server_metadata_urls(issuer):
            reply = await self._transport.get_json(url)
            tried.append(f"GET {url} → {_answer(reply)}")
            if reply.status == 200 and reply.document is not None:
                metadata = read_server_metadata(reply.document, issuer, url)
                unsafe = unsafe_endpoints(metadata, allow_insecure_http=allow)
                if unsafe:
                    raise InsecureUrlError(
                        [
                            ConfigProblem("authorization server metadata", url, problem)
                            for problem in unsafe
                        ]
                    )
                return metadata
        raise DiscoveryError(
            "could not discover the authorization server. Tried: "
            + "; ".join(tried)
            + ". The MCP server publishes no usable OAuth metadata: "
            + FIX_METADATA_OR_SET_ENDPOINTS
        )

    async def _client_for(self, found: Discovered, oauth: OAuth2Config) -> RegisteredClient:
        # The browser login's module, loaded only by a proxy that registers a client for it.
        from ..domain.authorization import redirect_target

        redirect_uri = redirect_target(oauth).uri()
        if oauth.grant != "authorization_code":
            # Registration makes a public browser-login client, of no use to these grants.
            raise OAuthError(
                f"no client id: grant {oauth.grant} needs a client registered with "
                f"{found.issuer}; set oauth2.clientId / OAUTH2_CLIENT_ID"
            )
        if oauth.client_metadata_url is not None and found.client_id_metadata_documents:
            # The server fetches the published document itself; nothing to register or keep.
            log.info(
                "using the client id metadata document URL as the client id",
                extra={"issuer": found.issuer, "client_id": oauth.client_metadata_url},
            )
            return RegisteredClient(found.issuer, oauth.client_metadata_url, None, redirect_uri)
        known = self._registry.load(found.issuer)
        if known is not None and known.serves(found.issuer, redirect_uri):
            return known
        if found.registration_url is None:
            raise OAuthError(
                f"no client id: set oauth2.clientId / OAUTH2_CLIENT_ID to a client registered "
                f"with {found.issuer} (it offers no dynamic client registration)"
            )
        reply = await self._transport.post_json(
            found.registration_url,
            registration_request(redirect_uri, oauth.scope, found.token_auth_methods),
        )
        client = read_registration(
            reply.status,
            reply.document,
            issuer=found.issuer,
            redirect_uri=redirect_uri,
            url=found.registration_url,
        )
        self._registry.save(client)
        log.info(
            "registered this proxy as a client of the authorization server",
            extra={"issuer": found.issuer, "client_id": client.client_id},
        )
        return client


@dataclass
class Registrar:
    """Registers a dynamically registered client again when the server forgot it."""

    discovery: Discovery
    found: Discovered
    oauth: OAuth2Config
    builder: TokenRequestBuilder

    async def register_again(self) -> None:
        client = await self.discovery.register_again(self.found, self.oauth)
        self.builder.identify(client.client_id, client.client_secret, client.auth_style)


def _apply(
    oauth: OAuth2Config, found: Discovered, upstream: str, loaded: LoadedConfig
) -> tuple[OAuth2Config, dict[str, Source]]:
    """Fill what the configuration leaves unset; explicit settings always win."""
    source = Source("discovery", found.issuer)
    candidates = {
        "token_url": ("oauth2.tokenUrl", found.token_url),
        "authorization_url": ("oauth2.authorizationUrl", found.authorization_url),
        "device_authorization_url": (
            "oauth2.deviceAuthorizationUrl",
            found.device_authorization_url,
        ),
        "scope": ("oauth2.scope", found.scope),
        "resource": ("oauth2.resource", found.resource),
    }
    updates: dict[str, object] = {}
    sources = dict(loaded.sources)
    for field_name, (path, value) in candidates.items():
        if getattr(oauth, field_name) is None and value is not None:
            updates[field_name] = value
            sources[path] = source
    return oauth.model_copy(update=updates), sources


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass
class Rediscovery:
    """Follows the upstream when it moves to another authorization server: its 401 then
    comes from tokens the old server issued, and its metadata names the new one (SEP-2352).
    The proxy becomes the new server's client (registered anew, unless a client id is
    configured) and never shows it the old server's tokens, secrets or registration; a
    configuration that holds such things for the old server is not moved at all."""

    discovery: Discovery
    original: LoadedConfig
    found: Discovered
    builder: TokenRequestBuilder
    registrar: Registrar | None
    redactor: Redactor

    async def moved(self, login: Login | None) -> bool:
        """True when the authorization server changed and the proxy now acts for the new one."""
        try:
            found = await self.discovery.locate(self.original.config)
        except (OAuthError, ConfigError) as error:
            # The refusal stays the news; why the server could not be asked again is a detail.
            log.warning(
                "could not discover the authorization server again", extra={"reason": str(error)}
            )
            return False
        if self.found.issuer in (found.issuer, *found.authorization_servers):
            return False
        reason = self._cannot_follow(login)
        if reason is not None:
            notices.warning(
                f"the MCP server now names another authorization server; {reason}",
                extra={"from": self.found.issuer, "to": found.issuer},
            )
            self.found = found
            return False
        try:
            loaded, found = await self.discovery.adopt(self.original, found)
        except (OAuthError, ConfigError, OSError) as error:
            log.warning(
                "could not become a client of the new authorization server",
                extra={"to": found.issuer, "reason": str(error)},
            )
            return False
        oauth = loaded.config.oauth2
        self.redactor.register(*loaded.config.secrets())
        secret = oauth.client_secret.get_secret_value() if oauth.client_secret else None
        self.builder.token_url = oauth.token_url or self.builder.token_url
        self.builder.identify(oauth.client_id or self.builder.client_id, secret, oauth.auth_style)
        self.builder.scope = oauth.scope
        self.builder.resource = resource_indicator(oauth.resource)
        if login is not None:
            login.move_to(oauth, found)
        if self.registrar is not None:
            self.registrar.found, self.registrar.oauth = found, oauth
        notices.warning(
            "the MCP server moved to another authorization server; acting as its client now",
            extra={"from": self.found.issuer, "to": found.issuer},
        )
        self.found = found
        return True

    def _cannot_follow(self, login: Login | None) -> str | None:
        """Why this configuration must stay with the server it was written for, if it must:
        what it holds for that server must never reach one the MCP server names instead."""
        oauth = self.original.config.oauth2
        held = [
            SETTINGS_BY_PATH[path].names()
            for path, name in _BOUND_TO_THE_SERVER.items()
            if getattr(oauth, name)
        ]
        if held:
            return (
                f"{', '.join(held)} {'is' if len(held) == 1 else 'are'} for the old one and "
                "not sent there: update the configuration for the new one and restart"
            )
        if login is None:
            return (
                f"grant {oauth.grant} cannot log in there by itself: restart the proxy "
                "(for grant authorization_code, run `mcp-oauth2-proxy login` first)"
            )
        return None


def _answer(reply: MetadataReply) -> str:
    """A reply for the "Tried" list: its status, or why it was not followed further."""
    return reply.note or str(reply.status)
