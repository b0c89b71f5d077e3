"""One token request, start to finish: post it, read the answer, remember the secrets."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from ..adapters.stderr_log import TRACE, package_logger
from ..domain.device_flow import DEVICE_CODE_GRANT, POLL_ANSWERS
from ..domain.errors import ConfigError, ConfigProblem, TokenEndpointError
from ..domain.ports import Clock, TokenEndpoint
from ..domain.redaction import Redactor
from ..domain.token_exchange import (
    TokenReply,
    TokenRequest,
    TokenRequestBuilder,
    naming_the_wait,
    parse_token_reply,
    refuses_resource,
    transient_delay,
    without_resource,
)
from ..domain.token_lifecycle import IssuedTokens
from .client_assertions import ClientAssertions

log = package_logger()


class TokenClient:
    """Sends token requests and turns answers into tokens; every token it sees is
    registered with the redactor before anything can log it."""

    def __init__(
        self,
        endpoint: TokenEndpoint,
        clock: Clock,
        redactor: Redactor,
        *,
        refresh_skew_seconds: float,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        requests: TokenRequestBuilder | None = None,
        assertions: ClientAssertions | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._assertions = assertions
        self._requests = requests
        self._clock = clock
        self._redactor = redactor
        self._skew = refresh_skew_seconds
        self._sleep = sleep

    async def post(self, request: TokenRequest) -> TokenReply:
        """One POST as it is sent: with a fresh private_key_jwt assertion when the client
        authenticates that way (raw reply, for requests that are not token requests)."""
        if request.needs_assertion:
            if self._assertions is None:
                raise ConfigError(
                    [
                        ConfigProblem(
                            "oauth2.clientAssertionKeyFile / OAUTH2_CLIENT_ASSERTION_KEY_FILE",
                            "not set",
                            "private_key_jwt needs the client's private key to sign with",
                        )
                    ]
                )
            # Not registered with the redactor: each lives 60 s and is used once, and the
            # `client_assertion=` shape is masked anyway (registering each would grow it).
            request = self._assertions.signed(request)
        return await self._endpoint.post(request)

    async def exchange(self, request: TokenRequest) -> IssuedTokens:
        """Raises TokenEndpointError or IdpUnreachableError; a temporary refusal (429, 503,
        `temporarily_unavailable`) is asked again after the IdP's Retry-After first."""
        self._redactor.register(*request.secret_values())
        attempt = 0
        while True:
            log.debug("requesting a token", extra={"grant": request.grant, "url": request.url})
            reply = await self.post(request)
            log.log(
                TRACE,
                "token endpoint answered",
                extra={"status": reply.status, "content_type": reply.content_type},
            )
            try:
                issued = parse_token_reply(
                    request, reply, now=self._clock.now(), refresh_skew=self._skew
                )
            except TokenEndpointError as error:
                if request.grant == DEVICE_CODE_GRANT and error.error in POLL_ANSWERS:
                    raise  # the device login's own polling decides (RFC 8628 §3.5)
                if refuses_resource(error, request):
                    # Entra ID and a few others refuse RFC 8707 `resource`: ask without it,
                    # now and from now on (authorize URLs included), and say so once.
                    log.warning(
                        "the IdP refused the resource indicator; asking without it from now "
                        "on (set oauth2.resource / OAUTH2_RESOURCE=none to skip this step)"
                    )
                    if self._requests is not None:
                        self._requests.resource = None
                    request = without_resource(request)
                    continue
                delay = transient_delay(error, reply, attempt, now=self._clock.now())
                if delay is None:
                    raise naming_the_wait(error, reply, now=self._clock.now()) from None
                log.warning(
                    "the IdP refused for now; asking again",
                    extra={
                        "status": reply.status,
                        "error": error.error or "none",
                        "in_s": f"{delay:g}",
                    },
                )
                await self._sleep(delay)
                attempt += 1
                continue
            self._redactor.register(issued.access.value, issued.refresh_token)
            return issued
