"""The real clock, for the Clock port."""

from __future__ import annotations

import time


class SystemClock:
    """Wall-clock seconds: what token expiry is measured in."""

    def now(self) -> float:
        return time.time()
