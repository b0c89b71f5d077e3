"""JSON-RPC routing facts: client lines classified, upstream bodies split, error lines built."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mcp_oauth2_proxy.domain.jsonrpc import (
    INVALID_REQUEST,
    PARSE_ERROR,
    Batch,
    Invalid,
    Kind,
    Message,
    error_line,
    parse_client_line,
    parse_upstream_body,
)


def strict_json(raw: bytes) -> Any:
    """Parse as RFC 8259 JSON: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(raw, parse_constant=refuse)


def message(line: bytes) -> Message:
    parsed = parse_client_line(line)
    assert isinstance(parsed, Message), parsed
    return parsed


def invalid(line: bytes) -> tuple[Invalid, dict[str, Any]]:
    parsed = parse_client_line(line)
    assert isinstance(parsed, Invalid), parsed
    assert b"\n" not in parsed.reply
    reply = strict_json(parsed.reply)
    assert isinstance(reply, dict)
    assert reply["jsonrpc"] == "2.0"
    assert set(reply) == {"jsonrpc", "id", "error"}
    return parsed, reply


@pytest.mark.parametrize("request_id", [1, 0, -5, "abc", "", 1.5])
def test_a_request_is_classified_with_its_id_and_method(request_id: object) -> None:
    line = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/list"}).encode()
    parsed = message(line)
    assert parsed.kind is Kind.REQUEST
    assert parsed.id == request_id
    assert parsed.method == "tools/list"
    assert parsed.raw == line


def test_a_notification_has_a_method_and_no_id() -> None:
    parsed = message(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
    assert parsed.kind is Kind.NOTIFICATION
    assert parsed.id is None
    assert parsed.method == "notifications/initialized"


def test_a_result_response_is_classified_with_its_id() -> None:
    parsed = message(b'{"jsonrpc":"2.0","id":"s-1","result":{"roots":[]}}')
    assert parsed.kind is Kind.RESPONSE
    assert parsed.id == "s-1"
    assert parsed.method is None


def test_an_error_response_is_classified_with_its_id() -> None:
    parsed = message(b'{"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"no"}}')
    assert parsed.kind is Kind.RESPONSE
    assert parsed.id == 3


def test_an_error_response_with_a_null_id_is_a_response() -> None:
    parsed = message(b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}')
    assert parsed.kind is Kind.RESPONSE
    assert parsed.id is None


def test_params_are_exposed_and_default_to_empty() -> None:
    assert message(b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":1}}').params == {"a": 1}
    assert message(b'{"jsonrpc":"2.0","id":1,"method":"m"}').params == {}
    assert message(b'{"jsonrpc":"2.0","id":1,"method":"m","params":[1,2]}').params == {}


@pytest.mark.parametrize(
    "line",
    [
        b'{ "method" : "ping",\t"id" : 1 , "jsonrpc" : "2.0" }',
        b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"s":"\\u00e9\\u4e16","f":1.50}}',
        '{"jsonrpc":"2.0","id":1,"method":"x","params":{"s":"é 世界"}}'.encode(),
        b'{"jsonrpc":"2.0","method":"n","params":{"b":1,"a":2,"big":12345678901234567890}}',
        b'{"jsonrpc":"2.0","id":9,"result":{"z":[],"a":{}}}\r',
    ],
)
def test_raw_bytes_of_a_valid_message_are_kept_exactly(line: bytes) -> None:
    assert message(line).raw == line


@pytest.mark.parametrize(
    "line", [b"not json", b"{", b"", b"   ", b'{"jsonrpc":"2.0",}', b'{"a":"\xff"}']
)
def test_a_line_that_is_not_json_gets_a_parse_error_with_a_null_id(line: bytes) -> None:
    parsed, reply = invalid(line)
    assert reply["id"] is None
    assert reply["error"]["code"] == PARSE_ERROR == -32700
    assert reply["error"]["message"].startswith("Parse error")
    assert parsed.reason == "not JSON"


@pytest.mark.parametrize("line", [b"[]", b'[{"jsonrpc":"2.0","id":2}]', b'[1, {"x": 2}]'])
def test_an_empty_or_invalid_batch_is_an_invalid_request(line: bytes) -> None:
    parsed, reply = invalid(line)
    assert reply["id"] is None
    assert reply["error"]["code"] == INVALID_REQUEST == -32600
    assert "batch" in reply["error"]["message"]
    assert parsed.reason == "an invalid batch"


def test_a_batch_is_split_into_its_messages() -> None:
    parsed = parse_client_line(
        b'[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"n"}]'
    )
    assert isinstance(parsed, Batch)
    assert [(m.kind, m.id, m.method) for m in parsed.messages] == [
        (Kind.REQUEST, 1, "ping"),
        (Kind.NOTIFICATION, None, "n"),
    ]
    assert parsed.messages[0].raw == b'{"jsonrpc":"2.0","id":1,"method":"ping"}'


@pytest.mark.parametrize("line", [b'"text"', b"42", b"null", b"true", b"1.5"])
def test_a_json_value_that_is_not_an_object_is_an_invalid_request(line: bytes) -> None:
    parsed, reply = invalid(line)
    assert reply["id"] is None
    assert reply["error"]["code"] == INVALID_REQUEST
    assert parsed.reason == "not a JSON-RPC message"


@pytest.mark.parametrize(
    ("line", "echoed_id"),
    [
        (b'{"id":7,"method":"ping"}', 7),
        (b'{"jsonrpc":"1.0","id":"abc","method":"ping"}', "abc"),
        (b'{"jsonrpc":2.0,"id":8,"method":"ping"}', 8),
        (b'{"jsonrpc":"2.0","id":4}', 4),
        (b'{"jsonrpc":"2.0","id":5,"result":1,"error":{"code":1,"message":"m"}}', 5),
        (b'{"jsonrpc":"2.0","id":6,"method":5}', 6),
        (b'{"jsonrpc":"2.0","id":2.5,"method":null}', 2.5),
        (b'{"jsonrpc":"2.0","id":true,"method":"ping"}', None),
        (b'{"jsonrpc":"2.0","id":false,"result":{}}', None),
        (b'{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}', None),
        (b'{"jsonrpc":"2.0","id":[1],"method":"ping"}', None),
        (b'{"jsonrpc":"2.0","id":null,"method":"ping"}', None),
        (b'{"jsonrpc":"2.0","result":{}}', None),
        (b"{}", None),
    ],
)
def test_an_object_that_is_not_json_rpc_is_refused_echoing_a_valid_id(
    line: bytes, echoed_id: object
) -> None:
    parsed, reply = invalid(line)
    assert reply["error"]["code"] == INVALID_REQUEST
    assert reply["id"] == echoed_id
    assert type(reply["id"]) is type(echoed_id)
    assert parsed.reason == "not a JSON-RPC message"


NON_JSON_CONSTANTS = [
    b'{"jsonrpc":"1.0","id":Infinity,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":NaN,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":-Infinity,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"x":NaN}}',
    b'{"jsonrpc":"2.0","id":2,"result":{"v":[1,Infinity]}}',
    b'{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":-Infinity}}',
]


@pytest.mark.parametrize("line", NON_JSON_CONSTANTS)
def test_non_json_number_constants_are_a_parse_error_never_echoed(line: bytes) -> None:
    parsed, reply = invalid(line)
    assert reply["id"] is None
    assert reply["error"]["code"] == PARSE_ERROR
    assert reply["error"]["message"].startswith("Parse error")
    assert parsed.reason == "not JSON"


@pytest.mark.parametrize("line", [b"NaN", b"Infinity", b"-Infinity", b"[NaN]"])
def test_a_bare_non_json_constant_is_a_parse_error(line: bytes) -> None:
    parsed, reply = invalid(line)
    assert reply["error"]["code"] == PARSE_ERROR
    assert parsed.reason == "not JSON"


def test_the_constant_names_inside_strings_are_plain_text() -> None:
    line = b'{"jsonrpc":"2.0","id":"NaN","method":"m","params":{"s":"Infinity"}}'
    assert message(line).id == "NaN"
    assert message(line).params == {"s": "Infinity"}
    (parsed,) = parse_upstream_body(b'{"jsonrpc":"2.0","id":1,"result":{"v":"-Infinity"}}')
    assert parsed.document["result"] == {"v": "-Infinity"}


def test_an_upstream_compact_message_keeps_its_bytes() -> None:
    body = b'{"jsonrpc":"2.0","id":1,"result":{"b":"\\u00e9","a":1.50,"s":"x y"}}'
    (parsed,) = parse_upstream_body(body)
    assert parsed.raw == body
    assert parsed.kind is Kind.RESPONSE
    assert parsed.id == 1


def test_an_upstream_message_with_surrounding_whitespace_is_trimmed_not_reencoded() -> None:
    body = b'  {"jsonrpc": "2.0", "method": "notifications/progress"}\r\n'
    (parsed,) = parse_upstream_body(body)
    assert parsed.raw == body.strip()
    assert parsed.kind is Kind.NOTIFICATION


def test_pretty_printed_upstream_json_comes_out_as_one_line_with_the_same_content() -> None:
    document = {
        "jsonrpc": "2.0",
        "id": "r-1",
        "result": {"content": [{"type": "text", "text": "a\nb 世界"}], "isError": False},
    }
    body = json.dumps(document, indent=2, ensure_ascii=False).encode()
    assert b"\n" in body
    (parsed,) = parse_upstream_body(body)
    assert b"\n" not in parsed.raw
    assert b"\r" not in parsed.raw
    assert strict_json(parsed.raw) == document
    assert "世界".encode() in parsed.raw
    assert parsed.kind is Kind.RESPONSE
    assert parsed.id == "r-1"


def test_escaped_non_ascii_in_pretty_printed_json_keeps_its_content() -> None:
    document = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": "é世"}}
    body = json.dumps(document, indent=1).encode()  # ensure_ascii: \u escapes
    (parsed,) = parse_upstream_body(body)
    assert strict_json(parsed.raw) == document
    assert b"\n" not in parsed.raw


@pytest.mark.parametrize("indent", [None, 2])
def test_an_upstream_array_gives_one_line_per_message(indent: int | None) -> None:
    documents: list[dict[str, Any]] = [
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}},
        {"jsonrpc": "2.0", "id": 3, "method": "sampling/createMessage", "params": {}},
        {"jsonrpc": "2.0", "id": 2, "result": {"text": "fin"}},
    ]
    messages = parse_upstream_body(json.dumps(documents, indent=indent).encode())
    assert [m.kind for m in messages] == [Kind.NOTIFICATION, Kind.REQUEST, Kind.RESPONSE]
    assert [m.id for m in messages] == [None, 3, 2]
    assert [strict_json(m.raw) for m in messages] == documents
    assert all(b"\n" not in m.raw for m in messages)


@pytest.mark.parametrize(
    "body",
    [
        b'{"hello":"world"}',
        b'{"jsonrpc":"1.0","id":1,"result":1}',
        b'[{"jsonrpc":"2.0","id":1,"result":1},5]',
        b"42",
        b"not json",
        b"",
        *NON_JSON_CONSTANTS,
        b'[{"jsonrpc":"2.0","id":1,"result":1},{"jsonrpc":"2.0","id":NaN,"result":1}]',
    ],
)
def test_upstream_content_that_is_not_json_rpc_raises_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the documented contract is ValueError
        parse_upstream_body(body)


@pytest.mark.parametrize(
    ("request_id", "code", "text", "data"),
    [
        (None, -32700, "Parse error: x", None),
        (7, -32600, "Invalid Request", None),
        ("req-1", -32001, "upstream answered HTTP 500", {"status": 500, "body": "oops"}),
        (2.5, -32000, "upstream timed out after 3000 ms", {}),
    ],
)
def test_error_line_is_one_compact_json_line(
    request_id: str | int | float | None, code: int, text: str, data: dict[str, Any] | None
) -> None:
    line = error_line(request_id, code, text, data)
    assert b"\n" not in line
    assert b'": ' not in line
    assert b", " not in line.replace(text.encode(), b"")
    document = strict_json(line)
    expected_error: dict[str, Any] = {"code": code, "message": text}
    if data is not None:
        expected_error["data"] = data
    assert document == {"jsonrpc": "2.0", "id": request_id, "error": expected_error}


def test_error_line_keeps_a_newline_in_the_message_on_one_line() -> None:
    line = error_line(1, -32000, "first\nsecond\r\nthird")
    assert b"\n" not in line
    assert b"\r" not in line
    assert strict_json(line)["error"]["message"] == "first\nsecond\r\nthird"


def test_error_line_writes_non_ascii_as_utf8_not_escapes() -> None:
    line = error_line("é", -32000, "échec: 世界", {"détail": "ß"})
    assert "échec: 世界".encode() in line
    assert b"\\u" not in line
    assert strict_json(line)["error"] == {
        "code": -32000,
        "message": "échec: 世界",
        "data": {"détail": "ß"},
    }


def test_non_ascii_client_content_is_preserved_in_an_echoed_id() -> None:
    _, reply = invalid('{"jsonrpc":"2.0","id":"идентификатор","result":1,"error":{}}'.encode())
    assert reply["id"] == "идентификатор"
