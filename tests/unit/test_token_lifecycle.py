"""Token expiry rules: skew, short lifetimes, missing expires_in, JWT exp."""

from __future__ import annotations

import base64
import json

import pytest

from mcp_oauth2_proxy.domain.token_lifecycle import (
    AccessToken,
    normalise_token_type,
    renew_at,
)

NOW = 1_000_000.0


def jwt_with(claims: dict[str, object]) -> str:
    def part(document: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part(claims)}.signature"


def test_renews_skew_seconds_before_expiry() -> None:
    assert renew_at(NOW, 3600, 30, "opaque") == NOW + 3570


def test_a_lifetime_no_longer_than_the_skew_renews_halfway() -> None:
    assert renew_at(NOW, 20, 30, "opaque") == NOW + 10
    assert renew_at(NOW, 30, 30, "opaque") == NOW + 15


def test_zero_or_negative_lifetime_counts_as_unknown_not_as_expired() -> None:
    assert renew_at(NOW, 0, 30, "opaque") is None
    assert renew_at(NOW, -5, 30, "opaque") is None
    assert renew_at(NOW, None, 30, jwt_with({"exp": NOW - 60})) is None


def test_missing_expires_in_uses_the_jwt_exp_claim() -> None:
    token = jwt_with({"exp": NOW + 600, "sub": "x"})
    assert renew_at(NOW, None, 30, token) == NOW + 570


def test_missing_expires_in_without_jwt_keeps_the_token_until_rejected() -> None:
    assert renew_at(NOW, None, 30, "opaque-token") is None
    assert renew_at(NOW, None, 30, "a.b.c") is None
    assert renew_at(NOW, None, 30, jwt_with({"exp": "soon"})) is None
    assert renew_at(NOW, None, 30, jwt_with({"exp": True})) is None


def test_expires_in_wins_over_jwt_exp() -> None:
    token = jwt_with({"exp": NOW + 600})
    assert renew_at(NOW, 100, 30, token) == NOW + 70


def test_freshness_and_authorization_header() -> None:
    token = AccessToken("abc", "Bearer", renew_at=NOW + 10)
    assert token.is_fresh(NOW + 9.9)
    assert not token.is_fresh(NOW + 10)
    assert AccessToken("abc", "Bearer", renew_at=None).is_fresh(NOW * 10)
    assert token.authorization == "Bearer abc"


def test_repr_hides_the_token_value() -> None:
    assert "s3cr3t-value" not in repr(AccessToken("s3cr3t-value", "Bearer", renew_at=None))


@pytest.mark.parametrize(
    ("given", "sent"),
    [(None, "Bearer"), ("bearer", "Bearer"), ("BEARER", "Bearer"), ("DPoP", "DPoP")],
)
def test_token_type_is_normalised(given: str | None, sent: str) -> None:
    assert normalise_token_type(given) == sent
