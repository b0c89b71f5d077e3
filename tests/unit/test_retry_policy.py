"""The 401 policy: renew and resend once per message, then give up."""

from __future__ import annotations

import pytest

from mcp_oauth2_proxy.domain.retry_policy import Next, RetryOn401


@pytest.mark.parametrize("status", [200, 202, 400, 403, 404, 500])
def test_other_statuses_are_delivered(status: int) -> None:
    assert RetryOn401().decide(status, 0) is Next.DELIVER


def test_first_401_renews_and_resends_second_gives_up() -> None:
    policy = RetryOn401()
    assert policy.decide(401, 0) is Next.RENEW_AND_RESEND
    assert policy.decide(401, 1) is Next.GIVE_UP


def test_the_bound_is_configurable() -> None:
    assert RetryOn401(max_renewals=0).decide(401, 0) is Next.GIVE_UP
