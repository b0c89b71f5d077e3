"""What to do when the upstream answers 401: a pure decision, carried out by the bridge.

A 401 means the token was rejected, so it is invalidated and the message is sent once more
with a fresh token; the request never ran, so the resend is safe even for a tool call. A
second 401 for the same message means a fresh token does not help either: scope, audience or
a revoked grant, which retrying cannot fix.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass


class Next(enum.Enum):
    """The bridge's next step for one message."""

    DELIVER = "deliver"
    RENEW_AND_RESEND = "renew and resend"
    GIVE_UP = "give up"


@dataclass(frozen=True)
class RetryOn401:
    """Renew and resend at most `max_renewals` times per message."""

    max_renewals: int = 1

    def decide(self, status: int, renewals_so_far: int) -> Next:
        if status != 401:
            return Next.DELIVER
        if renewals_so_far < self.max_renewals:
            return Next.RENEW_AND_RESEND
        return Next.GIVE_UP


PERSISTENT_401_ADVICE = (
    "the upstream rejected a freshly issued token too (HTTP 401). Likely causes: the token "
    "lacks a scope the server needs (oauth2.scope / OAUTH2_SCOPE), it was issued for another "
    "audience or resource (oauth2.audience / OAUTH2_AUDIENCE, oauth2.resource / "
    "OAUTH2_RESOURCE), the login was revoked (with a browser login, run mcp-oauth2-proxy "
    "login again), or this client is not authorized for the server (ask its operator)"
)


def step_up_scope(status: int, challenge: Mapping[str, str], stepped_up: bool) -> str | None:
    """The scope to re-authorize for, when a 403 says `insufficient_scope` and names the
    scope it needs (MCP authorization §Step-Up Authorization Flow); once per message."""
    if status != 403 or stepped_up or challenge.get("error") != "insufficient_scope":
        return None
    return challenge.get("scope") or None
