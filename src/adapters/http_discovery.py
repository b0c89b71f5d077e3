"""The DiscoveryTransport port over httpx: metadata GETs, the unauthenticated probe, and
dynamic client registration. No request here ever carries a token.

Redirects are followed by hand, at most five, and only to URLs the insecure-URL guard
accepts, so a metadata document cannot be fetched from (or a registration sent to) a
cleartext host off loopback by way of a redirect.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

from ..domain.discovery import SET_ENDPOINTS_YOURSELF
from ..domain.errors import IdpUnreachableError
from ..domain.url_guard import url_problem
from .http_client import failure_reason

MAX_REDIRECTS = 5
MAX_DOCUMENT_BYTES = 1 << 20
TIMEOUT_SECONDS = 10.0
_PROBE_BODY = b'{"jsonrpc":"2.0","id":"mcp-oauth2-proxy-discovery","method":"ping"}'


@dataclass(frozen=True)
class Reply:
    """`note` says why a redirect was not followed; `status` is then the redirect's own, or
    310 (no such status) after too many."""

    status: int
    document: object
    challenge: str | None
    note: str | None = None


class HttpDiscovery:
    """Discovery requests through the shared client, with the redirect policy above."""

    def __init__(self, client: httpx.AsyncClient, *, allow_insecure_http: bool) -> None:
        self._client = client
        self._allow_insecure_http = allow_insecure_http

    async def probe(self, url: str) -> Reply:
        headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        return await self._send("POST", url, headers=headers, content=_PROBE_BODY)

    async def get_json(self, url: str) -> Reply:
        return await self._send("GET", url, headers={"Accept": "application/json"})

    async def post_json(self, url: str, document: Mapping[str, object]) -> Reply:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        return await self._send("POST", url, headers=headers, content=json.dumps(document).encode())

    async def _send(
        self, method: str, url: str, *, headers: dict[str, str], content: bytes | None = None
    ) -> Reply:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = await self._client.request(
                    method, url, headers=headers, content=content, timeout=TIMEOUT_SECONDS
                )
            except httpx.HTTPError as exc:
                raise IdpUnreachableError(
                    f"discovery could not reach {url}: {failure_reason(exc)}; check that it "
                    "is reachable from this machine (VPN, HTTPS_PROXY), or "
                    f"{SET_ENDPOINTS_YOURSELF}"
                ) from None
            location = response.headers.get("location")
            if response.status_code in (301, 302, 303, 307, 308) and location:
                target = urljoin(url, location)
                problem = url_problem(target, allow_insecure_http=self._allow_insecure_http)
                if problem is not None:
                    note = f"redirected to {target}, refused: {problem}"
                    return Reply(response.status_code, None, None, note)
                url = target
                if response.status_code == 303:
                    method, content = "GET", None
                continue
            return Reply(
                response.status_code, _json(response), response.headers.get("www-authenticate")
            )
        return Reply(310, None, None, f"more than {MAX_REDIRECTS} redirects")


def _json(response: httpx.Response) -> object:
    if len(response.content) > MAX_DOCUMENT_BYTES:
        return None
    try:
        return response.json()
    except ValueError:
        return None
