"""JSON-RPC 2.0 messages as the bridge sees them: routing facts plus the bytes as they came.

The proxy parses each message once to learn what routing needs (kind, id, method) and then
forwards the original bytes, never a re-encoding, so whatever the client or server wrote
reaches the other side unchanged. Only upstream JSON that spans several lines is re-encoded,
because the stdio transport allows one message per line.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

JsonId = str | int | float | None

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INTERNAL_ERROR = -32603
UPSTREAM_TRANSPORT_ERROR = -32000
UPSTREAM_HTTP_ERROR = -32001


class Kind(enum.Enum):
    REQUEST = "request"
    NOTIFICATION = "notification"
    RESPONSE = "response"


@dataclass(frozen=True, slots=True)
class Message:
    """One JSON-RPC message: its routing facts, the parsed document and its one-line bytes."""

    kind: Kind
    raw: bytes
    document: Mapping[str, Any]
    id: JsonId = None
    method: str | None = None

    @property
    def params(self) -> Mapping[str, Any]:
        params = self.document.get("params")
        return params if isinstance(params, dict) else {}


@dataclass(frozen=True, slots=True)
class Invalid:
    """A line that is not a usable message, and the error line that answers it."""

    reply: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class Batch:
    """A JSON-RPC batch: allowed by MCP 2025-03-26 only (later revisions removed them)."""

    messages: tuple[Message, ...]


def parse_client_line(line: bytes) -> Message | Batch | Invalid:
    """Classify one stdio line from the client; an invalid one gets its JSON-RPC error."""
    try:
        value = _loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        return Invalid(error_line(None, PARSE_ERROR, f"Parse error: {exc}"), "not JSON")
    if isinstance(value, list):
        members = [classify(item, compact(item)) for item in value]
        valid = [member for member in members if member is not None]
        if not valid or len(valid) != len(members):
            return Invalid(
                error_line(
                    None,
                    INVALID_REQUEST,
                    "Invalid Request: an empty batch, or one "
                    "with an element that is not a JSON-RPC 2.0 message",
                ),
                "an invalid batch",
            )
        return Batch(tuple(valid))
    message = classify(value, line)
    if message is None:
        request_id = value.get("id") if isinstance(value, dict) else None
        return Invalid(
            error_line(
                _valid_id(request_id),
                INVALID_REQUEST,
                "Invalid Request: not a JSON-RPC 2.0 request, notification or response",
            ),
            "not a JSON-RPC message",
        )
    return message


def parse_upstream_body(body: bytes) -> list[Message]:
    """Split what the upstream sent (one message, or an array of them) into one-line messages.

    Raises:
        ValueError: the body is not JSON or holds something that is not a JSON-RPC message.
    """
    body = body.strip()
    value = _loads(body)
    single_line = b"\n" not in body and b"\r" not in body
    items = value if isinstance(value, list) else [value]
    messages: list[Message] = []
    for item in items:
        raw = body if single_line and item is value else compact(item)
        message = classify(item, raw)
        if message is None:
            raise ValueError("not a JSON-RPC 2.0 message")
        messages.append(message)
    return messages


def classify(value: object, raw: bytes) -> Message | None:
    """The Message for a parsed JSON value, or None when it is not JSON-RPC 2.0."""
    if not isinstance(value, dict) or value.get("jsonrpc") != "2.0":
        return None
    method = value.get("method")
    if isinstance(method, str):
        if "id" not in value:
            return Message(Kind.NOTIFICATION, raw, value, method=method)
        request_id = value["id"]
        if not _is_id(request_id) or request_id is None:
            return None
        return Message(Kind.REQUEST, raw, value, request_id, method)
    if "id" in value and ("result" in value) != ("error" in value) and _is_id(value["id"]):
        return Message(Kind.RESPONSE, raw, value, value["id"])
    return None


def error_line(
    request_id: JsonId, code: int, message: str, data: Mapping[str, Any] | None = None
) -> bytes:
    """A JSON-RPC error response as one line."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return compact({"jsonrpc": "2.0", "id": request_id, "error": error})


def _no_constant(name: str) -> object:
    """NaN and Infinity are not JSON (RFC 8259 §6), though Python's parser takes them."""
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _loads(data: bytes) -> Any:
    """`json.loads(data, parse_constant=_no_constant)`, which would build a new decoder for
    every message (two per call that goes through the proxy)."""
    return _DECODER.decode(data.decode(json.detect_encoding(data), "surrogatepass"))


def compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _is_id(value: object) -> bool:
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))


def _valid_id(value: object) -> JsonId:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return value
    return None


BATCH_REFUSED = error_line(
    None,
    INVALID_REQUEST,
    "Invalid Request: JSON-RPC batches are allowed only on MCP 2025-03-26 (removed from "
    "2025-06-18 on); send one message per line",
)
