"""The server-sent events decoder: WHATWG fields, line endings, chunking, and the event bound."""

from __future__ import annotations

import itertools
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_oauth2_proxy.domain.sse import (
    DEFAULT_MAX_EVENT_BYTES,
    OversizedEvent,
    SseDecoder,
    SseEvent,
)

BOM = b"\xef\xbb\xbf"


Decoded = list[SseEvent | OversizedEvent]


def decode(*chunks: bytes, max_event_bytes: int | None = None) -> Decoded:
    decoder = SseDecoder() if max_event_bytes is None else SseDecoder(max_event_bytes)
    events: Decoded = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events


def test_a_data_field_dispatches_a_message_event_on_a_blank_line() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: hello\n") == []
    assert decoder.feed(b"\n") == [SseEvent(b"hello", "message", None)]


def test_the_event_field_names_the_event_and_resets_after_dispatch() -> None:
    assert decode(b"event: ping\ndata: a\n\ndata: b\n\n") == [
        SseEvent(b"a", "ping"),
        SseEvent(b"b", "message"),
    ]


def test_an_event_field_on_an_event_without_data_does_not_leak_into_the_next() -> None:
    assert decode(b"event: ghost\n\ndata: b\n\n") == [SseEvent(b"b", "message")]


def test_the_id_field_sets_the_event_id_and_the_last_event_id() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"id: 42\ndata: x\n\n") == [SseEvent(b"x", "message", "42")]
    assert decoder.last_event_id == "42"


def test_the_last_event_id_persists_across_events_until_replaced() -> None:
    decoder = SseDecoder()
    events = decoder.feed(b"id: 7\ndata: a\n\ndata: b\n\nid: 8\ndata: c\n\ndata: d\n\n")
    assert events == [
        SseEvent(b"a", id="7"),
        SseEvent(b"b", id="7"),
        SseEvent(b"c", id="8"),
        SseEvent(b"d", id="8"),
    ]
    assert decoder.last_event_id == "8"


def test_an_id_containing_nul_is_ignored() -> None:
    decoder = SseDecoder()
    events = decoder.feed(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n")
    assert events == [SseEvent(b"a", "message", "1"), SseEvent(b"b", "message", "1")]
    assert decoder.last_event_id == "1"


def test_an_empty_id_field_resets_the_last_event_id_to_empty() -> None:
    decoder = SseDecoder()
    events = decoder.feed(b"id: 1\ndata: a\n\nid\ndata: b\n\n")
    assert events == [SseEvent(b"a", id="1"), SseEvent(b"b", id="")]
    assert decoder.last_event_id == ""


def test_retry_sets_the_reconnection_time_without_dispatching() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"retry: 1500\n\n") == []
    assert decoder.retry_ms == 1500


@pytest.mark.parametrize(
    "value",
    [
        b"1.5",
        b"-1",
        b"10ms",
        b"",
        b" 15",
        b"+3",
        b"0x10",
        "\u0661\u0662".encode(),
        "\uff11\uff12".encode(),
    ],
)
def test_retry_with_anything_but_ascii_digits_is_ignored(value: bytes) -> None:
    decoder = SseDecoder()
    decoder.feed(b"retry: 300\n\n")
    decoder.feed(b"retry: " + value + b"\n\n")
    assert decoder.retry_ms == 300


def test_retry_without_a_prior_value_stays_unset_when_invalid() -> None:
    decoder = SseDecoder()
    decoder.feed(b"retry: soon\n\n")
    assert decoder.retry_ms is None


def test_comments_are_ignored() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b": ping\n\n:\n\n") == []
    assert decoder.feed(b": keep-alive\ndata: x\n:data: not-data\n\n") == [SseEvent(b"x")]


def test_unknown_fields_are_ignored() -> None:
    assert decode(b"foo: bar\ndata : spaced-name\nDATA: upper\ndata: x\n\n") == [SseEvent(b"x")]


def test_multi_line_data_is_joined_with_line_feeds() -> None:
    assert decode(b"data: a\ndata: b\ndata:\ndata: c\n\n") == [SseEvent(b"a\nb\n\nc")]


@pytest.mark.parametrize(
    ("line", "data"),
    [
        (b"data:x", b"x"),
        (b"data: x", b"x"),
        (b"data:  x", b" x"),
        (b"data: x ", b"x "),
        (b"data:\tx", b"\tx"),
        (b"data: a: b", b"a: b"),
    ],
)
def test_only_one_leading_space_after_the_colon_is_removed(line: bytes, data: bytes) -> None:
    assert decode(line + b"\n\n") == [SseEvent(data)]


def test_a_data_field_without_colon_adds_an_empty_line() -> None:
    assert decode(b"data\n\n") == [SseEvent(b"")]
    assert decode(b"data: a\ndata\n\n") == [SseEvent(b"a\n")]


def test_the_mcp_priming_event_dispatches_empty_data_and_sets_the_last_event_id() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"id: 1\ndata: \n\n") == [SseEvent(b"", "message", "1")]
    assert decoder.last_event_id == "1"


def test_the_priming_event_as_the_python_sdk_sends_it() -> None:
    decoder = SseDecoder()
    stream = (
        b"id: 1\r\ndata: \r\nretry: 500\r\n\r\n"
        b'id: 2\r\nevent: message\r\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\r\n\r\n'
    )
    assert decoder.feed(stream) == [
        SseEvent(b"", "message", "1"),
        SseEvent(b'{"jsonrpc":"2.0","id":1,"result":{}}', "message", "2"),
    ]
    assert decoder.retry_ms == 500
    assert decoder.last_event_id == "2"


def test_a_block_without_data_dispatches_nothing_but_keeps_its_id() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"id: 5\nevent: x\n\n") == []
    assert decoder.last_event_id == "5"


def test_the_id_of_a_block_without_data_is_taken_at_its_blank_line_not_before() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"id: 5\n") == []
    assert decoder.last_event_id is None
    assert decoder.feed(b"\n") == []
    assert decoder.last_event_id == "5"


def test_the_last_event_id_changes_only_when_its_event_is_complete() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"id: 1\ndata: a\n\nid: 2\ndata: {partial") == [SseEvent(b"a", id="1")]
    assert decoder.last_event_id == "1"
    assert decoder.feed(b"}\n\n") == [SseEvent(b"{partial}", id="2")]
    assert decoder.last_event_id == "2"


RESUMED = b"id: 2\nevent: e\ndata: b\ndata: c\n\n"


@pytest.mark.parametrize("received", range(len(RESUMED)))
def test_a_stream_broken_mid_event_resumes_from_the_last_dispatched_event(received: int) -> None:
    # The connection drops after `received` bytes of the second event: its blank line never
    # came, so Last-Event-ID must name event 1 and the server must send event 2 again.
    decoder = SseDecoder()
    events = decoder.feed(b"id: 1\ndata: a\n\n") + decoder.feed(RESUMED[:received])
    assert events == [SseEvent(b"a", id="1")]
    assert decoder.last_event_id == "1"


def test_a_stream_broken_just_after_the_blank_line_resumes_after_that_event() -> None:
    decoder = SseDecoder()
    events = decoder.feed(b"id: 1\ndata: a\n\n") + decoder.feed(RESUMED)
    assert events == [SseEvent(b"a", id="1"), SseEvent(b"b\nc", "e", "2")]
    assert decoder.last_event_id == "2"


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_each_line_ending_is_understood(ending: bytes) -> None:
    stream = ending.join([b"event: e", b"id: 3", b"data: a", b"data: b", b"", b"data: c", b"", b""])
    assert decode(stream) == [SseEvent(b"a\nb", "e", "3"), SseEvent(b"c", "message", "3")]


def test_mixed_line_endings_in_one_stream() -> None:
    assert decode(b"data: a\r\rdata: b\r\n\r\ndata: c\n\n") == [
        SseEvent(b"a"),
        SseEvent(b"b"),
        SseEvent(b"c"),
    ]


def test_a_crlf_split_across_two_chunks_is_one_line_ending() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\n\n") == [SseEvent(b"a\nb")]


def test_a_cr_at_a_chunk_end_followed_by_another_cr_is_two_line_endings() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\rdata: b\r\r") == [SseEvent(b"a"), SseEvent(b"b")]


def test_a_leading_utf8_bom_is_skipped() -> None:
    assert decode(BOM + b"data: x\n\n") == [SseEvent(b"x")]


def test_only_one_leading_bom_is_skipped() -> None:
    # A second BOM is part of the first line, which is then an unknown field.
    assert decode(BOM + BOM + b"data: x\n\ndata: y\n\n") == [SseEvent(b"y")]


def test_a_bom_later_in_the_stream_is_not_skipped() -> None:
    assert decode(b"data: a\n\n", BOM + b"data: b\n\n") == [SseEvent(b"a")]


def test_an_empty_first_chunk_does_not_use_up_the_bom_check() -> None:
    assert decode(b"", BOM + b"data: x\n\n") == [SseEvent(b"x")]


def test_non_utf8_event_names_and_ids_are_replaced_not_fatal() -> None:
    events = decode(b"event: a\xffb\nid: \xfe\ndata: x\n\n")
    assert events == [SseEvent(b"x", "a\ufffdb", "\ufffd")]


def test_data_bytes_are_handed_through_untouched() -> None:
    payload = '{"text":"世界 \\u00e9","n":1}'.encode()
    assert decode(b"data: " + payload + b"\n\n") == [SseEvent(payload)]


def test_an_event_within_the_limit_passes() -> None:
    assert decode(b"data: " + b"x" * 50 + b"\n\n", max_event_bytes=100) == [SseEvent(b"x" * 50)]


def test_an_event_over_the_limit_in_one_chunk_becomes_one_marker_naming_the_limit() -> None:
    assert decode(b"data: " + b"x" * 200 + b"\n\n", max_event_bytes=100) == [OversizedEvent(100)]
    assert decode(b"data: " + b"x" * 5000 + b"\n\n", max_event_bytes=1234) == [OversizedEvent(1234)]


def test_complete_events_before_and_after_an_oversized_one_in_one_chunk_survive() -> None:
    before = b'id: 1\ndata: {"id":1}\n\n'
    oversized = b"data: " + b"x" * 500 + b"\n\n"
    after = b'id: 3\ndata: {"id":3}\n\n'
    decoder = SseDecoder(max_event_bytes=100)
    assert decoder.feed(before + oversized + after) == [
        SseEvent(b'{"id":1}', id="1"),
        OversizedEvent(100),
        SseEvent(b'{"id":3}', id="3"),
    ]
    assert decoder.last_event_id == "3"


def test_events_complete_before_an_oversized_one_in_the_same_chunk_are_not_lost() -> None:
    decoder = SseDecoder(max_event_bytes=100)
    assert decoder.feed(b'data: {"id":1}\n\ndata: ' + b"x" * 500) == [
        SseEvent(b'{"id":1}'),
        OversizedEvent(100),
    ]
    assert decoder.feed(b"x" * 500) == []
    assert decoder.feed(b'\n\ndata: {"id":2}\n\n') == [SseEvent(b'{"id":2}')]


def test_oversized_events_in_a_row_get_one_marker_each_in_order() -> None:
    big = b"data: " + b"x" * 300 + b"\n\n"
    assert decode(big + big + b"data: ok\n\n" + big, max_event_bytes=100) == [
        OversizedEvent(100),
        OversizedEvent(100),
        SseEvent(b"ok"),
        OversizedEvent(100),
    ]


def test_the_name_of_an_oversized_event_does_not_leak_into_the_next() -> None:
    stream = b"event: big\ndata: " + b"x" * 300 + b"\n\ndata: ok\n\n"
    assert decode(stream, max_event_bytes=100) == [OversizedEvent(100), SseEvent(b"ok")]


def test_an_endless_data_line_is_reported_before_much_more_than_the_limit_arrives() -> None:
    decoder = SseDecoder(max_event_bytes=100)
    assert decoder.feed(b"data: ") == []
    fed = 0
    out: Decoded = []
    for _ in range(1000):
        out = decoder.feed(b"x" * 10)
        if out:
            break
        fed += 10
    else:
        pytest.fail("10 000 bytes of one data line were accepted under a 100-byte limit")
    assert out == [OversizedEvent(100)]
    assert fed <= 100
    # The rest of the line is dropped without another marker, and the stream carries on.
    assert [decoder.feed(b"x" * 10) for _ in range(1000)] == [[]] * 1000
    assert decoder.feed(b"\n\ndata: next\n\n") == [SseEvent(b"next")]


@pytest.mark.parametrize("field", [b"data: ", b": ", b"id: "])
def test_an_oversized_line_spread_over_many_chunks_is_not_kept_in_memory(field: bytes) -> None:
    limit = 1024 * 1024
    chunk = b"m" * (64 * 1024)
    fed = 32 * 1024 * 1024
    decoder = SseDecoder(max_event_bytes=limit)
    out = decoder.feed(field)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for _ in range(fed // len(chunk)):
            out += decoder.feed(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * limit, f"peak {peak} bytes while {fed} bytes of one line were fed"
    assert out == [OversizedEvent(limit)]
    assert decoder.feed(b"\n\ndata: next\n\n") == [SseEvent(b"next")]


def test_an_event_of_many_lines_over_many_chunks_becomes_one_marker() -> None:
    decoder = SseDecoder(max_event_bytes=100)
    assert decoder.feed(b"data: " + b"a" * 40 + b"\n") == []
    assert decoder.feed(b"data: " + b"b" * 40 + b"\n") == []
    assert decoder.feed(b"data: " + b"c" * 40 + b"\n") == [OversizedEvent(100)]
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"data: next\n\n") == [SseEvent(b"next")]


def test_the_limit_applies_per_event_not_per_stream() -> None:
    event = b"data: " + b"x" * 60 + b"\n\n"
    assert decode(event, event, event, max_event_bytes=100) == [SseEvent(b"x" * 60)] * 3


def test_an_event_of_many_lines_is_bounded_alike_in_one_chunk_and_byte_by_byte() -> None:
    stream = b"".join(b"data: " + bytes([c]) * 40 + b"\n" for c in b"abcde") + b"\n"
    whole = decode(stream, max_event_bytes=100)
    assert whole[:1] == [OversizedEvent(100)]
    assert decode(*(stream[i : i + 1] for i in range(len(stream))), max_event_bytes=100) == whole
    assert decode(*stream.splitlines(keepends=True), max_event_bytes=100) == whole


def test_an_id_line_over_the_limit_is_not_taken() -> None:
    decoder = SseDecoder(max_event_bytes=100)
    stream = b"id: 1\ndata: a\n\nid: " + b"9" * 300 + b"\n\ndata: b\n\n"
    assert decoder.feed(stream) == [
        SseEvent(b"a", id="1"),
        OversizedEvent(100),
        SseEvent(b"b", id="1"),
    ]
    assert decoder.last_event_id == "1"


def test_the_lines_after_the_overflow_are_dropped_up_to_the_blank_line() -> None:
    stream = b"".join(b"data: " + bytes([c]) * 40 + b"\n" for c in b"abcde") + b"\n"
    assert decode(stream + b"data: next\n\n", max_event_bytes=100) == [
        OversizedEvent(100),
        SseEvent(b"next"),
    ]


def test_an_event_with_several_overlong_lines_gets_exactly_one_marker() -> None:
    stream = (b"data: " + b"x" * 300 + b"\n") * 3 + b"\ndata: next\n\n"
    assert decode(stream, max_event_bytes=100) == [OversizedEvent(100), SseEvent(b"next")]


def test_an_id_after_the_overflow_in_an_oversized_event_is_ignored() -> None:
    decoder = SseDecoder(max_event_bytes=100)
    stream = b"id: 1\ndata: a\n\ndata: " + b"x" * 300 + b"\nid: 2\n\n"
    assert decoder.feed(stream) == [SseEvent(b"a", id="1"), OversizedEvent(100)]
    assert decoder.last_event_id == "1"


def test_an_id_before_the_overflow_in_an_oversized_event_is_ignored() -> None:
    decoder = SseDecoder(max_event_bytes=100)
    stream = b"id: 1\ndata: a\n\nid: 2\ndata: " + b"x" * 300 + b"\n\n"
    assert decoder.feed(stream) == [SseEvent(b"a", id="1"), OversizedEvent(100)]
    assert decoder.last_event_id == "1"


def test_a_bom_split_across_chunks_is_still_skipped() -> None:
    assert decode(BOM[:1], BOM[1:] + b"data: x\n\n") == [SseEvent(b"x")]
    assert decode(BOM[:2], BOM[2:], b"data: x\n\n") == [SseEvent(b"x")]
    assert decode(BOM[:1], b"", BOM[1:2], b"", BOM[2:] + b"data: x\n\n") == [SseEvent(b"x")]


def test_bytes_that_only_begin_like_a_bom_are_kept_as_line_bytes() -> None:
    # Held back while they might be a BOM, they still count toward the first line: with them
    # it is 7 bytes, over the limit of 6; without them it would be 5.
    rest = b"XXXXX\n\ndata:y\n\n"
    expected = [OversizedEvent(6), SseEvent(b"y")]
    assert decode(BOM[:2] + rest, max_event_bytes=6) == expected
    assert decode(BOM[:1], BOM[1:2], rest, max_event_bytes=6) == expected
    assert decode(BOM[:2], rest, max_event_bytes=6) == expected


def test_an_empty_chunk_inside_a_crlf_is_harmless() -> None:
    assert decode(b"data: a\r", b"", b"\ndata: b\n\n") == [SseEvent(b"a\nb")]
    assert decode(b"data: a\r", b"", b"", b"\ndata: b\r", b"", b"\n\r", b"", b"\n") == [
        SseEvent(b"a\nb")
    ]


VALUE = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\ufeff"), max_size=12).map(
    str.encode
)
FIELD_LINE = st.builds(
    lambda name, sep, value: name + sep + value,
    st.sampled_from([b"data", b"event", b"id", b"retry", b"dat", b"", b"x"]),
    st.sampled_from([b":", b": ", b""]),
    st.one_of(VALUE, st.integers(0, 10**6).map(lambda n: str(n).encode())),
)
LONG_LINE = st.builds(
    lambda name, n: name + b"L" * n,
    st.sampled_from([b"data: ", b"id: ", b": "]),
    st.integers(min_value=10, max_value=60),
)
LINES = st.lists(st.one_of(st.just(b""), FIELD_LINE, LONG_LINE), max_size=25)
ENDINGS = st.sampled_from([b"\n", b"\r\n", b"\r"])
# A small limit, at which many drawn events are oversized, and the default one.
LIMITS = (32, DEFAULT_MAX_EVENT_BYTES)


def run(chunks: list[bytes], limit: int) -> tuple[Decoded, str | None, int | None]:
    decoder = SseDecoder(max_event_bytes=limit)
    events: Decoded = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events, decoder.last_event_id, decoder.retry_ms


@settings(max_examples=200)
@given(LINES, st.data())
def test_any_chunking_yields_the_same_events(lines: list[bytes], data: st.DataObject) -> None:
    endings = data.draw(st.lists(ENDINGS, min_size=len(lines), max_size=len(lines)))
    bom = data.draw(st.sampled_from([b"", BOM]))
    stream = bom + b"".join(line + end for line, end in zip(lines, endings, strict=True))
    # Cuts fall anywhere, the BOM included; a repeated cut makes an empty chunk. Cutting twice
    # after every CR, or between every byte, reaches the boundaries random cuts rarely hit.
    every = list(range(len(stream) + 1))
    after_cr = [i + 1 for i in range(len(stream)) if stream[i] == 0x0D]
    cuts = data.draw(
        st.one_of(
            st.lists(st.sampled_from(every), max_size=30),
            st.just(after_cr + after_cr),
            st.just(every),
        )
    )
    bounds = [0, *sorted(cuts), len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    assert b"".join(chunks) == stream
    for limit in LIMITS:
        assert run(chunks, limit) == run([stream], limit)


@settings(max_examples=200)
@given(LINES, st.data())
def test_crlf_lf_and_cr_variants_of_a_stream_yield_the_same_events(
    lines: list[bytes], data: st.DataObject
) -> None:
    mixed = data.draw(st.lists(ENDINGS, min_size=len(lines), max_size=len(lines)))
    for i in range(1, len(lines)):
        # CR, then an empty line ended by LF, would be one CRLF: end that empty line with CRLF.
        if mixed[i - 1] == b"\r" and lines[i] == b"" and mixed[i] == b"\n":
            mixed[i] = b"\r\n"
    for limit in LIMITS:
        expected = run([b"".join(line + b"\n" for line in lines)], limit)
        for ending in (b"\r\n", b"\r"):
            assert run([b"".join(line + ending for line in lines)], limit) == expected
        mixed_stream = b"".join(line + end for line, end in zip(lines, mixed, strict=True))
        assert run([mixed_stream], limit) == expected


@pytest.mark.parametrize("received", range(1, len(RESUMED)))
def test_a_reconnected_decoder_drops_the_broken_half_and_keeps_id_and_retry(
    received: int,
) -> None:
    """The half-received event of the broken connection must not run into the first line of
    the resumed one (which sends that event again in full)."""
    decoder = SseDecoder()
    decoder.feed(b"retry: 250\nid: 1\ndata: a\n\n" + RESUMED[:received])
    resumed = decoder.reconnected()
    assert (resumed.last_event_id, resumed.retry_ms) == ("1", 250)
    assert resumed.feed(RESUMED) == [SseEvent(b"b\nc", "e", "2")]
    # An event without an id of its own keeps the last one, as on the first connection.
    assert resumed.feed(b"data: d\n\n") == [SseEvent(b"d", id="2")]
