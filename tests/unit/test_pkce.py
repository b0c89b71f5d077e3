"""PKCE with S256 (RFC 7636): the appendix B vector, the shape of every verifier, and login
secrets that never show up in a repr."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from mcp_oauth2_proxy.domain.pkce import (
    STATE_BYTES,
    VERIFIER_BYTES,
    LoginSecrets,
    b64url,
    code_challenge,
)

# RFC 7636 appendix B: the 32 octets, the verifier they encode to, and its S256 challenge.
RFC_OCTETS = bytes(
    [
        116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186,
        22, 212, 37, 77, 105, 214, 191, 240, 91, 88, 5, 88, 83, 132, 141, 121,
    ]
)  # fmt: skip
RFC_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"

# RFC 7636 §4.1: code-verifier = 43*128unreserved; unreserved = ALPHA / DIGIT / "-" / "." /
# "_" / "~" (RFC 3986 §2.3).
UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")


def test_rfc7636_appendix_b_verifier() -> None:
    assert len(RFC_OCTETS) == VERIFIER_BYTES
    assert b64url(RFC_OCTETS) == RFC_VERIFIER


def test_rfc7636_appendix_b_challenge() -> None:
    assert code_challenge(RFC_VERIFIER) == RFC_CHALLENGE


def test_login_secrets_from_the_rfc_octets() -> None:
    secrets = LoginSecrets.from_random(RFC_OCTETS, bytes(STATE_BYTES))
    assert secrets.verifier == RFC_VERIFIER
    assert secrets.challenge == RFC_CHALLENGE


def test_state_comes_from_the_state_bytes_not_the_verifier_bytes() -> None:
    secrets = LoginSecrets.from_random(RFC_OCTETS, b"\x01" * STATE_BYTES)
    assert secrets.state == b64url(b"\x01" * STATE_BYTES)
    assert secrets.state != secrets.verifier


@given(st.binary(min_size=VERIFIER_BYTES, max_size=VERIFIER_BYTES))
def test_any_32_bytes_give_a_43_character_unreserved_verifier(octets: bytes) -> None:
    secrets = LoginSecrets.from_random(octets, octets)
    assert len(secrets.verifier) == 43
    assert set(secrets.verifier) <= UNRESERVED
    # The challenge is base64url of a SHA-256 digest: 43 characters, no padding.
    assert len(secrets.challenge) == 43
    assert set(secrets.challenge) <= UNRESERVED


def test_repr_and_str_hide_the_verifier_and_state() -> None:
    secrets = LoginSecrets.from_random(RFC_OCTETS, b"\x02" * STATE_BYTES)
    for shown in (repr(secrets), str(secrets), f"{secrets}", repr([secrets])):
        assert secrets.verifier not in shown
        assert secrets.state not in shown
        assert "LoginSecrets" in shown
