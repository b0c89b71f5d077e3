"""The browser login: the third mode of the authorization-code grant, and `login`.

Steps (RFC 6749 §4.1 with PKCE, RFC 7636; native-app rules of RFC 8252): fresh verifier and
state, a loopback listener, the authorize URL on stderr (copy it on a remote host) and in the
default browser, the redirect awaited for `callbackTimeoutSeconds`, the code exchanged with
the verifier and the exact redirect URI.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import anyio

from ..adapters.stderr_log import notice_logger, package_logger
from ..domain.authorization import Denied, authorize_url, redirect_target
from ..domain.config import OAuth2Config
from ..domain.discovery import Discovered
from ..domain.errors import ConfigError, ConfigProblem, OAuthError
from ..domain.pkce import STATE_BYTES, VERIFIER_BYTES, LoginSecrets
from ..domain.ports import BrowserOpener, CallbackListener, Entropy
from ..domain.token_exchange import TokenRequestBuilder
from ..domain.token_lifecycle import IssuedTokens
from .token_client import TokenClient

log = package_logger()
notices = notice_logger()


class InteractiveLogin:
    """Runs one browser login and returns the tokens it earned."""

    def __init__(
        self,
        oauth: OAuth2Config,
        client: TokenClient,
        builder: TokenRequestBuilder,
        listener: CallbackListener,
        browser: BrowserOpener,
        entropy: Entropy,
        discovered: Discovered | None = None,
    ) -> None:
        self._oauth = oauth
        self._client = client
        self._builder = builder
        self._listener = listener
        self._browser = browser
        self._entropy = entropy
        self._discovered = discovered

    def move_to(self, oauth: OAuth2Config, discovered: Discovered) -> None:
        """Log in at another authorization server from now on (it was discovered again)."""
        self._oauth = oauth
        self._discovered = discovered

    async def run(self) -> IssuedTokens:
        """Raises:
        ConfigError: no authorization endpoint, or the callback port is taken.
        OAuthError: the IdP refused, or the login was not finished in time.
        """
        endpoint = self._oauth.authorization_url
        found = self._discovered
        if endpoint is None:
            what_to_do = (
                "set it, or turn discovery on (discovery.enabled / DISCOVERY_ENABLED=true) so "
                "it is found from the MCP server"
                if found is None
                else f"the authorization server {found.issuer} publishes none "
                "(authorization_endpoint), so set it"
            )
            raise ConfigError(
                [
                    ConfigProblem(
                        "oauth2.authorizationUrl / OAUTH2_AUTHORIZATION_URL",
                        "",
                        f"interactive login needs the IdP's authorization endpoint; {what_to_do}",
                    )
                ]
            )
        if found is not None and not found.s256_advertised and not self._oauth.assume_pkce:
            raise OAuthError(
                f"the authorization server {found.issuer} does not advertise PKCE with S256 "
                "(code_challenge_methods_supported), which MCP requires for a browser login. "
                "If you know it supports PKCE anyway, set oauth2.assumePkce / "
                "OAUTH2_ASSUME_PKCE=true"
            )
        secrets = LoginSecrets.from_random(
            self._entropy.random_bytes(VERIFIER_BYTES),
            self._entropy.random_bytes(STATE_BYTES),
            issuer=found.issuer if found is not None else None,
            issuer_required=found is not None and found.iss_parameter_supported,
        )
        timeout = self._oauth.callback_timeout_seconds
        async with self._listener.listening(redirect_target(self._oauth), secrets) as pending:
            url = authorize_url(
                self._oauth,
                endpoint=endpoint,
                client_id=self._builder.client_id,
                redirect_uri=pending.redirect_uri,
                secrets=secrets,
                scope=self._builder.scope,
                resource=self._builder.resource,
            )
            port = urlsplit(pending.redirect_uri).port
            notices.warning(
                "log in with your browser to continue. If it does not open, open this URL "
                "yourself (on a remote host, forward the callback port from your computer "
                "first: ssh -L %s:127.0.0.1:%s <host>): %s",
                port,
                port,
                url,
            )
            await self._browser.show(url)
            with anyio.move_on_after(timeout) as waiting:
                outcome = await pending.result()
            if waiting.cancelled_caught:
                raise OAuthError(
                    f"the browser login was not finished within {timeout} s. Finish it sooner, "
                    "raise oauth2.callbackTimeoutSeconds / OAUTH2_CALLBACK_TIMEOUT_SECONDS, or "
                    f"check that {pending.redirect_uri} is reachable from the browser (firewall, "
                    "SSH port forwarding) and registered with the IdP as a redirect URI"
                )
            redirect_uri = pending.redirect_uri
        if isinstance(outcome, Denied):
            raise OAuthError(outcome.explain(redirect_uri))
        log.info("browser login received; exchanging the authorization code")
        request = self._builder.authorization_code(
            outcome.code, redirect_uri=redirect_uri, code_verifier=secrets.verifier
        )
        return await self._client.exchange(request)
