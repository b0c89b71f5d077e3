"""Reconnection delays: exponential backoff with full jitter (base 500 ms, cap 30 s).

Full jitter (a uniform draw between zero and the exponential bound) spreads the reconnects of
many proxies that lost the same server at the same moment, instead of having them return in
lock-step. The random draw is passed in, so the rule is testable with fixed values.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delay before reconnection attempt `attempt` (0 for the first retry)."""

    base_seconds: float = 0.5
    cap_seconds: float = 30.0
    max_attempts: int = 10

    def delay(self, attempt: int, draw: float) -> float:
        """`draw` is uniform in [0, 1)."""
        bound = min(self.cap_seconds, self.base_seconds * 2.0 ** min(attempt, 32))
        return bound * draw

    def exhausted(self, attempt: int) -> bool:
        return attempt >= self.max_attempts
