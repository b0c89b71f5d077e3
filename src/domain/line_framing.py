"""Newline-delimited framing of the stdio channel (MCP stdio transport), with a size limit.

Bytes arrive in arbitrary chunks; complete lines come out, CRLF tolerated, empty lines
skipped. A line longer than the limit is not buffered: its bytes are dropped as they arrive
and one `Oversized` marker takes its place, so a runaway client cannot exhaust memory and the
proxy can still answer with an error and carry on with the next line.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Oversized:
    """Stands for a line that exceeded the limit; `prefix` is its start, for an error id."""

    prefix: bytes


class LineSplitter:
    """Feed chunks, get complete lines (without the line ending)."""

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self._max = max_line_bytes
        self._pending = bytearray()
        self._skipping: bytes | None = None

    def feed(self, chunk: bytes) -> list[bytes | Oversized]:
        lines: list[bytes | Oversized] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                self._keep(chunk[start:], lines)
                return lines
            piece = chunk[start:end]
            start = end + 1
            if self._skipping is not None:
                lines.append(Oversized(self._skipping))
                self._skipping = None
                self._pending.clear()
                continue
            if self._pending:
                self._pending += piece
                piece = bytes(self._pending)
                self._pending.clear()
            piece = piece.removesuffix(b"\r")
            if len(piece) > self._max:
                lines.append(Oversized(piece[:256]))
                continue
            if piece.strip():
                lines.append(piece)

    def finish(self) -> list[bytes | Oversized]:
        """End of input: a last line without a newline still counts."""
        if self._skipping is not None:
            prefix, self._skipping = self._skipping, None
            return [Oversized(prefix)]
        rest = bytes(self._pending).removesuffix(b"\r")
        self._pending.clear()
        return [rest] if rest.strip() else []

    def _keep(self, tail: bytes, lines: list[bytes | Oversized]) -> None:
        if self._skipping is not None:
            return
        self._pending += tail
        # A trailing CR may be half of a CRLF split over chunks; it does not count.
        if len(self._pending) - self._pending.endswith(b"\r") > self._max:
            self._skipping = bytes(self._pending[:256])
            self._pending.clear()
