"""The `Retry-After` header (RFC 9110 §10.2.3), read the same way for the IdP and the upstream.

The current time is passed in (the domain has no clock), so an HTTP date turns into seconds
without a wall clock here.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime

# Longer waits are not worth holding a request for: the error, which names the wait, is better.
MAX_RETRY_WAIT_SECONDS = 30.0


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds to wait, from delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now)
