"""The TokenEndpoint port over httpx: one form POST, the raw answer back."""

from __future__ import annotations

import httpx

from ..domain.errors import IdpUnreachableError
from ..domain.token_exchange import FORM_CONTENT_TYPE, TokenReply, TokenRequest
from .http_client import failure_reason

# A token response is a few kilobytes; an IdP that sends more is not sending a token.
MAX_REPLY_BYTES = 1 << 20


class HttpTokenEndpoint:
    """POSTs token requests; a missing answer becomes IdpUnreachableError."""

    def __init__(self, client: httpx.AsyncClient, *, timeout_seconds: float = 30.0) -> None:
        self._client = client
        self._timeout = timeout_seconds

    async def post(self, request: TokenRequest) -> TokenReply:
        headers = {
            "Accept": "application/json",
            "Content-Type": FORM_CONTENT_TYPE,
            **dict(request.headers),
        }
        try:
            async with self._client.stream(
                "POST",
                request.url,
                data=dict(request.form),
                headers=headers,
                timeout=self._timeout,
            ) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_REPLY_BYTES:
                        break
                return TokenReply(
                    status=response.status_code,
                    content_type=response.headers.get("content-type", ""),
                    body=bytes(body[:MAX_REPLY_BYTES]),
                    retry_after=response.headers.get("retry-after"),
                    date=response.headers.get("date"),
                )
        except httpx.TimeoutException:
            raise IdpUnreachableError(
                f"token endpoint {request.url} did not answer within {self._timeout:g} s; "
                "check that the IdP is up and reachable from this machine (VPN, HTTPS_PROXY)"
            ) from None
        except httpx.HTTPError as exc:
            raise IdpUnreachableError(
                f"could not reach token endpoint {request.url}: {failure_reason(exc)}; check "
                "oauth2.tokenUrl / OAUTH2_TOKEN_URL and that the IdP is reachable from this "
                "machine (VPN, HTTPS_PROXY)"
            ) from None
