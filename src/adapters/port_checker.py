"""The PortChecker port over a real socket: try to bind, and let go at once."""

from __future__ import annotations

import socket
import sys


class LoopbackPortChecker:
    """Binds as the login's listener (anyio's TCP listener) would, SO_REUSEADDR included
    off Windows, so "free" here means the listener would get the port."""

    def is_free(self, host: str, port: int) -> bool:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            if sys.platform != "win32":
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host.strip("[]"), port))
                probe.listen()
            except OSError:
                return False
        return True
