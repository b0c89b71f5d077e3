"""One token request, start to finish: post it, read the answer, remember the secrets."""

from __future__ import annotations

from ..adapters.stderr_log import TRACE, package_logger
from ..domain.ports import Clock, TokenEndpoint
from ..domain.redaction import Redactor
from ..domain.token_exchange import TokenRequest, parse_token_reply
from ..domain.token_lifecycle import IssuedTokens

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
    ) -> None:
        self._endpoint = endpoint
        self._clock = clock
        self._redactor = redactor
        self._skew = refresh_skew_seconds

    async def exchange(self, request: TokenRequest) -> IssuedTokens:
        self._redactor.register(*request.secret_values())
        log.debug("requesting a token", extra={"grant": request.grant, "url": request.url})
        reply = await self._endpoint.post(request)
        log.log(
            TRACE,
            "token endpoint answered",
            extra={"status": reply.status, "content_type": reply.content_type},
        )
        issued = parse_token_reply(request, reply, now=self._clock.now(), refresh_skew=self._skew)
        self._redactor.register(issued.access.value, issued.refresh_token)
        return issued
