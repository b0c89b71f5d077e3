"""The grants: how the proxy gets its first tokens, and whether it can do so again.

Renewal with a refresh token is shared by all grants and lives in the token manager; a grant
only answers "where do tokens come from when there is no usable refresh token?"
(RFC 6749 §4). Each grant says whether that answer can be repeated: client credentials and
passwords can ask again at any time, a one-shot authorization code only until it is used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from pydantic import SecretStr

from ..adapters.stderr_log import package_logger
from ..domain.config import OAuth2Config
from ..domain.discovery import Discovered
from ..domain.errors import ConfigError, ConfigProblem, OAuthError, TokenEndpointError
from ..domain.ports import Clock, TokenCommand
from ..domain.redaction import Redactor
from ..domain.settings import SETTINGS_BY_PATH
from ..domain.token_command import read_command_output
from ..domain.token_exchange import TokenRequestBuilder
from ..domain.token_lifecycle import AccessToken, IssuedTokens, normalise_token_type, renew_at
from .token_client import TokenClient

if TYPE_CHECKING:  # built by the container only for the grants that log in (see there)
    from .device_login import DeviceLogin
    from .interactive_login import InteractiveLogin

log = package_logger()


class Login(Protocol):
    """A login that involves the user (the browser login, the device login): what `login`
    runs, what a dead refresh token falls back to, and what a step-up repeats."""

    async def run(self) -> IssuedTokens: ...

    def move_to(self, oauth: OAuth2Config, discovered: Discovered) -> None:
        """Log in at another authorization server from now on (it was discovered again)."""
        ...


class Grant(Protocol):
    """A source of fresh tokens when no refresh token can be used."""

    name: str

    @property
    def initial_refresh_token(self) -> str | None:
        """A refresh token to try before starting the grant, if the operator supplied one."""
        ...

    @property
    def can_start(self) -> bool:
        """Whether `start()` can still obtain tokens (a used one-shot code cannot)."""
        ...

    @property
    def interactive(self) -> Login | None:
        """The login with the user, for grants that have one."""
        ...

    async def start(self) -> IssuedTokens: ...


class ClientCredentialsGrant:
    """RFC 6749 §4.4: the client's own credentials, for service-to-service use."""

    name = "client_credentials"
    initial_refresh_token = None
    can_start = True
    interactive = None

    def __init__(self, client: TokenClient, builder: TokenRequestBuilder) -> None:
        self._client = client
        self._builder = builder

    async def start(self) -> IssuedTokens:
        return await self._client.exchange(self._builder.client_credentials())


class PasswordGrant:
    """RFC 6749 §4.3, for legacy IdPs only: the OAuth 2.0 Security BCP (RFC 9700 §2.4)
    forbids it, because the proxy must hold the user's password."""

    name = "password"
    initial_refresh_token = None
    can_start = True
    interactive = None

    def __init__(
        self, client: TokenClient, builder: TokenRequestBuilder, username: str, password: str
    ) -> None:
        self._client = client
        self._builder = builder
        self._username = username
        self._password = password
        log.warning(
            "the password grant is deprecated by the OAuth 2.0 Security BCP (RFC 9700); "
            "prefer authorization_code (browser login) or client_credentials",
            extra={"setting": "oauth2.grant / OAUTH2_GRANT"},
        )

    async def start(self) -> IssuedTokens:
        return await self._client.exchange(self._builder.password(self._username, self._password))


class RefreshTokenGrant:
    """Starts from a refresh token the operator supplies; once that is rejected there is no
    other way in, and the error says which setting to renew."""

    name = "refresh_token"
    can_start = False
    interactive = None

    def __init__(self, refresh_token: str) -> None:
        self._refresh_token = refresh_token

    @property
    def initial_refresh_token(self) -> str | None:
        return self._refresh_token

    async def start(self) -> IssuedTokens:
        raise OAuthError(
            "the refresh token was rejected or is used up, and grant refresh_token has no "
            "other way to obtain tokens: set a new oauth2.refreshToken / OAUTH2_REFRESH_TOKEN"
        )


class AuthorizationCodeGrant:
    """RFC 6749 §4.1 in its three modes, tried in this order: a supplied refresh token, a
    one-shot code (with its PKCE verifier, RFC 7636 §4.5) exchanged once, and the browser
    login (`interactive`, the default), which can run again whenever a refresh token dies."""

    name = "authorization_code"

    def __init__(
        self,
        client: TokenClient,
        builder: TokenRequestBuilder,
        oauth: OAuth2Config,
        login: InteractiveLogin | None,
    ) -> None:
        self._client = client
        self._builder = builder
        self._refresh_token = _secret(oauth.refresh_token)
        self._code = _secret(oauth.authorization_code)
        self._verifier = _secret(oauth.code_verifier)
        self._redirect_uri = oauth.redirect_uri
        self._login = login

    @property
    def initial_refresh_token(self) -> str | None:
        return self._refresh_token

    @property
    def can_start(self) -> bool:
        return self._code is not None or self._login is not None

    @property
    def interactive(self) -> InteractiveLogin | None:
        return self._login

    async def start(self) -> IssuedTokens:
        code, self._code = self._code, None
        if code is not None:
            request = self._builder.authorization_code(
                code, redirect_uri=self._redirect_uri, code_verifier=self._verifier
            )
            try:
                return await self._client.exchange(request)
            except TokenEndpointError as error:
                # A configured code is spent after its first use (often a run before this
                # one): with a browser at hand, log in instead of failing on it forever.
                if error.error != "invalid_grant" or self._login is None:
                    raise
                log.warning(
                    "the configured authorization code was rejected (codes are "
                    "single-use); logging in with the browser instead",
                    extra={"setting": "oauth2.authorizationCode / OAUTH2_AUTHORIZATION_CODE"},
                )
        if self._login is not None:
            return await self._login.run()
        raise OAuthError(
            "no way to obtain tokens: no refresh token is usable, the authorization code was "
            "already used (codes are single-use) or none was set, and browser login is off "
            "(oauth2.interactive / OAUTH2_INTERACTIVE=false). Log in once with "
            "`mcp-oauth2-proxy login`, or set oauth2.refreshToken / OAUTH2_REFRESH_TOKEN or a "
            "new oauth2.authorizationCode / OAUTH2_AUTHORIZATION_CODE"
        )


class DeviceCodeGrant:
    """RFC 8628: the device login, whenever there is no usable refresh token (and by
    `mcp-oauth2-proxy login`). Its refresh tokens are cached like the browser login's."""

    name = "device_code"
    initial_refresh_token = None

    def __init__(self, login: DeviceLogin | None) -> None:
        self._login = login

    @property
    def can_start(self) -> bool:
        return self._login is not None

    @property
    def interactive(self) -> DeviceLogin | None:
        return self._login

    async def start(self) -> IssuedTokens:
        if self._login is None:
            raise OAuthError(
                "no usable cached login, and logging in by itself is off (oauth2.interactive / "
                "OAUTH2_INTERACTIVE=false): run `mcp-oauth2-proxy login`, which shows a code "
                "to enter on any device"
            )
        return await self._login.run()


class CommandGrant:
    """The credential helper (`oauth2.tokenCommand`): the user's own command prints the
    token; it is run again when the token expires or the upstream refuses it."""

    name = "token_command"
    initial_refresh_token = None
    can_start = True
    interactive = None

    def __init__(
        self,
        command: TokenCommand,
        clock: Clock,
        redactor: Redactor,
        refresh_skew_seconds: float,
    ) -> None:
        self._command = command
        self._clock = clock
        self._redactor = redactor
        self._skew = refresh_skew_seconds

    async def start(self) -> IssuedTokens:
        printed, said = await self._command.run()
        value, expires_in, token_type = read_command_output(printed, self._command.program)
        # Registered before the helper's stderr is logged: a helper may echo its token there.
        self._redactor.register(value)
        for line in said.decode("utf-8", "replace").splitlines():
            if line.strip():
                log.info(
                    "token command: %s", line.rstrip(), extra={"command": self._command.program}
                )
        now = self._clock.now()
        access = AccessToken(
            value,
            normalise_token_type(token_type),
            renew_at(now, expires_in, self._skew, value),
        )
        log.debug(
            "the token command gave a token",
            extra={"expires_in": expires_in if expires_in is not None else "unknown"},
        )
        return IssuedTokens(access, None)


def build_token_requests(oauth: OAuth2Config) -> TokenRequestBuilder:
    """The request builder for this client and token endpoint."""
    if oauth.token_command is not None:
        # Never sent from: the command is the token source, and nothing else is required.
        return TokenRequestBuilder(
            oauth, token_url=oauth.token_url or "", client_id=oauth.client_id or ""
        )
    return TokenRequestBuilder(
        oauth,
        token_url=_required(oauth.token_url, "oauth2.tokenUrl"),
        client_id=_required(oauth.client_id, "oauth2.clientId"),
    )


def build_grant(
    oauth: OAuth2Config,
    client: TokenClient,
    builder: TokenRequestBuilder,
    login: Callable[[], InteractiveLogin],
    device_login: Callable[[], DeviceLogin],
    command: Callable[[], TokenCommand],
    clock: Clock,
    redactor: Redactor,
) -> Grant:
    """The grant `oauth.grant` names (or the token command, which replaces any grant), from
    settings already checked by grant_requirements."""
    if oauth.token_command is not None:
        return CommandGrant(command(), clock, redactor, oauth.refresh_skew_seconds)
    if oauth.grant == "device_code":
        return DeviceCodeGrant(device_login() if oauth.interactive else None)
    if oauth.grant == "client_credentials":
        return ClientCredentialsGrant(client, builder)
    if oauth.grant == "password":
        return PasswordGrant(
            client,
            builder,
            _required(oauth.username, "oauth2.username"),
            _required(_secret(oauth.password), "oauth2.password"),
        )
    if oauth.grant == "refresh_token":
        return RefreshTokenGrant(_required(_secret(oauth.refresh_token), "oauth2.refreshToken"))
    return AuthorizationCodeGrant(client, builder, oauth, login() if oauth.interactive else None)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _required(value: str | None, path: str) -> str:
    if value is None:
        setting = SETTINGS_BY_PATH[path]
        raise ConfigError(
            [
                ConfigProblem(
                    setting.names(), "", f"required to request tokens; {setting.how_to_set()}"
                )
            ]
        )
    return value
