"""When a failed upstream exchange is tried again: only when the message cannot have run, or
running it twice does no harm.

A tool call may send an email or move money; if it reached the server, sending it again could
do that twice. So a message is sent again only when the failure proves it did not run (no
connection was made; the server said 429, which refuses before running) or when the method
only reads (`tools/list`, `resources/read`, `ping` …), whose repetition changes nothing. The
401 and session-expiry (404) resends are decided elsewhere: those answers also prove the
request did not run.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .backoff import Backoff
from .retry_after import MAX_RETRY_WAIT_SECONDS

# Methods that only read: running them twice has the effect of running them once.
READ_ONLY_METHODS = frozenset(
    {
        "ping",
        "tools/list",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "completion/complete",
        "server/discover",
    }
)
# Gateway answers that say the server is (for now) not there to answer.
UNAVAILABLE_STATUSES = frozenset({502, 503, 504})


class Failure(enum.Enum):
    """What went wrong with one exchange, as far as repeating it is concerned."""

    UNREACHABLE = "no connection could be made"
    RATE_LIMITED = "the upstream answered 429 Too Many Requests"
    UNAVAILABLE = "the upstream answered 502, 503 or 504"
    BROKEN = "the connection broke before the answer was complete"


@dataclass(frozen=True)
class UpstreamRetry:
    """At most `max_attempts` tries of one message, `backoff` apart unless the server's
    Retry-After says otherwise (honoured up to 30 s; a longer wait is an error that names it).
    """

    max_attempts: int = 3
    backoff: Backoff = field(default_factory=lambda: Backoff(base_seconds=0.25, cap_seconds=2.0))

    def delay(
        self,
        failure: Failure,
        method: str | None,
        attempt: int,
        draw: float,
        retry_after: float | None = None,
    ) -> float | None:
        """Seconds to wait before trying again, or None to give up now.

        `method` is None for the client's responses. A notification or a response is sent
        again only on proof that it did not arrive (UNREACHABLE, RATE_LIMITED). `attempt`
        counts the failures so far from 0; `draw` is uniform in [0, 1).
        """
        if attempt + 1 >= self.max_attempts:
            return None
        proven_not_run = failure in (Failure.UNREACHABLE, Failure.RATE_LIMITED)
        if not proven_not_run and method not in READ_ONLY_METHODS:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= MAX_RETRY_WAIT_SECONDS else None
        # At least the base delay: a restarting server needs a moment, not an instant retry.
        return max(self.backoff.base_seconds, self.backoff.delay(attempt + 1, draw))
