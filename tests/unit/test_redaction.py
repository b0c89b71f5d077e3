"""Redaction: no registered secret, and no secret-shaped value, survives into a log line."""

from __future__ import annotations

import json
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_oauth2_proxy.domain.redaction import MASK, MIN_SECRET_LENGTH, Redactor

secrets = st.text(min_size=MIN_SECRET_LENGTH, max_size=40)
surroundings = st.text(max_size=60)


@given(secret=secrets, before=surroundings, after=surroundings)
def test_no_registered_secret_survives_whatever_surrounds_it(
    secret: str, before: str, after: str
) -> None:
    redactor = Redactor()
    redactor.register(secret)
    for spelling in (secret, quote_plus(secret), quote(secret, safe=""), json.dumps(secret)[1:-1]):
        line = redactor.redact(before + spelling + after)
        assert secret not in line


@given(first=secrets, second=secrets, text=surroundings)
def test_several_secrets_are_all_removed(first: str, second: str, text: str) -> None:
    redactor = Redactor()
    redactor.register(first, second)
    line = redactor.redact(f"{first}{text}{second}{first}")
    assert first not in line
    assert second not in line


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi"),
        ("authorization=Basic YXBwOnMzY3JldA==", "YXBwOnMzY3JldA"),
        ("headers={'Authorization': 'DPoP abcdefghijkl'}", "abcdefghijkl"),
        ("sent Bearer abcdefgh12345678 upstream", "abcdefgh12345678"),
        ("grant_type=refresh_token&refresh_token=rt-12345&client_id=app", "rt-12345"),
        ("client_secret=sh%2Bh&x=1", "sh%2Bh"),
        ('{"access_token": "at-9876", "token_type": "Bearer"}', "at-9876"),
        ('{"password":"p\\"w"}', 'p\\"w'),
        ("code=auth-code-1&state=xyz", "auth-code-1"),
        ("code_verifier=verifier-abc", "verifier-abc"),
    ],
)
def test_secret_shapes_are_masked_even_when_unknown(text: str, hidden: str) -> None:
    line = Redactor().redact(text)
    assert hidden not in line
    assert MASK in line


def test_ordinary_text_is_left_alone() -> None:
    text = 'level=info msg="obtained an access token" grant=client_credentials error_code=42'
    assert Redactor().redact(text) == text


def test_short_values_are_not_registered() -> None:
    redactor = Redactor()
    redactor.register("abc", None, "")
    assert redactor.redact("abc abc") == "abc abc"


def test_masking_that_forms_a_new_secret_is_repeated() -> None:
    redactor = Redactor()
    redactor.register("b***")
    assert "b***" not in redactor.redact("bb***")
