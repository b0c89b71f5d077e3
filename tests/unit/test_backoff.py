"""Reconnection backoff: exponential bound, cap, full jitter from an injected draw, limit."""

from __future__ import annotations

import math
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_oauth2_proxy.domain.backoff import Backoff

JUST_BELOW_ONE = math.nextafter(1.0, 0.0)


@pytest.mark.parametrize(
    ("attempt", "bound"),
    [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 30.0), (7, 30.0)],
)
def test_the_default_bound_doubles_from_half_a_second_up_to_thirty(
    attempt: int, bound: float
) -> None:
    assert Backoff().delay(attempt, 0.5) == bound / 2
    assert Backoff().delay(attempt, 0.0) == 0.0


def test_the_cap_holds_for_late_attempts() -> None:
    backoff = Backoff(base_seconds=1.0, cap_seconds=10.0)
    assert backoff.delay(3, 0.25) == 2.0
    assert backoff.delay(4, 0.25) == 2.5
    assert backoff.delay(50, 0.25) == 2.5


def test_a_draw_just_below_one_stays_below_the_bound() -> None:
    assert 0.5 * 0.99 < Backoff().delay(0, JUST_BELOW_ONE) < 0.5
    assert 29.0 < Backoff().delay(20, JUST_BELOW_ONE) < 30.0


@pytest.mark.parametrize("attempt", [33, 64, 1024, 10**6, sys.maxsize, 10**400])
def test_huge_attempt_numbers_do_not_overflow(attempt: int) -> None:
    delay = Backoff().delay(attempt, 0.5)
    assert delay == 15.0
    assert math.isfinite(delay)


def test_exhausted_after_max_attempts() -> None:
    backoff = Backoff(max_attempts=3)
    assert [backoff.exhausted(attempt) for attempt in range(5)] == [
        False,
        False,
        False,
        True,
        True,
    ]


def test_the_default_allows_ten_attempts() -> None:
    assert not Backoff().exhausted(9)
    assert Backoff().exhausted(10)


@given(
    base=st.floats(min_value=0.01, max_value=10.0),
    cap=st.floats(min_value=10.0, max_value=3600.0),
    attempt=st.integers(min_value=0, max_value=10**9),
    draw=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_delay_is_the_draw_times_the_capped_exponential_bound(
    base: float, cap: float, attempt: int, draw: float
) -> None:
    # 2**attempt itself would overflow a float past about 1023; past 64 the cap wins anyway.
    bound = cap if attempt > 64 else min(cap, base * 2.0**attempt)
    delay = Backoff(base_seconds=base, cap_seconds=cap).delay(attempt, draw)
    assert delay == bound * draw
    assert 0.0 <= delay < bound
    assert delay <= cap
