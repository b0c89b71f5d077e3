"""Newline framing of the stdio channel: lines across chunks, CRLF, blanks, and the size limit."""

from __future__ import annotations

import itertools
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_oauth2_proxy.domain.line_framing import LineSplitter, Oversized

PREFIX_BYTES = 256


def feed_all(splitter: LineSplitter, chunks: list[bytes]) -> list[bytes | Oversized]:
    out: list[bytes | Oversized] = []
    for chunk in chunks:
        out += splitter.feed(chunk)
    return out + splitter.finish()


def test_a_complete_line_comes_out_without_its_newline() -> None:
    assert LineSplitter().feed(b'{"jsonrpc":"2.0","method":"ping","id":1}\n') == [
        b'{"jsonrpc":"2.0","method":"ping","id":1}'
    ]


def test_lines_are_assembled_across_chunks() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b'{"a":') == []
    assert splitter.feed(b'1}\n{"b"') == [b'{"a":1}']
    assert splitter.feed(b":2}") == []
    assert splitter.feed(b"\n") == [b'{"b":2}']
    assert splitter.finish() == []


def test_several_lines_in_one_chunk_come_out_in_order() -> None:
    assert LineSplitter().feed(b"one\ntwo\nthree\n") == [b"one", b"two", b"three"]


def test_crlf_endings_are_tolerated() -> None:
    assert LineSplitter().feed(b"one\r\ntwo\r\n") == [b"one", b"two"]


def test_crlf_split_across_chunks_is_one_ending() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"one\r") == []
    assert splitter.feed(b"\ntwo\r") == [b"one"]
    assert splitter.feed(b"\n") == [b"two"]


def test_a_carriage_return_inside_a_line_is_kept() -> None:
    assert LineSplitter().feed(b"a\rb\n") == [b"a\rb"]


def test_blank_and_whitespace_only_lines_are_skipped() -> None:
    assert LineSplitter().feed(b"\n\n  \n\r\none\n\t \r\n\ntwo\n") == [b"one", b"two"]


def test_a_last_line_without_newline_counts_at_finish() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"first\nlast") == [b"first"]
    assert splitter.finish() == [b"last"]


def test_finish_drops_a_trailing_carriage_return() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"last\r") == []
    assert splitter.finish() == [b"last"]


@pytest.mark.parametrize("tail", [b"", b"   ", b"\r", b" \t "])
def test_finish_with_nothing_or_only_blanks_pending_yields_nothing(tail: bytes) -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"line\n" + tail) == [b"line"]
    assert splitter.finish() == []


def test_a_line_just_at_the_limit_passes_in_one_chunk() -> None:
    line = b"x" * 10
    assert LineSplitter(max_line_bytes=10).feed(line + b"\n") == [line]


def test_a_line_just_at_the_limit_passes_across_chunks() -> None:
    line = bytes(range(65, 65 + 26)) * 12  # 312 bytes
    splitter = LineSplitter(max_line_bytes=len(line))
    chunks = [line[i : i + 7] for i in range(0, len(line), 7)]
    assert feed_all(splitter, [*chunks, b"\n"]) == [line]


def test_a_line_just_at_the_limit_passes_at_finish() -> None:
    splitter = LineSplitter(max_line_bytes=10)
    assert splitter.feed(b"x" * 10) == []
    assert splitter.finish() == [b"x" * 10]


def test_an_oversized_line_in_one_chunk_becomes_one_marker_and_later_lines_survive() -> None:
    big = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"x":"' + b"y" * 1000 + b'"}}'
    splitter = LineSplitter(max_line_bytes=300)
    out = splitter.feed(big + b"\nnext\n")
    assert out == [Oversized(big[:PREFIX_BYTES]), b"next"]
    assert splitter.finish() == []


def test_one_byte_over_the_limit_is_oversized() -> None:
    splitter = LineSplitter(max_line_bytes=10)
    assert splitter.feed(b"x" * 11 + b"\nok\n") == [Oversized(b"x" * 11), b"ok"]


def test_an_oversized_line_over_many_chunks_becomes_one_marker_and_later_lines_survive() -> None:
    big = bytes(b for b in range(256) if b != 0x0A) * 8  # a recognisable prefix, no newline
    splitter = LineSplitter(max_line_bytes=300)
    outputs = [splitter.feed(big[i : i + 100]) for i in range(0, len(big), 100)]
    assert all(out == [] for out in outputs)
    assert splitter.feed(b"\nnext") == [Oversized(big[:PREFIX_BYTES])]
    assert splitter.feed(b"\nafter\n") == [b"next", b"after"]
    assert splitter.finish() == []


def test_an_oversized_line_whose_newline_starts_a_later_chunk() -> None:
    splitter = LineSplitter(max_line_bytes=300)
    assert splitter.feed(b"z" * 400) == []
    assert splitter.feed(b"z" * 400) == []
    assert splitter.feed(b"\nnext\n") == [Oversized(b"z" * PREFIX_BYTES), b"next"]


def test_an_oversized_last_line_without_newline_is_reported_at_finish() -> None:
    splitter = LineSplitter(max_line_bytes=300)
    assert splitter.feed(b"ok\n" + b"q" * 500) == [b"ok"]
    assert splitter.feed(b"q" * 500) == []
    assert splitter.finish() == [Oversized(b"q" * PREFIX_BYTES)]
    assert splitter.finish() == []


def test_an_oversized_line_spread_over_many_chunks_is_not_kept_in_memory() -> None:
    limit = 1024 * 1024
    chunk = b"m" * (64 * 1024)
    fed = 32 * 1024 * 1024
    splitter = LineSplitter(max_line_bytes=limit)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for _ in range(fed // len(chunk)):
            assert splitter.feed(chunk) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * limit, f"peak {peak} bytes while {fed} bytes of one line were fed"
    assert splitter.feed(b"\nnext\n") == [Oversized(b"m" * PREFIX_BYTES), b"next"]


def test_a_line_just_at_the_limit_passes_with_a_crlf_ending() -> None:
    assert LineSplitter(max_line_bytes=10).feed(b"x" * 10 + b"\r\n") == [b"x" * 10]


def test_the_cr_of_a_crlf_does_not_count_but_other_bytes_still_do() -> None:
    splitter = LineSplitter(max_line_bytes=10)
    assert splitter.feed(b"x" * 11 + b"\r\n" + b"x" * 9 + b"\r\r\n") == [
        Oversized(b"x" * 11),
        b"x" * 9 + b"\r",
    ]


def test_a_line_just_at_the_limit_spanning_chunks_passes_with_a_crlf_ending() -> None:
    splitter = LineSplitter(max_line_bytes=10)
    assert splitter.feed(b"x" * 9) == []
    assert splitter.feed(b"x\r\n") == [b"x" * 10]


@pytest.mark.parametrize(
    "chunks",
    [
        [b"x" * 10 + b"\r", b"\n"],
        [b"x" * 9, b"x\r", b"\n"],
        [b"x" * 10 + b"\r"],
    ],
    ids=["crlf-split", "crlf-split-after-pending", "cr-at-finish"],
)
def test_a_line_just_at_the_limit_passes_whatever_chunk_its_cr_ends(chunks: list[bytes]) -> None:
    assert feed_all(LineSplitter(max_line_bytes=10), chunks) == [b"x" * 10]


PIECES = st.one_of(
    st.sampled_from([b"\n", b"\r\n", b"\r", b" ", b"\t", "é世".encode()]),
    st.binary(max_size=40),
    st.integers(min_value=200, max_value=700).map(lambda n: b"L" * n),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    return [data[a:b] for a, b in itertools.pairwise([0, *sorted(cuts), len(data)])]


@settings(max_examples=200)
@given(st.lists(PIECES, max_size=30), st.data())
def test_any_chunking_yields_the_same_lines_as_the_whole_stream(
    pieces: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(pieces)
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=20))
    chunks = split(stream, cuts)  # duplicate cuts give empty chunks, which must be harmless
    for limit in (PREFIX_BYTES, 16 * 1024 * 1024):
        whole = feed_all(LineSplitter(max_line_bytes=limit), [stream])
        assert feed_all(LineSplitter(max_line_bytes=limit), chunks) == whole
