"""The doctor's results, as shown to people and to machines, and the judgements it makes
without the network: the IdP's clock and the probe message."""

from __future__ import annotations

import json
from email.utils import formatdate

import pytest

from mcp_oauth2_proxy.domain.diagnosis import (
    Check,
    Outcome,
    all_passed,
    clock_skew_seconds,
    describe_server,
    describe_skew,
    failed,
    passed,
    probe_message,
    render_checks,
    render_json,
    skipped,
)
from mcp_oauth2_proxy.domain.wire import PROTOCOL_VERSION_META

NOW = 1_800_000_000.0


def test_a_failure_shows_its_facts_and_fix_under_it() -> None:
    checks = [
        passed("configuration", "grant client_credentials", ("UPSTREAM_URL = https://x",)),
        failed("token", "the IdP refused", "check OAUTH2_CLIENT_SECRET"),
        skipped("upstream", "not checked: token failed"),
    ]
    shown = render_checks(checks).splitlines()
    assert shown[0] == "  \N{CHECK MARK} configuration  grant client_credentials"
    assert shown[1] == "      UPSTREAM_URL = https://x"
    assert shown[2] == "  \N{BALLOT X} token          the IdP refused"
    assert shown[3] == "      fix: check OAUTH2_CLIENT_SECRET"
    assert shown[4].startswith("  - upstream")
    assert shown[-1].startswith("1 problem found")


def test_only_a_failure_fails_the_run() -> None:
    warning = Check("server stream", Outcome.WARNING, "no stream")
    assert all_passed([passed("a", "ok"), warning, skipped("b", "n/a")])
    assert not all_passed([passed("a", "ok"), failed("b", "broken", "fix it")])
    assert render_checks([passed("a", "ok")]).endswith("Everything the proxy needs works.")


def test_the_json_form_has_every_field() -> None:
    document = json.loads(render_json([failed("token", "refused", "fix", ("fact",))]))
    assert document == {
        "ok": False,
        "checks": [
            {
                "check": "token",
                "outcome": "failed",
                "detail": "refused",
                "fix": "fix",
                "facts": ["fact"],
            }
        ],
    }


@pytest.mark.parametrize(
    ("offset", "expected"),
    [(0, 0), (-600, 600), (90, -90)],
)
def test_clock_skew_from_a_date_header(offset: int, expected: int) -> None:
    header = formatdate(NOW + offset, usegmt=True)
    assert clock_skew_seconds(header, NOW) == pytest.approx(expected)


@pytest.mark.parametrize("header", ["", "yesterday", "Mon, 99 Foo 2026 25:61:00"])
def test_a_date_header_that_is_not_a_date_gives_no_skew(header: str) -> None:
    assert clock_skew_seconds(header, NOW) is None


def test_skew_is_described_in_minutes_and_direction() -> None:
    assert describe_skew(601.2, "the IdP's") == (
        "this machine's clock is 10 min 1 s ahead of the IdP's"
    )
    assert describe_skew(-5, "the IdP's") == "this machine's clock is 5 s behind the IdP's"


def test_the_probe_is_initialize_on_the_2025_wire() -> None:
    probe = probe_message(None, "1.0")
    assert probe.method == "initialize"
    assert probe.params["protocolVersion"] == "2025-11-25"
    assert probe_message("2025-03-26", "1.0").params["protocolVersion"] == "2025-03-26"


def test_the_probe_is_server_discover_on_the_2026_wire() -> None:
    probe = probe_message("2026-07-28", "1.0")
    assert probe.method == "server/discover"
    assert probe.params["_meta"][PROTOCOL_VERSION_META] == "2026-07-28"


def test_the_server_is_described_from_its_answer() -> None:
    result = {"serverInfo": {"name": "tickets", "version": "2.1"}, "protocolVersion": "2025-06-18"}
    assert describe_server(result) == "server tickets 2.1, protocol 2025-06-18"
    assert describe_server({"supportedVersions": ["2026-07-28"]}) == (
        "server (unnamed), protocol 2026-07-28"
    )
    assert describe_server("nonsense") == "an answer without a result object"
