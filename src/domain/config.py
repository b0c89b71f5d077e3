"""The configuration model: every setting, its type and its default, validated strictly.

Strict on purpose: a port of "8080" in a JSON file or `yes` where a number belongs is a mistake
the user should hear about, not a value to coerce. Environment variables are text and are
converted beforehand by `config_merge`, following the kinds in `settings.py`.

Written for the proxy's cold start: the annotations are objects, not postponed strings that
pydantic would evaluate one by one, and a model's validator is built when first used
(`defer_build`): loading a configuration validates `ProxyConfig` alone, and the checks that
follow read values through `ProxyConfig.value`, so no section needs a validator of its own.
"""

import json
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr
from pydantic.alias_generators import to_camel, to_snake

from .settings import SETTINGS
from .token_command import command_words

Grant = Literal[
    "client_credentials", "refresh_token", "authorization_code", "device_code", "password"
]
AuthStyle = Literal["body", "header", "private_key_jwt"]
AssertionAlgorithm = Literal["RS256", "ES256"]
TokenStore = Literal["auto", "file", "keyring"]
LogLevel = Literal["trace", "debug", "info", "warn", "error", "fatal"]
Transport = Literal["auto", "streamable-http", "sse"]


def shown_url(url: str) -> str:
    """`url` without any user:password@ part, for the message that refuses it."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


def _absolute_url(value: str) -> str:
    parts = urlsplit(value)
    if not parts.scheme or not parts.netloc:
        shown = json.dumps(shown_url(value))
        raise ValueError(f"expected an absolute URL such as https://host/path, got {shown}")
    if "@" in parts.netloc:
        # httpx would turn user:password@ into HTTP Basic credentials, sent beside (or instead
        # of) the client's own: credentials belong in their settings, never in a URL.
        raise ValueError(
            "must not contain user:password@; put client credentials in oauth2.clientId / "
            "OAUTH2_CLIENT_ID and oauth2.clientSecret / OAUTH2_CLIENT_SECRET"
        )
    return value


def _lower_case(value: object) -> object:
    """Choices are case-insensitive in the file as in the environment: `DEBUG` is `debug`."""
    return value.lower() if isinstance(value, str) else value


def _upper_case(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


def _argv(value: str | list[str]) -> str | list[str]:
    """A command: text split into words as a POSIX shell would (never run by one), or a
    JSON array of words."""
    try:
        command_words(value)
    except ValueError as error:
        raise ValueError(f'{error}; give it as "corp-cli token print"') from None
    return value


def _non_empty_secret(value: SecretStr) -> SecretStr:
    if not value.get_secret_value():
        raise ValueError("is empty; remove the key or give it a value")
    return value


# Fields a grant or the client authentication sends itself: extraParams may not add them,
# or a request could carry two client identities or a grant's field where it does not belong.
RESERVED_PARAMS = frozenset(
    {
        "grant_type",
        "client_id",
        "client_secret",
        "client_assertion",
        "client_assertion_type",
        "code",
        "code_verifier",
        "redirect_uri",
        "refresh_token",
        "username",
        "password",
        "scope",
        "audience",
        "resource",
        "response_type",
        "state",
        "code_challenge",
        "code_challenge_method",
        "device_code",
    }
)


def _no_reserved_params(value: dict[str, str]) -> dict[str, str]:
    reserved = sorted(RESERVED_PARAMS.intersection(value))
    if reserved:
        raise ValueError(
            f"may not set {', '.join(reserved)}: the proxy sends those itself (use the "
            "settings of the same name, such as oauth2.scope / OAUTH2_SCOPE)"
        )
    return value


def _metadata_document_url(value: str) -> str:
    """A Client ID Metadata Document URL must be https with a path (the CIMD draft §3): it is
    the client's identity, and an authorization server fetches the document from it."""
    parts = urlsplit(value)
    if parts.scheme != "https" or parts.path in ("", "/") or parts.fragment:
        raise ValueError(
            "must be the https:// URL, with a path and no #fragment, of the client id "
            "metadata document you publish"
        )
    return value


AbsoluteUrl = Annotated[str, AfterValidator(_absolute_url)]
MetadataDocumentUrl = Annotated[str, AfterValidator(_metadata_document_url)]
NonEmpty = Annotated[str, Field(min_length=1)]
Secret = Annotated[SecretStr, AfterValidator(_non_empty_secret)]


class _Section(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        strict=True,
        extra="forbid",
        frozen=True,
        defer_build=True,
    )


class UpstreamConfig(_Section):
    """Where the remote MCP server is and how long to wait for it."""

    url: AbsoluteUrl
    timeout_ms: Annotated[int, Field(gt=0)] = 300_000
    open_server_stream: bool = True
    protocol_version: NonEmpty | None = None
    transport: Annotated[Transport, BeforeValidator(_lower_case)] = "auto"
    max_in_flight: Annotated[int, Field(gt=0)] = 64
    max_message_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024


class OAuth2Config(_Section):
    """The OAuth2 client the proxy acts as, and how it obtains tokens."""

    grant: Annotated[Grant, BeforeValidator(_lower_case)] = "authorization_code"
    token_url: AbsoluteUrl | None = None
    device_authorization_url: AbsoluteUrl | None = None
    client_id: NonEmpty | None = None
    client_metadata_url: MetadataDocumentUrl | None = None
    client_secret: Secret | None = None
    scope: NonEmpty | None = None
    audience: NonEmpty | None = None
    resource: NonEmpty | None = None
    auth_style: Annotated[AuthStyle, BeforeValidator(_lower_case)] = "body"
    client_assertion_key_file: NonEmpty | None = None
    client_assertion_alg: Annotated[AssertionAlgorithm, BeforeValidator(_upper_case)] = "RS256"
    client_assertion_kid: NonEmpty | None = None
    token_command: Annotated[str | list[str], AfterValidator(_argv)] | None = None
    refresh_skew_seconds: Annotated[int, Field(ge=0)] = 30
    extra_params: Annotated[dict[str, str], AfterValidator(_no_reserved_params)] = Field(
        default_factory=dict
    )
    refresh_token: Secret | None = None
    authorization_code: Secret | None = None
    authorization_url: AbsoluteUrl | None = None
    code_verifier: Secret | None = None
    redirect_uri: AbsoluteUrl | None = None
    interactive: bool = True
    callback_host: NonEmpty = "127.0.0.1"
    callback_port: Annotated[int, Field(ge=0, le=65535)] = 53682
    callback_timeout_seconds: Annotated[int, Field(gt=0)] = 300
    token_cache_dir: NonEmpty | None = None
    token_store: Annotated[TokenStore, BeforeValidator(_lower_case)] = "auto"  # noqa: S105
    username: NonEmpty | None = None
    password: Secret | None = None
    assume_pkce: bool = False


class DiscoveryConfig(_Section):
    """Whether missing IdP endpoints are looked up from the upstream's metadata."""

    enabled: bool = True


class LogConfig(_Section):
    """How much the proxy says on stderr."""

    level: Annotated[LogLevel, BeforeValidator(_lower_case)] = "info"


class SecurityConfig(_Section):
    """Overrides of the safety rules, for trusted local testing only."""

    allow_insecure_http: bool = False


class ProxyConfig(_Section):
    """The whole configuration of one proxy process: one upstream, one OAuth2 client.

    Build it in Python with snake_case names, or load it from a JSON file and the environment
    with `Proxy.load_config()`.
    """

    upstream: UpstreamConfig
    oauth2: OAuth2Config = Field(default_factory=OAuth2Config)
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)

    def value(self, path: str) -> object:
        """The value of the setting at `path`, as SETTINGS names it (`oauth2.tokenUrl`).
        Read from the attribute: `model_dump` would build a section's own validator and
        serializer, which loading the configuration otherwise never needs."""
        section, key = path.split(".", 1)
        return getattr(getattr(self, section), to_snake(key))

    def secrets(self) -> list[str]:
        """Every secret value in this configuration, for the log redactor."""
        found: list[str] = []
        for setting in SETTINGS:
            if not setting.secret:
                continue
            value = self.value(setting.path)
            if isinstance(value, SecretStr):
                found.append(value.get_secret_value())
        return found
