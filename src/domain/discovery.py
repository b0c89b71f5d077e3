"""Finding the IdP from the MCP server, as the MCP authorization spec asks of a client.

The order of URLs and every check on what comes back live here, as plain functions over
parsed documents (MCP authorization §Authorization Server Discovery, RFC 9728, RFC 8414,
OpenID Connect Discovery 1.0). Nothing discovered is trusted blindly: the resource must be the
upstream, the issuer must be the one asked, every endpoint must pass the insecure-URL guard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import OAuthError
from .url_guard import insecure_reason

PRM_WELL_KNOWN = "/.well-known/oauth-protected-resource"
AS_WELL_KNOWN = "/.well-known/oauth-authorization-server"
OIDC_WELL_KNOWN = "/.well-known/openid-configuration"
OFFLINE_ACCESS = "offline_access"
_CHALLENGE_ITEM = re.compile(
    r"(?P<name>[!#$%&'*+\-.^_`|~0-9A-Za-z]+)"
    r'(?P<eq>\s*=\s*(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<token>[^\s,"]*)))?'
)


# The way out of every discovery failure: the settings discovery would have filled in.
SET_ENDPOINTS_YOURSELF = (
    "turn discovery off (discovery.enabled / DISCOVERY_ENABLED=false) and set "
    "oauth2.tokenUrl / OAUTH2_TOKEN_URL and oauth2.clientId / OAUTH2_CLIENT_ID yourself (and "
    "oauth2.authorizationUrl / OAUTH2_AUTHORIZATION_URL for the browser login)"
)
# For metadata the MCP server or its authorization server publishes wrongly.
FIX_METADATA_OR_SET_ENDPOINTS = (
    f"ask the server's operator to fix its OAuth metadata, or {SET_ENDPOINTS_YOURSELF}"
)
# For an authorization server that publishes a cleartext endpoint off loopback.
ASK_FOR_HTTPS = f"ask the server's operator for https, or {SET_ENDPOINTS_YOURSELF}"


class DiscoveryError(OAuthError):
    """Discovery could not give a usable answer; the message lists what was tried."""


def bearer_challenge(header: str | None) -> dict[str, str]:
    """The parameters of a `WWW-Authenticate: Bearer …` challenge (RFC 6750 §3), lower-case
    names; empty when there is no Bearer challenge."""
    challenges: list[tuple[str, dict[str, str]]] = []
    for item in _CHALLENGE_ITEM.finditer(header or ""):
        name, quoted, token = item.group("name"), item.group("quoted"), item.group("token")
        if item.group("eq") is None:
            # A token with no "=" starts a new challenge (RFC 9110 §11.6.1): its scheme.
            challenges.append((name.lower(), {}))
        elif challenges:
            value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else token or ""
            challenges[-1][1].setdefault(name.lower(), value)
    return next((params for scheme, params in challenges if scheme == "bearer"), {})


def canonical_resource(url: str) -> str:
    """RFC 8707 canonical form: lower-case scheme and host, no default port, no fragment, no
    trailing slash (MCP authorization §Canonical Server URI)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"https": 443, "http": 80}.get(scheme)
    netloc = host if parts.port in (None, default) else f"{host}:{parts.port}"
    path = parts.path.rstrip("/")
    return urlunsplit((scheme, netloc, path, parts.query, ""))


def resource_metadata_urls(upstream: str, hinted: str | None) -> list[str]:
    """Where to look for the protected resource metadata, in the spec's order: the 401's
    `resource_metadata`, then the path-aware well-known URL, then the root one."""
    parts = urlsplit(upstream)
    origin = f"{parts.scheme}://{parts.netloc}"
    urls = [hinted] if hinted else []
    path = parts.path.rstrip("/")
    if path or parts.query:
        # RFC 9728 §3.1: the well-known path goes between the host and the path and query.
        query = f"?{parts.query}" if parts.query else ""
        urls.append(f"{origin}{PRM_WELL_KNOWN}{path}{query}")
    urls.append(f"{origin}{PRM_WELL_KNOWN}")
    return list(dict.fromkeys(urls))


def authorization_server_metadata_urls(issuer: str) -> list[str]:
    """RFC 8414 §3.1 path insertion, then OpenID Connect Discovery, in the MCP order."""
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    if path:
        return [
            f"{origin}{AS_WELL_KNOWN}{path}",
            f"{origin}{OIDC_WELL_KNOWN}{path}",
            f"{origin}{path}{OIDC_WELL_KNOWN}",
        ]
    return [f"{origin}{AS_WELL_KNOWN}", f"{origin}{OIDC_WELL_KNOWN}"]


class _Lenient(BaseModel):
    # Validators built at first use: a proxy whose endpoints are configured never needs them.
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)


class ResourceMetadata(_Lenient):
    """RFC 9728 §2: what the MCP server says about itself."""

    resource: str
    authorization_servers: list[str] = []
    scopes_supported: list[str] | None = None


class ServerMetadata(_Lenient):
    """RFC 8414 §2 / OpenID Connect Discovery: what the authorization server says."""

    issuer: str
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    device_authorization_endpoint: str | None = None
    registration_endpoint: str | None = None
    scopes_supported: list[str] | None = None
    code_challenge_methods_supported: list[str] | None = None
    token_endpoint_auth_methods_supported: list[str] | None = None
    authorization_response_iss_parameter_supported: bool = False
    client_id_metadata_document_supported: bool = False


def read_resource_metadata(document: object, upstream: str, url: str) -> ResourceMetadata:
    """Parse and check a protected resource metadata document fetched from `url`.

    Raises:
        DiscoveryError: malformed, no authorization server, or for another resource.
    """
    try:
        metadata = ResourceMetadata.model_validate(document)
    except ValidationError:
        raise DiscoveryError(
            f"{url} is not protected resource metadata (RFC 9728); {FIX_METADATA_OR_SET_ENDPOINTS}"
        ) from None
    if not metadata.authorization_servers:
        raise DiscoveryError(
            f"{url} names no authorization server (authorization_servers); "
            f"{FIX_METADATA_OR_SET_ENDPOINTS}"
        )
    if not resource_covers(metadata.resource, upstream):
        raise DiscoveryError(
            f"{url} describes resource {metadata.resource!r}, not the upstream {upstream!r}; "
            "the proxy will not take its authorization server (RFC 9728 §3.3). "
            f"{FIX_METADATA_OR_SET_ENDPOINTS[:1].upper()}{FIX_METADATA_OR_SET_ENDPOINTS[1:]}"
        )
    return metadata


def resource_covers(resource: str, upstream: str) -> bool:
    """True when `resource` identifies the upstream: the same URL, or its origin or a parent
    path of it (a server at /v1/mcp may describe itself as https://host)."""
    wanted, offered = canonical_resource(upstream), canonical_resource(resource)
    if wanted == offered:
        return True
    offered_parts, wanted_parts = urlsplit(offered), urlsplit(wanted)
    if (offered_parts.scheme, offered_parts.netloc) != (wanted_parts.scheme, wanted_parts.netloc):
        return False
    return offered_parts.path == "" or wanted_parts.path.startswith(offered_parts.path + "/")


def read_server_metadata(document: object, issuer: str, url: str) -> ServerMetadata:
    """Parse and check authorization server metadata fetched from `url` for `issuer`.

    Raises:
        DiscoveryError: malformed, or its issuer is not the one asked (RFC 8414 §3.3).
    """
    try:
        metadata = ServerMetadata.model_validate(document)
    except ValidationError:
        raise DiscoveryError(
            f"{url} is not authorization server metadata (RFC 8414); "
            f"{FIX_METADATA_OR_SET_ENDPOINTS}"
        ) from None
    if metadata.issuer.rstrip("/") != issuer.rstrip("/"):
        raise DiscoveryError(
            f"{url} says its issuer is {metadata.issuer!r}, not {issuer!r}: refusing metadata "
            "that could send logins and tokens elsewhere (RFC 8414 §3.3); "
            f"{FIX_METADATA_OR_SET_ENDPOINTS}"
        )
    return metadata


@dataclass(frozen=True)
class Discovered:
    """What discovery found, before the configuration's explicit settings are laid over it."""

    issuer: str
    token_url: str | None
    authorization_url: str | None
    registration_url: str | None
    scope: str | None
    resource: str | None
    s256_advertised: bool
    iss_parameter_supported: bool
    client_id_metadata_documents: bool
    token_auth_methods: tuple[str, ...] | None = None
    device_authorization_url: str | None = None
    tried: tuple[str, ...] = field(default=())
    # Every server the resource metadata names; `issuer` is the first.
    authorization_servers: tuple[str, ...] = field(default=())


def choose_scope(
    challenged: str | None,
    resource: ResourceMetadata | None,
    server: ServerMetadata,
    *,
    offline: bool = True,
) -> str | None:
    """MCP authorization §Scope Selection Strategy: the 401's `scope`, else the resource's
    `scopes_supported`; `offline_access` is added when the server offers it, so that a
    refresh token is issued and the browser opens once, not every hour."""
    scope = challenged or (
        " ".join(resource.scopes_supported) if resource and resource.scopes_supported else None
    )
    offers_offline = offline and OFFLINE_ACCESS in (server.scopes_supported or [])
    if scope is not None and offers_offline and OFFLINE_ACCESS not in scope.split():
        return f"{scope} {OFFLINE_ACCESS}"
    return scope


def unsafe_endpoints(metadata: ServerMetadata, *, allow_insecure_http: bool) -> list[str]:
    """The discovered endpoints that would carry secrets in cleartext, with the reason and
    what to do: they are the server's to fix, or yours to set instead."""
    problems = []
    for name in (
        "authorization_endpoint",
        "token_endpoint",
        "device_authorization_endpoint",
        "registration_endpoint",
    ):
        url = getattr(metadata, name)
        if url is not None:
            reason = insecure_reason(url, allow_insecure_http=allow_insecure_http)
            if reason is not None:
                problems.append(f"{name} {url} {reason}; {ASK_FOR_HTTPS}")
    return problems


def widen_scope(current: str | None, required: str) -> str:
    """`current` plus whatever `required` adds, in order, without repeats (step-up
    authorization asks for the union, so no granted scope is lost)."""
    scopes = (current or "").split() + required.split()
    return " ".join(dict.fromkeys(scopes))
