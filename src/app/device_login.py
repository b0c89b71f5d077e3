"""The device login (RFC 8628): the proxy asks the IdP for a code, tells the user where to
enter it, and polls the token endpoint until the user has approved on any device.

Nothing listens on this machine and no browser is needed here, which is why it is the first
choice on an SSH host or in a container (docs/remote-hosts.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from ..adapters.stderr_log import notice_logger, package_logger
from ..domain.config import OAuth2Config
from ..domain.device_flow import (
    DEVICE_URL_SETTING,
    SLOW_DOWN_STEP_SECONDS,
    instructions,
    judge_poll,
    read_device_authorization,
)
from ..domain.discovery import Discovered
from ..domain.errors import (
    ConfigError,
    ConfigProblem,
    IdpUnreachableError,
    OAuthError,
    TokenEndpointError,
)
from ..domain.ports import Clock
from ..domain.token_exchange import TokenRequestBuilder
from ..domain.token_lifecycle import IssuedTokens
from .token_client import TokenClient

log = package_logger()
MAX_POLL_INTERVAL_SECONDS = 60.0
notices = notice_logger()


class DeviceLogin:
    """Runs one device login and returns the tokens it earned."""

    def __init__(
        self,
        oauth: OAuth2Config,
        client: TokenClient,
        builder: TokenRequestBuilder,
        clock: Clock,
        *,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._oauth = oauth
        self._client = client
        self._builder = builder
        self._clock = clock
        self._sleep = sleep

    def move_to(self, oauth: OAuth2Config, discovered: Discovered) -> None:
        """Log in at another authorization server from now on (it was discovered again)."""
        self._oauth = oauth

    async def run(self) -> IssuedTokens:
        """Raises:
        ConfigError: no device authorization endpoint is known.
        OAuthError: the IdP refused, the user denied, or the code expired first.
        """
        url = self._oauth.device_authorization_url
        if url is None:
            raise ConfigError(
                [
                    ConfigProblem(
                        DEVICE_URL_SETTING,
                        "not set",
                        "the device login needs the IdP's device authorization endpoint: set "
                        "it, or let discovery find it (discovery.enabled / DISCOVERY_ENABLED)",
                    )
                ]
            )
        reply = await self._client.post(self._builder.device_authorization(url))
        authorization = read_device_authorization(reply.status, reply.body, url)
        notices.warning(instructions(authorization))
        started = self._clock.now()
        interval = authorization.interval
        while True:
            await self._sleep(interval)
            request = self._builder.device_code(authorization.device_code)
            try:
                return await self._client.exchange(request)
            except TokenEndpointError as error:
                waited = self._clock.now() - started
                if judge_poll(error, waited, authorization.expires_in) == "slower":
                    interval += SLOW_DOWN_STEP_SECONDS
                    log.debug("the IdP asked to poll slower", extra={"interval_s": interval})
            except IdpUnreachableError as error:
                # §3.5: a poll that got no answer is no verdict; ask less often, until the
                # code runs out (the user may be halfway through approving).
                interval = min(interval * 2, MAX_POLL_INTERVAL_SECONDS)
                log.warning(
                    "no answer to a device login poll; asking again",
                    extra={"reason": str(error), "in_s": f"{interval:g}"},
                )
            waited = self._clock.now() - started
            if waited + interval > authorization.expires_in:
                raise OAuthError(
                    f"the login was not approved within {authorization.expires_in:.0f} s, "
                    "while the code was valid; run `mcp-oauth2-proxy login` and enter the "
                    "new code sooner"
                )
