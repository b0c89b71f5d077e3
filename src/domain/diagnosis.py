"""What `mcp-oauth2-proxy doctor` found: one line per step of the proxy's start, each with
the fix when it failed.

Pure: the checks are made in `app/doctor.py`; here are their results, how they are shown,
and the judgements that need no I/O (the IdP's clock, the probe message).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime

from .jsonrpc import Message, parse_client_line
from .wire import PROTOCOL_VERSION_META

# Tokens carry issue and expiry times; past about a minute of difference, IdPs and servers
# start refusing them as not yet valid, or the proxy renews them too late.
MAX_CLOCK_SKEW_SECONDS = 60.0
# The version the probe asks for when none is configured: the newest 2025 revision, which
# servers of every 2025 revision negotiate down from.
PROBE_VERSION = "2025-11-25"
PROBE_ID = "mcp-oauth2-proxy-doctor"
MODERN_VERSIONS = frozenset({"2026-07-28"})


class Outcome(enum.Enum):
    PASSED = "passed"
    WARNING = "warning"  # works, with a limit worth knowing; does not fail the run
    FAILED = "failed"
    SKIPPED = "skipped"  # could not be checked, because of an earlier failure or the setup


_MARKS = {
    Outcome.PASSED: "\N{CHECK MARK}",
    Outcome.WARNING: "!",
    Outcome.FAILED: "\N{BALLOT X}",
    Outcome.SKIPPED: "-",
}


@dataclass(frozen=True)
class Check:
    """One step: its name, how it went, what was seen, and what to do when it failed."""

    name: str
    outcome: Outcome
    detail: str
    fix: str | None = None
    facts: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, object]:
        return {
            "check": self.name,
            "outcome": self.outcome.value,
            "detail": self.detail,
            "fix": self.fix,
            "facts": list(self.facts),
        }


def passed(name: str, detail: str, facts: tuple[str, ...] = ()) -> Check:
    return Check(name, Outcome.PASSED, detail, facts=facts)


def failed(name: str, detail: str, fix: str, facts: tuple[str, ...] = ()) -> Check:
    return Check(name, Outcome.FAILED, detail, fix, facts)


def skipped(name: str, why: str) -> Check:
    return Check(name, Outcome.SKIPPED, why)


def all_passed(checks: list[Check]) -> bool:
    return not any(check.outcome is Outcome.FAILED for check in checks)


def render_checks(checks: list[Check]) -> str:
    """The human form: a mark, the step and what was seen; facts and the fix indented below."""
    width = max(len(check.name) for check in checks)
    lines: list[str] = []
    for check in checks:
        lines.append(f"  {_MARKS[check.outcome]} {check.name.ljust(width)}  {check.detail}")
        lines.extend(f"      {fact}" for fact in check.facts)
        if check.fix is not None:
            lines.append(f"      fix: {check.fix}")
    failures = sum(check.outcome is Outcome.FAILED for check in checks)
    lines.append("")
    if failures == 1:
        lines.append("1 problem found; fix it and run `mcp-oauth2-proxy doctor` again.")
    elif failures:
        lines.append(
            f"{failures} problems found; fix them in order, since an early one can cause the "
            "later ones."
        )
    else:
        lines.append("Everything the proxy needs works.")
    return "\n".join(lines)


def render_json(checks: list[Check]) -> str:
    document = {"ok": all_passed(checks), "checks": [check.as_dict() for check in checks]}
    return json.dumps(document, indent=2, ensure_ascii=False)


def clock_skew_seconds(date_header: str, now: float) -> float | None:
    """How far this machine's clock is ahead of a server's (negative: behind), from the
    server's `Date` header; None when the header is not a date."""
    try:
        said: datetime = parsedate_to_datetime(date_header)
    except (TypeError, ValueError, IndexError):
        return None
    if said.tzinfo is None:
        return None
    return now - said.timestamp()


def describe_skew(skew: float, whose: str) -> str:
    direction = "ahead of" if skew > 0 else "behind"
    seconds = round(abs(skew))
    amount = f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"
    return f"this machine's clock is {amount} {direction} {whose}"


def probe_message(configured_version: str | None, client_version: str) -> Message:
    """The first message the proxy's client would send: `initialize` on the 2025 wire, or
    `server/discover` on the 2026-07-28 wire when that version is configured."""
    version = configured_version or PROBE_VERSION
    document: dict[str, object]
    if version in MODERN_VERSIONS:
        document = {
            "jsonrpc": "2.0",
            "id": PROBE_ID,
            "method": "server/discover",
            "params": {"_meta": {PROTOCOL_VERSION_META: version}},
        }
    else:
        document = {
            "jsonrpc": "2.0",
            "id": PROBE_ID,
            "method": "initialize",
            "params": {
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": {"name": "mcp-oauth2-proxy doctor", "version": client_version},
            },
        }
    return _message(document)


def initialized_notification() -> Message:
    """What a 2025 client sends after `initialize`, before anything else of the session."""
    return _message({"jsonrpc": "2.0", "method": "notifications/initialized"})


def _message(document: dict[str, object]) -> Message:
    message = parse_client_line(json.dumps(document).encode())
    assert isinstance(message, Message)  # built here: always one message
    return message


def describe_server(result: object) -> str:
    """'server NAME VERSION, protocol P' from an initialize or discover result."""
    if not isinstance(result, dict):
        return "an answer without a result object"
    info = result.get("serverInfo")
    name = version = None
    if isinstance(info, dict):
        name, version = info.get("name"), info.get("version")
    protocol = result.get("protocolVersion")
    if protocol is None:
        versions = result.get("supportedVersions")
        protocol = ", ".join(map(str, versions)) if isinstance(versions, list) else None
    parts = [f"server {name or '(unnamed)'}{f' {version}' if version else ''}"]
    if protocol:
        parts.append(f"protocol {protocol}")
    return ", ".join(parts)
