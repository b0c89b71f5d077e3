"""private_key_jwt client authentication (RFC 7523 §2.2, OpenID Connect Core §9): instead of
a shared secret, each token request carries a JWT the client signed with its private key.

Here is what the JWT says and how its parts are encoded; the signature itself is made by an
adapter (`AssertionSigner`), which holds the key. Every assertion is fresh: its own `jti`,
issued now and valid for ASSERTION_LIFETIME_SECONDS, for one request only, so a captured one
is worth little and an IdP that remembers `jti`s refuses a replay.
"""

from __future__ import annotations

import base64
import json
from typing import Literal

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME_SECONDS = 60
Algorithm = Literal["RS256", "ES256"]
ALGORITHMS: tuple[Algorithm, ...] = ("RS256", "ES256")


def signing_input(
    *,
    client_id: str,
    audience: str,
    now: float,
    jti: str,
    algorithm: Algorithm,
    key_id: str | None,
) -> bytes:
    """The JWS signing input (`base64url(header).base64url(claims)`) of one assertion.

    `iss` and `sub` are the client id; `aud` is the token endpoint's URL, which every IdP
    accepts (some also accept their issuer)."""
    header: dict[str, str] = {"alg": algorithm, "typ": "JWT"}
    if key_id is not None:
        header["kid"] = key_id
    issued = int(now)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": jti,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ASSERTION_LIFETIME_SECONDS,
    }
    return _part(header) + b"." + _part(claims)


def compact_jws(signed: bytes, signature: bytes) -> str:
    """The assertion as sent: signing input, a dot, the base64url signature."""
    return (signed + b"." + _b64url(signature)).decode("ascii")


def _part(document: dict[str, object] | dict[str, str]) -> bytes:
    return _b64url(json.dumps(document, separators=(",", ":")).encode())


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")
