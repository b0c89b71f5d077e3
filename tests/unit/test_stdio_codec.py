"""The stdio codec as a whole (the channel's framing and the JSON-RPC parse of each line):
however the client's bytes are split into reads, the same messages come out."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import os
import warnings
from typing import Any

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_oauth2_proxy.adapters.stdio import StdioChannel, _ThreadReceiveStream
from mcp_oauth2_proxy.domain.jsonrpc import Message, parse_client_line
from mcp_oauth2_proxy.domain.line_framing import Oversized

from ..fakes import MemoryByteReceive, MemoryByteSend

LIMIT = 2048
ids = st.one_of(st.integers(-(2**53), 2**53), st.text(max_size=8))
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
requests = st.builds(
    lambda i, m, p: {"jsonrpc": "2.0", "id": i, "method": m, "params": p},
    ids,
    st.sampled_from(["tools/call", "ping", "tools/list", "résumé/ünïcode"]),
    st.dictionaries(st.text(max_size=5), values, max_size=3),
)
notifications = st.builds(
    lambda m: {"jsonrpc": "2.0", "method": m}, st.sampled_from(["notifications/cancelled"])
)
documents = st.lists(st.one_of(requests, notifications), max_size=12)
endings = st.sampled_from([b"\n", b"\r\n"])


def read_all(chunks: list[bytes]) -> list[Message | str]:
    """Everything the channel yields for these reads, parsed as the bridge parses it."""

    async def run() -> list[Message | str]:
        send, receive = anyio.create_memory_object_stream[bytes](len(chunks) + 1)
        out_send, out_receive = anyio.create_memory_object_stream[bytes](1)
        async with send, receive, out_send, out_receive:
            for chunk in chunks:
                await send.send(chunk)
            await send.aclose()
            channel = StdioChannel(
                MemoryByteReceive(receive), MemoryByteSend(out_send), max_line_bytes=LIMIT
            )
            got: list[Message | str] = []
            async for line in channel.lines():
                if isinstance(line, Oversized):
                    got.append("oversized")
                    continue
                parsed = parse_client_line(line)
                assert isinstance(parsed, Message), parsed
                got.append(parsed)
            return got

    return anyio.run(run)


def key(message: Message | str) -> Any:
    if isinstance(message, str):
        return message
    return (message.kind, message.id, message.method, message.raw)


@settings(max_examples=150, deadline=None)
@given(documents, st.data())
def test_any_split_of_the_byte_stream_yields_the_same_messages(
    docs: list[dict[str, Any]], data: st.DataObject
) -> None:
    lines = [json.dumps(d, ensure_ascii=False).encode() for d in docs]
    line_endings = data.draw(st.lists(endings, min_size=len(lines), max_size=len(lines)))
    stream = b"".join(line + end for line, end in zip(lines, line_endings, strict=True))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=25)))
    bounds = [0, *cuts, len(stream)]
    # Repeated cuts make empty reads, which a pipe never gives: leave those out.
    chunks = [chunk for a, b in itertools.pairwise(bounds) if (chunk := stream[a:b])]

    whole = read_all([stream])
    split = read_all(chunks)

    assert [key(m) for m in split] == [key(m) for m in whole]
    expected = ["oversized" if len(line) > LIMIT else line for line in lines]
    assert [m if isinstance(m, str) else m.raw for m in whole] == expected


def test_input_read_after_the_event_loop_closed_is_dropped_without_a_warning() -> None:
    """The thread reading a file or console stdin can get a line after the proxy has stopped;
    it ends quietly, with no "coroutine was never awaited" on stderr."""
    loop = asyncio.new_event_loop()
    loop.close()
    read_end, write_end = os.pipe()
    os.write(write_end, b"late\n")
    os.close(write_end)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _ThreadReceiveStream(read_end)._pump(loop)
            gc.collect()
    finally:
        os.close(read_end)
    assert [str(warning.message) for warning in caught] == []
