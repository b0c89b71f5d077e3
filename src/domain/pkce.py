"""PKCE (RFC 7636) with the S256 method, and the `state` that ties a callback to its login.

The random bytes come in from the caller (an Entropy port), so the derivations here are pure
and checked against RFC 7636 appendix B.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

VERIFIER_BYTES = 32  # 43 characters once encoded, the shortest verifier RFC 7636 §4.1 allows
STATE_BYTES = 32


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7636 appendix A)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def code_challenge(verifier: str) -> str:
    """BASE64URL(SHA256(ASCII(verifier))), the S256 transformation (RFC 7636 §4.2)."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


@dataclass(frozen=True)
class LoginSecrets:
    """What one browser login keeps to itself until the callback: verifier and state; and,
    when discovery recorded it, the issuer that must have sent the callback (RFC 9207)."""

    verifier: str
    state: str
    issuer: str | None = None
    issuer_required: bool = False

    @classmethod
    def from_random(
        cls,
        verifier_bytes: bytes,
        state_bytes: bytes,
        *,
        issuer: str | None = None,
        issuer_required: bool = False,
    ) -> LoginSecrets:
        return cls(b64url(verifier_bytes), b64url(state_bytes), issuer, issuer_required)

    @property
    def challenge(self) -> str:
        return code_challenge(self.verifier)

    def __repr__(self) -> str:
        return "LoginSecrets(verifier=***, state=***)"
