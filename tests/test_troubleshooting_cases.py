"""Every case of the original tool's troubleshooting page is recognised here too: by a
`doctor` step (whose ✗ lines the doctor's contract tests check), or by the message the proxy
prints in that situation; and each has its section in docs/troubleshooting.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_oauth2_proxy.app.doctor import STEPS

ROOT = Path(__file__).resolve().parent.parent
TROUBLESHOOTING = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
SOURCES = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "src").rglob("*.py"))

# (the seed page's case, our section's heading, doctor steps, words of the proxy's message)
CASES = [
    (
        "the browser does not open",
        "## The browser does not open, or the proxy runs on a remote host",
        (),
        "If it does not open, open this URL",
    ),
    (
        "redirect URI mismatch",
        "## The IdP says the redirect URI does not match",
        ("callback port",),
        "the redirect URI to register with the IdP, exactly",
    ),
    (
        "the login timed out",
        "## The login times out",
        ("callback port",),
        "oauth2.callbackTimeoutSeconds / OAUTH2_CALLBACK_TIMEOUT_SECONDS",
    ),
    (
        "configuration invalid, a field missing, or the token prefetch failed",
        "## Startup fails: a setting is wrong or missing (exit 2)",
        ("configuration", "token"),
        "required but not set",
    ),
    (
        "a non-loopback http:// URL",
        '## "cleartext http:// ... which is not loopback"',
        ("security",),
        "which is not loopback; switch to https://",
    ),
    (
        "discovery finds nothing",
        "## Discovery does not find the IdP",
        ("discovery",),
        "could not discover the authorization server",
    ),
    (
        "persistent 401s",
        "## Requests keep failing with 401",
        ("upstream",),
        "the upstream rejected a freshly issued token too",
    ),
    (
        "tool calls time out",
        "## Tool calls time out",
        (),
        "upstream.timeoutMs / UPSTREAM_TIMEOUT_MS",
    ),
    (
        "server notifications never arrive",
        "## Server notifications never arrive",
        ("server stream",),
        "the server offers no event stream",
    ),
    (
        "reset the cached login",
        "## Log in again, or clear a stale or revoked login",
        ("token",),
        "`mcp-oauth2-proxy logout` and `mcp-oauth2-proxy login`",
    ),
]
QUESTIONS = [
    "**Can one proxy serve several upstreams?**",
    "**Does it do per-user delegation or multi-tenant auth?**",
    "**Can my MCP client send its own Authorization header?**",
    "**Is the refresh-token cache safe?**",
]


@pytest.mark.parametrize(("case", "heading", "steps", "words"), CASES, ids=[c[0] for c in CASES])
def test_each_seed_case_is_recognised_and_documented(
    case: str, heading: str, steps: tuple[str, ...], words: str
) -> None:
    assert heading in TROUBLESHOOTING.splitlines(), f"{case}: no section {heading!r}"
    assert set(steps) <= set(STEPS), f"{case}: doctor has no step {steps}"
    assert words in SOURCES, f"{case}: no message says {words!r}"


def test_the_seed_pages_questions_are_answered() -> None:
    section = TROUBLESHOOTING.split("## Questions", 1)[1]
    for question in QUESTIONS:
        assert question in section
