"""The one table of settings: config-file key, environment variable, kind and meaning.

Everything that lists settings (the env merge, `--help`, docs/configuration.md and its test)
reads this table, so a setting added here is known everywhere and spelled the same way.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

CONFIG_FILE_ENV = "MCP_PROXY_CONFIG"


class Kind(enum.Enum):
    """How an environment variable's text becomes a value."""

    TEXT = "text"
    SECRET = "secret"  # noqa: S105 (a kind of setting, not a password)
    URL = "url"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    CHOICE = "choice"
    JSON_OBJECT = "json object"


@dataclass(frozen=True)
class Setting:
    """One configurable value: `path` is its dotted camelCase key in the config file."""

    path: str
    env: str
    kind: Kind
    summary: str

    @property
    def secret(self) -> bool:
        return self.kind is Kind.SECRET

    @property
    def section(self) -> str:
        return self.path.split(".", 1)[0]

    @property
    def key(self) -> str:
        return self.path.split(".", 1)[1]

    def names(self) -> str:
        """Both spellings, for messages: `oauth2.clientId / OAUTH2_CLIENT_ID`."""
        return f"{self.path} / {self.env}"

    def how_to_set(self) -> str:
        """Where to set it, for a message about a missing value."""
        return f'set {self.env}, or "{self.path}" in the JSON file {CONFIG_FILE_ENV} names'


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "upstream.url",
        "UPSTREAM_URL",
        Kind.URL,
        "The remote MCP server's streamable-HTTP endpoint.",
    ),
    Setting(
        "upstream.timeoutMs",
        "UPSTREAM_TIMEOUT_MS",
        Kind.INTEGER,
        "How long one upstream request may take, in milliseconds.",
    ),
    Setting(
        "upstream.openServerStream",
        "UPSTREAM_OPEN_SERVER_STREAM",
        Kind.BOOLEAN,
        "Hold the GET stream for server-initiated messages.",
    ),
    Setting(
        "upstream.protocolVersion",
        "UPSTREAM_PROTOCOL_VERSION",
        Kind.TEXT,
        "MCP-Protocol-Version header to send; default: the negotiated version.",
    ),
    Setting(
        "upstream.transport",
        "UPSTREAM_TRANSPORT",
        Kind.CHOICE,
        "auto, streamable-http or sse (the HTTP+SSE transport of MCP 2024-11-05).",
    ),
    Setting(
        "upstream.maxInFlight",
        "UPSTREAM_MAX_IN_FLIGHT",
        Kind.INTEGER,
        "How many requests may wait on the upstream at once; more wait their turn.",
    ),
    Setting(
        "upstream.maxMessageBytes",
        "UPSTREAM_MAX_MESSAGE_BYTES",
        Kind.INTEGER,
        "The largest message accepted from the client or the upstream, in bytes.",
    ),
    Setting(
        "oauth2.grant",
        "OAUTH2_GRANT",
        Kind.CHOICE,
        "client_credentials, refresh_token, authorization_code, device_code or password.",
    ),
    Setting("oauth2.tokenUrl", "OAUTH2_TOKEN_URL", Kind.URL, "The IdP's token endpoint."),
    Setting(
        "oauth2.deviceAuthorizationUrl",
        "OAUTH2_DEVICE_AUTHORIZATION_URL",
        Kind.URL,
        "The IdP's device authorization endpoint (device_code grant, RFC 8628).",
    ),
    Setting("oauth2.clientId", "OAUTH2_CLIENT_ID", Kind.TEXT, "The OAuth2 client id."),
    Setting(
        "oauth2.clientMetadataUrl",
        "OAUTH2_CLIENT_METADATA_URL",
        Kind.URL,
        "The https URL of a client id metadata document you publish for this proxy.",
    ),
    Setting(
        "oauth2.clientSecret",
        "OAUTH2_CLIENT_SECRET",
        Kind.SECRET,
        "The client secret; leave unset for a public client.",
    ),
    Setting("oauth2.scope", "OAUTH2_SCOPE", Kind.TEXT, "Space-separated scopes to request."),
    Setting(
        "oauth2.audience",
        "OAUTH2_AUDIENCE",
        Kind.TEXT,
        "The `audience` parameter some IdPs (Auth0, Okta) need.",
    ),
    Setting(
        "oauth2.resource",
        "OAUTH2_RESOURCE",
        Kind.TEXT,
        "RFC 8707 resource indicator sent with token requests.",
    ),
    Setting(
        "oauth2.authStyle",
        "OAUTH2_AUTH_STYLE",
        Kind.CHOICE,
        "How the client authenticates: `body` (form fields), `header` (HTTP Basic) or "
        "`private_key_jwt` (a JWT signed with the client's key, RFC 7523).",
    ),
    Setting(
        "oauth2.clientAssertionKeyFile",
        "OAUTH2_CLIENT_ASSERTION_KEY_FILE",
        Kind.TEXT,
        "PEM file of the private key that signs private_key_jwt assertions.",
    ),
    Setting(
        "oauth2.clientAssertionAlg",
        "OAUTH2_CLIENT_ASSERTION_ALG",
        Kind.CHOICE,
        "RS256 (an RSA key) or ES256 (a P-256 key), for private_key_jwt.",
    ),
    Setting(
        "oauth2.clientAssertionKid",
        "OAUTH2_CLIENT_ASSERTION_KID",
        Kind.TEXT,
        "The key id (`kid`) the IdP knows the private_key_jwt key by.",
    ),
    Setting(
        "oauth2.tokenCommand",
        "OAUTH2_TOKEN_COMMAND",
        Kind.TEXT,
        "A command that prints an access token, run as an argv (never a shell).",
    ),
    Setting(
        "oauth2.refreshSkewSeconds",
        "OAUTH2_REFRESH_SKEW_SECONDS",
        Kind.INTEGER,
        "Renew the access token this many seconds before it expires.",
    ),
    Setting(
        "oauth2.extraParams",
        "OAUTH2_EXTRA_PARAMS",
        Kind.JSON_OBJECT,
        "Extra form parameters for token requests, a JSON object of strings.",
    ),
    Setting(
        "oauth2.refreshToken",
        "OAUTH2_REFRESH_TOKEN",
        Kind.SECRET,
        "A refresh token to start from (refresh_token, authorization_code).",
    ),
    Setting(
        "oauth2.authorizationCode",
        "OAUTH2_AUTHORIZATION_CODE",
        Kind.SECRET,
        "A one-shot authorization code to exchange (authorization_code).",
    ),
    Setting(
        "oauth2.authorizationUrl",
        "OAUTH2_AUTHORIZATION_URL",
        Kind.URL,
        "The IdP's authorization endpoint, for interactive login.",
    ),
    Setting(
        "oauth2.codeVerifier",
        "OAUTH2_CODE_VERIFIER",
        Kind.SECRET,
        "The PKCE verifier that goes with a one-shot authorization code.",
    ),
    Setting(
        "oauth2.redirectUri",
        "OAUTH2_REDIRECT_URI",
        Kind.URL,
        "The redirect URI registered with the IdP.",
    ),
    Setting(
        "oauth2.interactive",
        "OAUTH2_INTERACTIVE",
        Kind.BOOLEAN,
        "Allow a browser login when no refresh token or code is available.",
    ),
    Setting(
        "oauth2.callbackHost",
        "OAUTH2_CALLBACK_HOST",
        Kind.TEXT,
        "Loopback host of the login callback listener.",
    ),
    Setting(
        "oauth2.callbackPort",
        "OAUTH2_CALLBACK_PORT",
        Kind.INTEGER,
        "Port of the login callback listener.",
    ),
    Setting(
        "oauth2.callbackTimeoutSeconds",
        "OAUTH2_CALLBACK_TIMEOUT_SECONDS",
        Kind.INTEGER,
        "How long to wait for the browser login to finish.",
    ),
    Setting(
        "oauth2.tokenCacheDir",
        "OAUTH2_TOKEN_CACHE_DIR",
        Kind.TEXT,
        "Directory of the encrypted refresh-token cache.",
    ),
    Setting(
        "oauth2.tokenStore",
        "OAUTH2_TOKEN_STORE",
        Kind.CHOICE,
        "Where the cache's encryption key lives: auto, file or keyring (the OS keychain).",
    ),
    Setting(
        "oauth2.username",
        "OAUTH2_USERNAME",
        Kind.TEXT,
        "Resource owner's user name (password grant).",
    ),
    Setting(
        "oauth2.password",
        "OAUTH2_PASSWORD",
        Kind.SECRET,
        "Resource owner's password (password grant).",
    ),
    Setting(
        "oauth2.assumePkce",
        "OAUTH2_ASSUME_PKCE",
        Kind.BOOLEAN,
        "Log in even though the discovered server does not advertise PKCE S256.",
    ),
    Setting(
        "discovery.enabled",
        "DISCOVERY_ENABLED",
        Kind.BOOLEAN,
        "Find missing IdP endpoints from the upstream's metadata.",
    ),
    Setting("log.level", "LOG_LEVEL", Kind.CHOICE, "trace, debug, info, warn, error or fatal."),
    Setting(
        "security.allowInsecureHttp",
        "ALLOW_INSECURE_HTTP",
        Kind.BOOLEAN,
        "Permit cleartext http:// to hosts off loopback (trusted testing only).",
    ),
)

SETTINGS_BY_PATH: dict[str, Setting] = {setting.path: setting for setting in SETTINGS}
SETTINGS_BY_ENV: dict[str, Setting] = {setting.env: setting for setting in SETTINGS}
