"""`x-mcp-header`: tool arguments mirrored into `Mcp-Param-*` headers (2026-07-28,
streamable HTTP §Custom Headers, SEP-2243).

A tool's input schema may mark a property with `x-mcp-header: "<Name>"`; a client calling it
then sends the argument's value as `Mcp-Param-<Name>` as well, so that gateways can route on it
without reading the body. The annotation is valid only as a non-empty RFC 9110 token, unique
within the tool regardless of case, on a string, integer or boolean property reached through
`properties`. A tool with an invalid annotation is not offered to the client at all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .wire import header_value

PARAM_HEADER_PREFIX = "Mcp-Param-"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PRIMITIVES = frozenset({"string", "integer", "boolean"})


@dataclass(frozen=True)
class HeaderParam:
    """One argument to mirror: where it sits in the arguments, and the header's name."""

    path: tuple[str, ...]
    name: str


class InvalidAnnotation(ValueError):
    """A tool's `x-mcp-header` annotation breaks the rules above."""


def header_params(tool: Mapping[str, Any]) -> tuple[HeaderParam, ...]:
    """The annotated arguments of one tool definition (from a tools/list result).

    Raises:
        InvalidAnnotation: the tool must not be offered.
    """
    found: list[HeaderParam] = []
    schema = tool.get("inputSchema")
    if isinstance(schema, Mapping):
        _collect(schema, (), found)
    seen: set[str] = set()
    for param in found:
        if param.name.lower() in seen:
            raise InvalidAnnotation(f"x-mcp-header {param.name!r} is used twice")
        seen.add(param.name.lower())
    return tuple(found)


def _collect(schema: Mapping[str, Any], path: tuple[str, ...], found: list[HeaderParam]) -> None:
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return
    for key, prop in properties.items():
        if not isinstance(prop, Mapping):
            continue
        here = (*path, str(key))
        if "x-mcp-header" in prop:
            name = prop["x-mcp-header"]
            if not isinstance(name, str) or not _TOKEN.fullmatch(name):
                raise InvalidAnnotation(f"x-mcp-header {name!r} on {'.'.join(here)} is not a token")
            kind = prop.get("type")
            if not isinstance(kind, str) or kind not in _PRIMITIVES:
                raise InvalidAnnotation(
                    f"x-mcp-header {name!r} is on a {kind!r} property; only "
                    "string, integer and boolean can be mirrored"
                )
            found.append(HeaderParam(here, name))
        _collect(prop, here, found)


def param_headers(params: tuple[HeaderParam, ...], arguments: object) -> dict[str, str]:
    """The `Mcp-Param-*` headers for one call's arguments; absent and null values send none."""
    headers: dict[str, str] = {}
    for param in params:
        value: object = arguments
        for key in param.path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        headers[f"{PARAM_HEADER_PREFIX}{param.name}"] = header_value(text)
    return headers
