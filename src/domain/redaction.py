"""Removing secrets from text before it is logged, at every level.

Two nets, because either alone leaks: the values the process knows (client secret, password,
tokens, codes, verifiers), in the spellings they take on the wire (raw, form-encoded,
JSON-escaped); and the shapes secrets come in whatever their value (`Bearer …`, `Basic …`,
`access_token=…`, `"refresh_token": "…"`), which catches a token the process has not seen
yet, such as one inside an IdP's error page.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote, quote_plus

MASK = "***"
# Longer than MASK, so a mask can never spell a registered secret and masking terminates.
MIN_SECRET_LENGTH = 4
_MAX_PASSES = 16
_SENSITIVE_FIELDS = (
    "access_token|refresh_token|id_token|client_secret|password|code_verifier|code|"
    "assertion|client_assertion|device_code|token"
)
_SHAPES = re.compile(
    r"(?P<header>(?i:\bauthorization)\s*[:=]\s*)(?:[A-Za-z]+\s+)?[^\s,;\"']+"
    r"|(?P<scheme>\b(?:Bearer|bearer|BEARER|Basic|DPoP)\s+)[A-Za-z0-9\-._~+/]{8,}=*"
    rf"|(?P<form>\b(?:{_SENSITIVE_FIELDS})=)[^&\s\"']+"
    rf"|(?P<json>\"(?:{_SENSITIVE_FIELDS})\"\s*:\s*\")(?:[^\"\\]|\\.)*"
)


class Redactor:
    """Holds every secret the process has seen; `redact` masks them in any text.

    Secrets shorter than MIN_SECRET_LENGTH are not registered: masking every "ab" would make
    logs unreadable, and a secret that short protects nothing anyway.
    """

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def register(self, *secrets: str | None) -> None:
        added = False
        for secret in secrets:
            if secret is None or len(secret) < MIN_SECRET_LENGTH:
                continue
            for spelling in (
                secret,
                quote_plus(secret),
                quote(secret, safe=""),
                json.dumps(secret)[1:-1],
            ):
                if spelling not in self._values:
                    self._values.add(spelling)
                    added = True
        if added:
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(value) for value in ordered))

    def redact(self, text: str) -> str:
        # Repeat until nothing changes: masking one secret can join its neighbours into
        # another (text "ab***" with secret "b***"). That settles within a pass or two; text
        # that would not settle is dropped whole rather than risk a leak.
        for _ in range(_MAX_PASSES):
            masked = self._pattern.sub(MASK, text) if self._pattern is not None else text
            masked = _SHAPES.sub(_mask_shape, masked)
            if masked == text:
                return masked
            text = masked
        return MASK


def _mask_shape(match: re.Match[str]) -> str:
    prefix = (
        match.group("header") or match.group("scheme") or match.group("form") or match.group("json")
    )
    return prefix + MASK
