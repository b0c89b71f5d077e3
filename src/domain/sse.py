"""A server-sent events decoder (WHATWG HTML §9.2.6) over bytes, with a bound per event.

Why not httpx-sse: its line and data buffers grow without limit, so one endless `data:` line
from a broken upstream would take the process's memory; and it decodes text per chunk, where
the hot path wants to hand JSON bytes through untouched. Event size is bounded here, and the
decoder is pure, so any chunking of a stream can be property-tested to give the same events.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class SseEvent:
    """One dispatched event. `id` is the stream's last event id as of this event."""

    data: bytes
    event: str = "message"
    id: str | None = None


@dataclass(frozen=True)
class OversizedEvent:
    """Stands, in order, for an event that outgrew the limit; its data was dropped."""

    limit: int


class SseDecoder:
    """Feed chunks of an event stream; get complete events (and OversizedEvent markers).

    `last_event_id` and `retry_ms` are what a reconnection needs: the id of the last event
    dispatched (set at dispatch, as the spec says, so an event cut off mid-way is asked for
    again) and the server's reconnection delay.
    """

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        self._head = b""
        self._started = False
        self._line = bytearray()
        self._after_cr = False
        self._data: list[bytes] = []
        self._size = 0
        self._skipping = False
        self._line_overflowed = False
        self._event = ""
        self._event_id: str | None = None
        self._has_event_id = False
        self._id_buffer: str | None = None
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None

    def reconnected(self) -> SseDecoder:
        """A decoder for the stream's next connection. What was half-received when the
        connection broke is gone (it would run into the first line of the new one); the last
        event id and the server's retry delay carry over, as for an EventSource."""
        fresh = SseDecoder(self._max)
        fresh._id_buffer = fresh.last_event_id = self.last_event_id
        fresh.retry_ms = self.retry_ms
        return fresh

    def feed(self, chunk: bytes) -> list[SseEvent | OversizedEvent]:
        if not self._started:
            # A byte-order mark may arrive split over chunks: hold the first bytes until it
            # is clear whether they are one.
            self._head += chunk
            if len(self._head) < len(_BOM) and _BOM.startswith(self._head):
                return []
            chunk = self._head.removeprefix(_BOM)
            self._started = True
        out: list[SseEvent | OversizedEvent] = []
        start = 0
        length = len(chunk)
        if length and self._after_cr:
            self._after_cr = False
            if chunk[0] == 10:  # the LF of a CRLF split over two chunks
                start = 1
        while start < length:
            end = _next_line_end(chunk, start)
            if end < 0:
                self._grow(chunk[start:], out)
                break
            self._grow(chunk[start:end], out)
            self._end_line(out)
            if chunk[end] == 13:
                if end + 1 == length:
                    self._after_cr = True
                elif chunk[end + 1] == 10:
                    end += 1
            start = end + 1
        return out

    def _grow(self, piece: bytes, out: list[SseEvent | OversizedEvent]) -> None:
        if self._line_overflowed:
            return
        self._line += piece
        if len(self._line) + self._size > self._max:
            if not self._skipping:
                out.append(OversizedEvent(self._max))
            self._line.clear()
            self._line_overflowed = True
            self._skipping = True

    def _end_line(self, out: list[SseEvent | OversizedEvent]) -> None:
        if self._line_overflowed:
            # The end of the line that overflowed, not a blank line: keep skipping the event.
            self._line_overflowed = False
            return
        line = bytes(self._line)
        self._line.clear()
        if not line:
            self._dispatch(out)
            return
        if self._skipping or line.startswith(b":"):
            return
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._size += len(value) + 1
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\x00" not in value:
                self._event_id = value.decode("utf-8", "replace")
                self._has_event_id = True
        elif name == b"retry" and value.isdigit():
            self.retry_ms = int(value)

    def _dispatch(self, out: list[SseEvent | OversizedEvent]) -> None:
        # An oversized event's id is not taken: resuming after it would skip it for good.
        if self._has_event_id and not self._skipping:
            self._id_buffer = self._event_id
        self.last_event_id = self._id_buffer
        if self._data and not self._skipping:
            out.append(
                SseEvent(b"\n".join(self._data), self._event or "message", self.last_event_id)
            )
        self._data = []
        self._size = 0
        self._event = ""
        self._event_id = None
        self._has_event_id = False
        self._skipping = False


def _next_line_end(chunk: bytes, start: int) -> int:
    cr = chunk.find(b"\r", start)
    lf = chunk.find(b"\n", start)
    if cr < 0:
        return lf
    if lf < 0:
        return cr
    return min(cr, lf)
