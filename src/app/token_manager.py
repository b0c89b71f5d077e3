"""The token manager: one access token for the whole process, renewed before it expires.

- Concurrent callers share one renewal: the first takes the lock and fetches, the others
  wait on the lock and find the fresh token (no thundering herd at the IdP).
- `invalidate(token)` drops only the token that failed. A 401 for an old token that arrives
  after another task already renewed must not throw the new token away.
- Renewal tries the refresh token first (rotated refresh tokens replace the old one, RFC 6749
  §6); when the IdP rejects it with `invalid_grant`, the grant starts over if it can.
"""

from __future__ import annotations

import anyio

from ..adapters.stderr_log import package_logger
from ..domain.errors import TokenEndpointError
from ..domain.ports import Clock
from ..domain.token_exchange import TokenRequestBuilder
from ..domain.token_lifecycle import AccessToken, IssuedTokens
from .grants import Grant
from .token_client import TokenClient

log = package_logger()


class TokenManager:
    """Hands out a valid access token; renews it at most once at a time."""

    def __init__(
        self,
        grant: Grant,
        client: TokenClient,
        builder: TokenRequestBuilder,
        clock: Clock,
    ) -> None:
        self._grant = grant
        self._client = client
        self._builder = builder
        self._clock = clock
        self._lock = anyio.Lock()
        self._access: AccessToken | None = None
        self._refresh_token = grant.initial_refresh_token

    async def token(self) -> AccessToken:
        """A token that is fresh now: the cached one, or a newly obtained one.

        Raises:
            OAuthError: no token could be obtained; the message says what to check.
        """
        current = self._access
        if current is not None and current.is_fresh(self._clock.now()):
            return current
        async with self._lock:
            current = self._access
            if current is not None and current.is_fresh(self._clock.now()):
                return current
            issued = await self._obtain()
            self._access = issued.access
            if issued.refresh_token is not None:
                if self._refresh_token is not None and issued.refresh_token != self._refresh_token:
                    log.debug("the IdP rotated the refresh token; keeping the new one")
                self._refresh_token = issued.refresh_token
            log.info(
                "obtained an access token",
                extra={
                    "grant": self._grant.name,
                    "renew_in_s": _seconds_until(issued.access.renew_at, self._clock.now()),
                },
            )
            return issued.access

    def invalidate(self, token: AccessToken) -> None:
        """Forget `token` after the upstream rejected it, unless it was already replaced."""
        if self._access is not None and self._access.value == token.value:
            self._access = None
            log.debug("access token invalidated after the upstream rejected it")

    async def _obtain(self) -> IssuedTokens:
        refresh_token = self._refresh_token
        if refresh_token is not None:
            try:
                return await self._client.exchange(self._builder.refresh(refresh_token))
            except TokenEndpointError as exc:
                if exc.error != "invalid_grant":
                    raise
                self._refresh_token = None
                if not self._grant.can_start:
                    raise
                log.warning(
                    "the refresh token was rejected; starting the grant again",
                    extra={"grant": self._grant.name},
                )
        return await self._grant.start()


def _seconds_until(moment: float | None, now: float) -> str:
    return "until-rejected" if moment is None else f"{moment - now:.0f}"
