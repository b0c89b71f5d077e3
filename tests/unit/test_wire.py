"""Streamable-HTTP headers per MCP revision: the 2025 session wire and the 2026-07-28 wire."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_oauth2_proxy.domain.jsonrpc import Message, parse_client_line
from mcp_oauth2_proxy.domain.wire import (
    ACCEPT_BOTH,
    EVENT_STREAM,
    PROTOCOL_VERSION_META,
    WireState,
    header_value,
    modern_version,
)

MODERN = "2026-07-28"
JSON_POST = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def message(document: dict[str, Any]) -> Message:
    parsed = parse_client_line(json.dumps(document).encode())
    assert isinstance(parsed, Message), parsed
    return parsed


def request(method: str, params: dict[str, Any] | None = None, request_id: int = 1) -> Message:
    document: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        document["params"] = params
    return message(document)


def modern(method: str, version: str = MODERN, **params: Any) -> Message:
    meta = {PROTOCOL_VERSION_META: version, "io.modelcontextprotocol/clientCapabilities": {}}
    return request(method, {**params, "_meta": meta})


INITIALIZE = request(
    "initialize",
    {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "c", "version": "0"},
    },
)


def learned(configured_version: str | None = None) -> WireState:
    state = WireState(configured_version=configured_version)
    state.learn({"protocolVersion": "2025-06-18", "capabilities": {}}, "sess-1")
    return state


def test_the_accept_and_content_type_values() -> None:
    assert ACCEPT_BOTH == "application/json, text/event-stream"
    assert EVENT_STREAM == "text/event-stream"
    headers = WireState().post_headers(request("tools/list"))
    assert headers["Accept"] == ACCEPT_BOTH
    assert headers["Content-Type"] == "application/json"


def test_initialize_carries_neither_version_nor_session() -> None:
    assert WireState().post_headers(INITIALIZE) == JSON_POST


def test_initialize_carries_no_version_even_when_one_is_configured() -> None:
    assert WireState(configured_version="2025-06-18").post_headers(INITIALIZE) == JSON_POST


def test_before_the_handshake_other_messages_carry_no_version_unless_configured() -> None:
    assert WireState().post_headers(request("tools/list")) == JSON_POST
    assert WireState(configured_version="2025-03-26").post_headers(request("tools/list")) == {
        **JSON_POST,
        "MCP-Protocol-Version": "2025-03-26",
    }


def test_after_learn_requests_carry_the_session_and_negotiated_version() -> None:
    state = learned()
    assert state.session_id == "sess-1"
    assert state.negotiated_version == "2025-06-18"
    assert state.post_headers(request("tools/list", request_id=2)) == {
        **JSON_POST,
        "Mcp-Session-Id": "sess-1",
        "MCP-Protocol-Version": "2025-06-18",
    }


@pytest.mark.parametrize(
    "later",
    [
        message({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        message(
            {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 2}}
        ),
        message({"jsonrpc": "2.0", "id": "s-1", "result": {"roots": []}}),
        request("tools/call", {"name": "echo", "arguments": {}}),
    ],
)
def test_after_learn_notifications_and_responses_carry_them_too(later: Message) -> None:
    headers = learned().post_headers(later)
    assert headers["Mcp-Session-Id"] == "sess-1"
    assert headers["MCP-Protocol-Version"] == "2025-06-18"
    assert "Mcp-Method" not in headers
    assert "Mcp-Name" not in headers


def test_a_configured_version_overrides_the_negotiated_one() -> None:
    state = learned(configured_version="2025-03-26")
    assert state.version == "2025-03-26"
    assert state.post_headers(request("tools/list"))["MCP-Protocol-Version"] == "2025-03-26"


def test_learn_without_a_session_id_still_takes_the_version() -> None:
    state = WireState()
    state.learn({"protocolVersion": "2025-11-25"}, None)
    assert state.post_headers(request("ping")) == {
        **JSON_POST,
        "MCP-Protocol-Version": "2025-11-25",
    }


@pytest.mark.parametrize("bad_version", [None, 20250618, ["2025-06-18"]])
def test_learn_ignores_a_protocol_version_that_is_not_a_string(bad_version: object) -> None:
    state = WireState()
    state.learn({"protocolVersion": bad_version}, "s")
    assert state.negotiated_version is None
    assert "MCP-Protocol-Version" not in state.post_headers(request("ping"))


def test_a_repeated_initialize_carries_no_stale_session_id() -> None:
    # Spec 2025-11-25 transports, Session Management 4: after a 404 the client starts "a new
    # session by sending a new InitializeRequest without a session ID attached".
    assert learned().post_headers(INITIALIZE) == JSON_POST


@pytest.mark.parametrize("configured_version", [None, "2025-03-26"])
def test_a_repeated_initialize_carries_no_version_even_after_learn(
    configured_version: str | None,
) -> None:
    state = learned(configured_version=configured_version)
    assert state.version is not None
    headers = state.post_headers(INITIALIZE)
    assert "Mcp-Session-Id" not in headers
    assert "MCP-Protocol-Version" not in headers
    assert headers == JSON_POST


def test_a_repeated_initialize_leaves_the_session_to_other_messages() -> None:
    state = learned()
    assert state.post_headers(INITIALIZE) == JSON_POST
    assert state.post_headers(request("tools/list", request_id=2)) == {
        **JSON_POST,
        "Mcp-Session-Id": "sess-1",
        "MCP-Protocol-Version": "2025-06-18",
    }
    state.learn({"protocolVersion": "2025-11-25"}, "sess-2")
    assert state.post_headers(INITIALIZE) == JSON_POST
    assert state.post_headers(request("tools/list", request_id=3)) == {
        **JSON_POST,
        "Mcp-Session-Id": "sess-2",
        "MCP-Protocol-Version": "2025-11-25",
    }


def test_modern_version_is_read_from_meta() -> None:
    assert modern_version(modern("tools/list")) == MODERN
    assert modern_version(request("tools/list")) is None
    assert modern_version(request("x", {"_meta": {PROTOCOL_VERSION_META: 20260728}})) is None
    assert modern_version(request("x", {"_meta": "2026-07-28"})) is None


def test_a_modern_request_names_its_version_and_method() -> None:
    assert WireState().post_headers(modern("tools/list")) == {
        **JSON_POST,
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/list",
    }


def test_the_modern_version_header_equals_the_meta_version_whatever_was_negotiated() -> None:
    headers = learned(configured_version="2025-03-26").post_headers(
        modern("tools/list", version="2099-01-01")
    )
    assert headers["MCP-Protocol-Version"] == "2099-01-01"


@pytest.mark.parametrize(
    ("method", "params", "name"),
    [
        ("tools/call", {"name": "echo", "arguments": {"x": 1}}, "echo"),
        ("prompts/get", {"name": "greeting"}, "greeting"),
        ("resources/read", {"uri": "file:///tmp/a.txt", "name": "not-this"}, "file:///tmp/a.txt"),
    ],
)
def test_name_bearing_methods_carry_mcp_name(
    method: str, params: dict[str, Any], name: str
) -> None:
    assert WireState().post_headers(modern(method, **params)) == {
        **JSON_POST,
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": method,
        "Mcp-Name": name,
    }


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("tools/list", {"name": "x"}),
        ("prompts/list", {"name": "x"}),
        ("resources/subscribe", {"uri": "file:///a"}),
        ("resources/templates/list", {"uri": "file:///a"}),
        ("server/discover", {}),
        ("subscriptions/listen", {"notifications": {"toolsListChanged": True}}),
        ("tools/call", {"uri": "file:///a"}),
        ("tools/call", {"name": 5}),
        ("resources/read", {"name": "x"}),
    ],
)
def test_other_methods_and_missing_names_carry_no_mcp_name(
    method: str, params: dict[str, Any]
) -> None:
    headers = WireState().post_headers(modern(method, **params))
    assert headers["Mcp-Method"] == method
    assert "Mcp-Name" not in headers


def test_mcp_name_is_encoded_when_not_plain_ascii() -> None:
    headers = WireState().post_headers(modern("tools/call", name="Hello, 世界"))
    assert headers["Mcp-Name"] == "=?base64?SGVsbG8sIOS4lueVjA==?="


def test_the_modern_wire_never_sends_a_session_id() -> None:
    state = learned()
    headers = state.post_headers(modern("tools/call", name="echo"))
    assert "Mcp-Session-Id" not in headers
    assert headers["MCP-Protocol-Version"] == MODERN


def test_a_modern_notification_carries_its_version_and_method() -> None:
    meta = {PROTOCOL_VERSION_META: MODERN}
    note = message({"jsonrpc": "2.0", "method": "notifications/x", "params": {"_meta": meta}})
    assert WireState().post_headers(note) == {
        **JSON_POST,
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "notifications/x",
    }


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("Hello, 世界", "=?base64?SGVsbG8sIOS4lueVjA==?="),
        (" padded ", "=?base64?IHBhZGRlZCA=?="),
        ("=?base64?literal?=", "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="),
    ],
)
def test_header_value_matches_the_spec_examples(value: str, encoded: str) -> None:
    assert header_value(value) == encoded


@pytest.mark.parametrize(
    "value",
    ["echo", "get_weather", "file:///tmp/a%20b.txt", "a b", "!~#$%&'*+-.^_`|", "=?base64?x", "?="],
)
def test_plain_visible_ascii_is_kept_as_is(value: str) -> None:
    assert header_value(value) == value


@pytest.mark.parametrize(
    "value", ["a\tb", "line\nbreak", "cr\r", "\x00", "del\x7f", "\x1b[31m", " lead", "trail ", "\t"]
)
def test_control_characters_and_edge_whitespace_are_encoded(value: str) -> None:
    encoded = header_value(value)
    assert encoded.startswith("=?base64?")
    assert encoded.endswith("?=")
    assert base64.b64decode(encoded[9:-2], validate=True).decode("utf-8") == value


@given(st.text(max_size=40))
def test_header_value_is_always_header_safe_and_reversible(value: str) -> None:
    encoded = header_value(value)
    assert all(" " <= char <= "~" for char in encoded)
    assert encoded == encoded.strip()
    if encoded != value:
        assert encoded.startswith("=?base64?")
        assert encoded.endswith("?=")
        payload = encoded[len("=?base64?") : -len("?=")]
        assert base64.b64decode(payload, validate=True).decode("utf-8") == value


def test_stream_headers_before_any_session() -> None:
    assert WireState().stream_headers(None) == {"Accept": "text/event-stream"}


def test_stream_headers_without_last_event_id() -> None:
    assert learned().stream_headers(None) == {
        "Accept": "text/event-stream",
        "Mcp-Session-Id": "sess-1",
        "MCP-Protocol-Version": "2025-06-18",
    }


def test_stream_headers_with_last_event_id() -> None:
    assert learned(configured_version="2025-03-26").stream_headers("42") == {
        "Accept": "text/event-stream",
        "Mcp-Session-Id": "sess-1",
        "MCP-Protocol-Version": "2025-03-26",
        "Last-Event-ID": "42",
    }


def test_stream_headers_with_an_empty_last_event_id_send_none() -> None:
    # An empty id (an `id` field with no value) resets the last event id: nothing to resume.
    assert learned().stream_headers("") == {
        "Accept": "text/event-stream",
        "Mcp-Session-Id": "sess-1",
        "MCP-Protocol-Version": "2025-06-18",
    }
    assert "Last-Event-ID" not in WireState().stream_headers("")
