"""The operating system's random source, for the Entropy port."""

from __future__ import annotations

import secrets


class SystemEntropy:
    """Cryptographically strong bytes from `secrets` (the OS CSPRNG)."""

    def random_bytes(self, count: int) -> bytes:
        return secrets.token_bytes(count)
