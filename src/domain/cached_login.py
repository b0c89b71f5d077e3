"""What the token cache keeps for one configuration: its refresh token, and for whom.

One entry per `sha256(clientId|tokenUrl)` (docs/token-cache.md): two configurations that
talk to the same IdP as the same client share a login; anything else never does. Access
tokens are not cached: they are short-lived and cheap to renew from the refresh token.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

FORMAT_VERSION = 1


def cache_key(client_id: str, token_url: str) -> str:
    return hashlib.sha256(f"{client_id}|{token_url}".encode()).hexdigest()


@dataclass(frozen=True)
class CachedLogin:
    """A refresh token and where it belongs; `saved_at` is wall-clock seconds."""

    client_id: str
    token_url: str
    refresh_token: str
    saved_at: float

    @property
    def key(self) -> str:
        return cache_key(self.client_id, self.token_url)

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "version": FORMAT_VERSION,
                "client_id": self.client_id,
                "token_url": self.token_url,
                "refresh_token": self.refresh_token,
                "saved_at": self.saved_at,
            }
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> CachedLogin:
        """Raises ValueError for anything that is not a cache entry of this version."""
        document = json.loads(data)
        if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
            raise ValueError("not a cache entry of this version")
        fields = (
            document.get("client_id"),
            document.get("token_url"),
            document.get("refresh_token"),
        )
        saved_at = document.get("saved_at")
        if not all(isinstance(f, str) and f for f in fields) or not isinstance(
            saved_at, int | float
        ):
            raise ValueError("a cache entry field is missing or malformed")
        client_id, token_url, refresh_token = (str(f) for f in fields)
        return cls(client_id, token_url, refresh_token, float(saved_at))

    def __repr__(self) -> str:
        return (
            f"CachedLogin(client_id={self.client_id!r}, token_url={self.token_url!r}, "
            f"saved_at={self.saved_at!r})"
        )
