"""A server-sent events decoder (WHATWG HTML §9.2.6) over bytes, with a bound per event.

Why not httpx-sse: its line and data buffers grow without limit, so one endless `data:` line
from a broken upstream would take the process's memory; and it decodes text per chunk, where
the hot path wants to hand JSON bytes through untouched. Event size is bounded here, and the
decoder is pure, so any chunking of a stream can be property-tested to give the same events.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class SseEvent:
    """One dispatched event. `id` is the stream's last event id after this event."""

    data: bytes
    event: str = "message"
    id: str | None = None


class EventTooLarge(Exception):
    """An event grew past the limit before it was complete."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"an upstream event exceeded {limit} bytes")
        self.limit = limit


class SseDecoder:
    """Feed chunks of an event stream; get complete events.

    `last_event_id` and `retry_ms` follow the stream as the spec says (they change as soon as
    their field is read), for resuming it with Last-Event-ID after the server's retry delay.
    """

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        self._line = bytearray()
        self._after_cr = False
        self._started = False
        self._data: list[bytes] = []
        self._size = 0
        self._event = ""
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if not self._started and chunk:
            self._started = True
            chunk = chunk.removeprefix(b"\xef\xbb\xbf")
        events: list[SseEvent] = []
        for line in self._lines(chunk):
            event = self._process(line)
            if event is not None:
                events.append(event)
        return events

    def _lines(self, chunk: bytes) -> list[bytes]:
        lines: list[bytes] = []
        start = 0
        if self._after_cr and chunk.startswith(b"\n"):
            start = 1
        self._after_cr = False
        length = len(chunk)
        while start < length:
            cr = chunk.find(b"\r", start)
            lf = chunk.find(b"\n", start)
            ends = [index for index in (cr, lf) if index >= 0]
            if not ends:
                self._grow(chunk[start:])
                break
            end = min(ends)
            self._grow(chunk[start:end])
            lines.append(bytes(self._line))
            self._line.clear()
            if chunk[end] == 13:  # CR: a following LF belongs to the same line ending
                if end + 1 < length:
                    start = end + 2 if chunk[end + 1] == 10 else end + 1
                else:
                    self._after_cr = True
                    start = end + 1
            else:
                start = end + 1
        return lines

    def _grow(self, piece: bytes) -> None:
        self._line += piece
        if len(self._line) + self._size > self._max:
            self._line.clear()
            self._reset_event()
            raise EventTooLarge(self._max)

    def _process(self, line: bytes) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(b":"):
            return None
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
                self.last_event_id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        if not self._data:
            self._reset_event()
            return None
        event = SseEvent(b"\n".join(self._data), self._event or "message", self.last_event_id)
        self._reset_event()
        return event

    def _reset_event(self) -> None:
        self._data = []
        self._size = 0
        self._event = ""
