"""The token manager: one access token for the whole process, renewed before it expires.

- Concurrent callers share one renewal: the first takes the lock and fetches, the others
  wait on the lock and find the fresh token (no thundering herd at the IdP).
- `invalidate(token)` drops only the token that failed. A 401 for an old token that arrives
  after another task already renewed must not throw the new token away.
- Renewal tries the refresh token first (rotated refresh tokens replace the old one, RFC 6749
  §6); when the IdP rejects it with `invalid_grant`, the grant starts over if it can (a new
  browser login, at most one at a time).
- With a token store (the grants that live on refresh tokens), every renewal and login runs
  under the store's cross-process lock and starts by re-reading the cache: MCP hosts start
  several copies of a server at once, and a refresh token one of them rotated must be used by
  the others, never sent again (the IdP would take the reuse for theft and revoke the grant).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from ..adapters.stderr_log import notice_logger, package_logger
from ..domain.cached_login import CachedLogin, cache_key
from ..domain.discovery import widen_scope
from ..domain.errors import OAuthError, TokenEndpointError
from ..domain.ports import Clock, TokenStore
from ..domain.token_exchange import TokenRequestBuilder
from ..domain.token_lifecycle import AccessToken, IssuedTokens
from .discovery import Rediscovery, Registrar
from .grants import Grant
from .token_client import TokenClient

log = package_logger()
notices = notice_logger()


class TokenManager:
    """Hands out a valid access token; renews it at most once at a time."""

    def __init__(
        self,
        grant: Grant,
        client: TokenClient,
        builder: TokenRequestBuilder,
        clock: Clock,
        store: TokenStore | None = None,
        registrar: Registrar | None = None,
        rediscovery: Rediscovery | None = None,
    ) -> None:
        self._grant = grant
        self._client = client
        self._builder = builder
        self._clock = clock
        self._store = store
        self._registrar = registrar
        self._rediscovery = rediscovery
        self._moves = 0
        self._stepped_up_to: str | None = None
        self._lock = anyio.Lock()
        self._access: AccessToken | None = None
        self._refresh_token = grant.initial_refresh_token
        self._configured_refresh_token = grant.initial_refresh_token

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
            async with self._shared():
                # Kept (and saved) before the cross-process lock is released.
                return self._keep(await self._obtain_as_registered())

    async def login(self) -> AccessToken:
        """Run the grant's browser login now, whatever is cached (the `login` command).

        Raises:
            OAuthError: the grant has no browser login, or the login failed.
        """
        interactive = self._grant.interactive
        if interactive is None and self._grant.name == "token_command":
            raise OAuthError(
                "mcp-oauth2-proxy login has nothing to do: the token command (oauth2.tokenCommand"
                " / OAUTH2_TOKEN_COMMAND) gives the tokens; log in with your company's tool"
            )
        if interactive is None:
            raise OAuthError(
                "mcp-oauth2-proxy login is only for oauth2.grant / OAUTH2_GRANT="
                f"authorization_code or device_code; grant {self._grant.name} gets its tokens "
                "by itself at every start, so there is nothing to log in to"
            )
        async with self._lock, self._shared():
            return self._keep(await interactive.run())

    async def step_up(self, required: str) -> bool:
        """Log in again with the scope widened by `required` (the upstream's 403 named it);
        False when this grant has no browser login to do it with.

        Several requests refused at once cause one login, not one each.
        """
        interactive = self._grant.interactive
        if interactive is None:
            return False
        async with self._lock, self._shared():
            wider = widen_scope(self._builder.scope, required)
            if wider != self._stepped_up_to:
                self._builder.scope = wider
                notices.warning(
                    "the MCP server needs more permissions (scope %s); log in again to grant them",
                    wider,
                )
                self._keep(await interactive.run())
                self._stepped_up_to = wider
        return True

    @property
    def moves(self) -> int:
        """How often the proxy followed the upstream to another authorization server."""
        return self._moves

    async def follow_move(self, moves_seen: int) -> bool:
        """After a fresh token was refused too: has the upstream moved to another
        authorization server? If so, forget everything from the old one and act as the new
        one's client (the next token() logs in there); True then. `moves_seen` is `moves` as
        the caller read it before its first token: a move another request made since counts
        (that request's caller resends too, rather than asking again)."""
        if self._rediscovery is None:
            return False
        async with self._lock:
            if self._moves != moves_seen:
                return True
            old_key = self._key
            if not await self._rediscovery.moved(self._grant.interactive):
                return False
            # The old server's refresh token is worthless now and must never reach the new
            # server, even when both are reached under the same client id and token URL.
            if self._store is not None:
                self._store.delete(old_key)
            self._access = None
            self._refresh_token = None
            self._configured_refresh_token = None
            self._stepped_up_to = None
            self._moves += 1
        return True

    def invalidate(self, token: AccessToken) -> None:
        """Forget `token` after the upstream rejected it, unless it was already replaced."""
        if self._access is not None and self._access.value == token.value:
            self._access = None
            log.debug("access token invalidated after the upstream rejected it")

    @property
    def _key(self) -> str:
        """The cache entry of the client in force (it changes when the proxy registers its
        client again)."""
        return cache_key(self._builder.client_id, self._builder.token_url)

    def cached_login(self) -> CachedLogin | None:
        return self._store.load(self._key) if self._store is not None else None

    def forget_login(self) -> bool:
        """Delete the cached login; True when there was one."""
        self._access = None
        self._refresh_token = None
        return self._store.delete(self._key) if self._store is not None else False

    @asynccontextmanager
    async def _shared(self) -> AsyncIterator[None]:
        """The cross-process lock, with the cache re-read once it is held."""
        if self._store is None:
            yield
            return
        async with self._store.locked(self._key):
            cached = self._store.load(self._key)
            if cached is not None and cached.refresh_token != self._refresh_token:
                if self._refresh_token is not None:
                    log.debug("using the cached refresh token, the newest one saved")
                self._refresh_token = cached.refresh_token
            yield

    def _keep(self, issued: IssuedTokens) -> AccessToken:
        self._access = issued.access
        if issued.refresh_token is not None:
            if self._refresh_token is not None and issued.refresh_token != self._refresh_token:
                log.debug("the IdP rotated the refresh token; keeping the new one")
            self._refresh_token = issued.refresh_token
            if self._store is not None:
                self._store.save(
                    CachedLogin(
                        self._builder.client_id,
                        self._builder.token_url,
                        issued.refresh_token,
                        self._clock.now(),
                    )
                )
        renew_in = issued.access.renew_at
        log.info(
            "obtained an access token",
            extra={
                "grant": self._grant.name,
                "renew_in_s": "until-rejected"
                if renew_in is None
                else f"{renew_in - self._clock.now():.0f}",
            },
        )
        return issued.access

    async def _obtain(self) -> IssuedTokens:
        # The cached refresh token first (the newest rotation), then the configured one, in
        # case the operator set a new one after the cached one was revoked.
        candidates = (self._refresh_token, self._configured_refresh_token)
        rejected: TokenEndpointError | None = None
        for refresh_token in dict.fromkeys(token for token in candidates if token is not None):
            try:
                issued = await self._client.exchange(self._builder.refresh(refresh_token))
            except TokenEndpointError as exc:
                if exc.error != "invalid_grant":
                    raise
                rejected = exc
                self._drop_cached(refresh_token)
                if refresh_token == self._configured_refresh_token:
                    self._configured_refresh_token = None
                continue
            if refresh_token == self._configured_refresh_token:
                # Spent now: sending it again would look like token theft to an IdP that
                # detects refresh-token reuse, and revoke the whole login.
                self._configured_refresh_token = None
            if issued.refresh_token is None:
                # An IdP that does not rotate: the token that worked stays the one to use.
                return IssuedTokens(issued.access, refresh_token)
            return issued
        self._refresh_token = None
        if rejected is not None:
            if not self._grant.can_start:
                raise rejected
            browser = " (a browser login)" if self._grant.name == "authorization_code" else ""
            log.warning(
                "the refresh token was rejected (expired or revoked); getting new tokens with "
                "grant %s%s",
                self._grant.name,
                browser,
                extra={"grant": self._grant.name},
            )
        return await self._grant.start()

    async def _obtain_as_registered(self) -> IssuedTokens:
        """`_obtain`, registering this proxy's client again (once) if the authorization
        server no longer knows the one it registered dynamically."""
        try:
            return await self._obtain()
        except TokenEndpointError as error:
            if error.error != "invalid_client" or self._registrar is None:
                raise
        log.warning(
            "the authorization server no longer knows this proxy's registered "
            "client; registering it again"
        )
        await self._registrar.register_again()
        self._refresh_token = None
        self._configured_refresh_token = None
        return await self._grant.start()

    def _drop_cached(self, rejected: str) -> None:
        """Delete the cache entry if it still holds the rejected token (we hold the lock, and
        it was re-read when we took it, so another process's newer token is never lost)."""
        if self._store is None:
            return
        cached = self._store.load(self._key)
        if cached is not None and cached.refresh_token == rejected:
            self._store.delete(self._key)
