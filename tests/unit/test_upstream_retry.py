"""When a failed upstream exchange is sent again: never a call that may have run."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_oauth2_proxy.domain.retry_after import retry_after_seconds
from mcp_oauth2_proxy.domain.upstream_retry import READ_ONLY_METHODS, Failure, UpstreamRetry

RETRY = UpstreamRetry()
methods = st.one_of(st.none(), st.sampled_from(sorted(READ_ONLY_METHODS)), st.text(max_size=20))


@given(
    failure=st.sampled_from([Failure.BROKEN, Failure.UNAVAILABLE]),
    method=methods.filter(lambda m: m not in READ_ONLY_METHODS),
    attempt=st.integers(0, 5),
    draw=st.floats(0, 1, exclude_max=True),
)
def test_what_may_have_run_is_never_sent_again(
    failure: Failure, method: str | None, attempt: int, draw: float
) -> None:
    assert RETRY.delay(failure, method, attempt, draw) is None


@given(
    failure=st.sampled_from(list(Failure)),
    method=methods,
    draw=st.floats(0, 1, exclude_max=True),
    retry_after=st.one_of(st.none(), st.floats(0, 30)),
)
def test_at_most_max_attempts_in_all(
    failure: Failure, method: str | None, draw: float, retry_after: float | None
) -> None:
    assert RETRY.delay(failure, method, RETRY.max_attempts - 1, draw, retry_after) is None


@pytest.mark.parametrize("failure", [Failure.UNREACHABLE, Failure.RATE_LIMITED])
def test_what_provably_did_not_run_is_sent_again_whatever_the_method(failure: Failure) -> None:
    for method in ("tools/call", None, "notifications/initialized"):
        wait = RETRY.delay(failure, method, 0, 0.0)
        assert wait is not None
        assert wait >= RETRY.backoff.base_seconds  # a restarting server gets a moment


@pytest.mark.parametrize("failure", [Failure.BROKEN, Failure.UNAVAILABLE])
def test_read_only_methods_are_sent_again_after_any_failure(failure: Failure) -> None:
    for method in sorted(READ_ONLY_METHODS):
        assert RETRY.delay(failure, method, 0, 0.5) is not None


def test_retry_after_is_honoured_up_to_thirty_seconds() -> None:
    assert RETRY.delay(Failure.RATE_LIMITED, "tools/call", 0, 0.5, retry_after=7.0) == 7.0
    assert RETRY.delay(Failure.RATE_LIMITED, "tools/call", 0, 0.5, retry_after=30.0) == 30.0
    assert RETRY.delay(Failure.RATE_LIMITED, "tools/call", 0, 0.5, retry_after=31.0) is None


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC).timestamp()
    later = format_datetime(datetime(2026, 11, 30, 12, 0, 9, tzinfo=UTC), usegmt=True)
    earlier = format_datetime(datetime(2026, 11, 30, 11, 0, 0, tzinfo=UTC), usegmt=True)
    assert retry_after_seconds(" 12 ", now) == 12.0
    assert retry_after_seconds(later, now) == 9.0
    assert retry_after_seconds(earlier, now) == 0.0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds("²", now) is None  # a digit to str.isdigit, not to float()
    assert retry_after_seconds(None, now) is None
