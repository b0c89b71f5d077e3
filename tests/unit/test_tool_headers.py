"""x-mcp-header (2026-07-28, SEP-2243): which annotations are valid, and the Mcp-Param-*
headers a call's arguments make."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_oauth2_proxy.domain.tool_headers import (
    HeaderParam,
    InvalidAnnotation,
    header_params,
    param_headers,
)


def tool(**properties: dict[str, Any]) -> dict[str, Any]:
    return {"name": "t", "inputSchema": {"type": "object", "properties": properties}}


def test_valid_annotations_are_collected_with_their_paths() -> None:
    nested = {"type": "object", "properties": {"zone": {"type": "string", "x-mcp-header": "Zone"}}}
    params = header_params(
        tool(
            region={"type": "string", "x-mcp-header": "Region"},
            priority={"type": "integer", "x-mcp-header": "Priority"},
            place=nested,
            query={"type": "string"},
        )
    )
    assert params == (
        HeaderParam(("region",), "Region"),
        HeaderParam(("priority",), "Priority"),
        HeaderParam(("place", "zone"), "Zone"),
    )


@pytest.mark.parametrize(
    "properties",
    [
        {"value": {"type": "string", "x-mcp-header": ""}},
        {"data": {"type": "object", "x-mcp-header": "Data"}},
        {"items": {"type": "array", "items": {"type": "string"}, "x-mcp-header": "Items"}},
        {"nil": {"type": "null", "x-mcp-header": "Nil"}},
        {"score": {"type": "number", "x-mcp-header": "Score"}},
        {"maybe": {"type": ["string", "null"], "x-mcp-header": "Maybe"}},
        {"untyped": {"x-mcp-header": "Untyped"}},
        {
            "a": {"type": "string", "x-mcp-header": "Region"},
            "b": {"type": "string", "x-mcp-header": "Region"},
        },
        {
            "a": {"type": "string", "x-mcp-header": "MyField"},
            "b": {"type": "string", "x-mcp-header": "myfield"},
        },
        {"value": {"type": "string", "x-mcp-header": "My Region"}},
        {"value": {"type": "string", "x-mcp-header": "Region:Primary"}},
        {"value": {"type": "string", "x-mcp-header": "Région"}},
        {"value": {"type": "string", "x-mcp-header": "Region\t1"}},
        {"value": {"type": "string", "x-mcp-header": 7}},
    ],
)
def test_invalid_annotations_are_refused(properties: dict[str, dict[str, Any]]) -> None:
    with pytest.raises(InvalidAnnotation):
        header_params(tool(**properties))


def test_a_tool_without_schema_has_no_params() -> None:
    assert header_params({"name": "bare"}) == ()


PARAMS = (
    HeaderParam(("region",), "Region"),
    HeaderParam(("priority",), "Priority"),
    HeaderParam(("verbose",), "Verbose"),
    HeaderParam(("empty",), "EmptyVal"),
    HeaderParam(("name",), "NonAscii"),
    HeaderParam(("pad",), "Whitespace"),
    HeaderParam(("place", "zone"), "Zone"),
)


def test_values_are_encoded_as_the_spec_says() -> None:
    arguments = {
        "region": "us-west1",
        "priority": 42,
        "verbose": False,
        "empty": "",
        "name": "Hello, 世界",
        "pad": " padded ",
        "place": {"zone": "b"},
        "unrelated": 1.5,
    }
    assert param_headers(PARAMS, arguments) == {
        "Mcp-Param-Region": "us-west1",
        "Mcp-Param-Priority": "42",
        "Mcp-Param-Verbose": "false",
        "Mcp-Param-EmptyVal": "",
        "Mcp-Param-NonAscii": "=?base64?SGVsbG8sIOS4lueVjA==?=",
        "Mcp-Param-Whitespace": "=?base64?IHBhZGRlZCA=?=",
        "Mcp-Param-Zone": "b",
    }


def test_absent_and_null_arguments_send_no_header() -> None:
    assert param_headers(PARAMS, {"region": None, "verbose": True}) == {"Mcp-Param-Verbose": "true"}
    assert param_headers(PARAMS, "not an object") == {}
