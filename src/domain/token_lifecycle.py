"""Access tokens and when they stop being usable.

Time is a plain float of wall-clock seconds handed in by the caller (a `Clock` port), so
expiry is decided without a clock here. Wall time rather than a monotonic clock on purpose: a
laptop that slept through a token's lifetime must see it as expired when it wakes.

Rules (docs/grants-and-tokens.md):
- a token is renewed `refresh_skew` seconds before `expires_in` runs out;
- when `expires_in` is not larger than the skew, it is renewed halfway through its life
  instead, so a short-lived token is not fetched again for every message;
- without `expires_in`, a JWT access token's `exp` claim is used; failing that the token is
  kept until the upstream rejects it with a 401, which invalidates it;
- a lifetime of zero or less (an IdP's odd `expires_in`, or a JWT whose `exp` has passed by
  this machine's clock, which may simply be ahead) is treated as unknown rather than as
  expired, so the proxy does not ask the IdP for a new token on every message.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class AccessToken:
    """A bearer credential for the upstream and the moment it should be renewed."""

    value: str
    token_type: str
    renew_at: float | None
    scope: str | None = None

    def is_fresh(self, now: float) -> bool:
        return self.renew_at is None or now < self.renew_at

    @property
    def authorization(self) -> str:
        """The Authorization header value (RFC 6750 §2.1)."""
        return f"{self.token_type} {self.value}"

    def __repr__(self) -> str:
        return f"AccessToken(token_type={self.token_type!r}, renew_at={self.renew_at!r})"


@dataclass(frozen=True)
class IssuedTokens:
    """What one successful token response gave: the access token, maybe a refresh token."""

    access: AccessToken
    refresh_token: str | None

    def __repr__(self) -> str:
        has_refresh = self.refresh_token is not None
        return f"IssuedTokens(access={self.access!r}, refresh_token={has_refresh})"


def renew_at(
    now: float, expires_in: float | None, refresh_skew: float, access_token: str
) -> float | None:
    """When a token issued at `now` should be replaced, or None for "until rejected"."""
    lifetime = expires_in if expires_in is not None else _jwt_lifetime(access_token, now)
    if lifetime is None or lifetime <= 0:
        return None
    if lifetime > refresh_skew:
        return now + lifetime - refresh_skew
    return now + lifetime / 2


def normalise_token_type(token_type: str | None) -> str:
    """`bearer` and `BEARER` are the same type (RFC 6749 §5.1); send the canonical spelling."""
    if token_type is None or token_type.lower() == "bearer":
        return "Bearer"
    return token_type


def _jwt_lifetime(access_token: str, now: float) -> float | None:
    parts = access_token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return float(exp) - now
    return None
