"""The streamable-HTTP wire rules of each MCP revision, as headers for each message.

Two families are in use (docs/bridge.md):
- the 2025 wire (2025-03-26, 2025-06-18, 2025-11-25): an `initialize` handshake negotiates
  the version, the server may assign `Mcp-Session-Id`, and every later request carries the
  session id and `MCP-Protocol-Version` (from 2025-06-18; transports §Protocol Version Header);
- the 2026-07-28 wire: stateless; each request names its version in
  `params._meta["io.modelcontextprotocol/protocolVersion"]`, and the POST repeats it in
  `MCP-Protocol-Version` with `Mcp-Method` and, where the method names something, `Mcp-Name`
  (streamable-http §Request Metadata Headers).

The proxy learns which wire a message is on from the message itself, so one process can carry
whatever its client speaks.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .jsonrpc import Message

PROTOCOL_VERSION_META = "io.modelcontextprotocol/protocolVersion"
ACCEPT_BOTH = "application/json, text/event-stream"
EVENT_STREAM = "text/event-stream"
INITIALIZE = "initialize"
INITIALIZED = "notifications/initialized"
CANCELLED = "notifications/cancelled"
# The parameter each name-bearing method's Mcp-Name header mirrors.
_NAME_PARAM = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
_BEFORE_VERSION_HEADER = frozenset({"2024-11-05", "2025-03-26"})
_SENTINEL_START = "=?base64?"
_SENTINEL_END = "?="


def modern_version(message: Message) -> str | None:
    """The 2026-07-28-style version a message carries in `_meta`, if it carries one."""
    meta = message.params.get("_meta")
    if isinstance(meta, dict):
        version = meta.get(PROTOCOL_VERSION_META)
        if isinstance(version, str):
            return version
    return None


def header_value(value: str) -> str:
    """A value safe as an HTTP header: as is when it is plain visible ASCII, otherwise the
    spec's Base64 sentinel form `=?base64?…?=` (also when the value itself looks like one)."""
    plain = (
        value == value.strip()
        and all(" " <= char <= "~" for char in value)
        and not (value.startswith(_SENTINEL_START) and value.endswith(_SENTINEL_END))
    )
    if plain:
        return value
    encoded = base64.b64encode(value.encode("utf-8")).decode("ascii")
    return f"{_SENTINEL_START}{encoded}{_SENTINEL_END}"


@dataclass
class WireState:
    """What the 2025 handshake established: the session and the negotiated version."""

    configured_version: str | None = None
    session_id: str | None = None
    negotiated_version: str | None = None

    @property
    def version(self) -> str | None:
        """The MCP-Protocol-Version to send on the 2025 wire: configured, else negotiated
        (except for revisions before the header existed, 2025-06-18)."""
        if self.configured_version is not None:
            return self.configured_version
        if self.negotiated_version in _BEFORE_VERSION_HEADER:
            return None
        return self.negotiated_version

    def post_headers(self, message: Message) -> dict[str, str]:
        headers = {"Accept": ACCEPT_BOTH, "Content-Type": "application/json"}
        modern = modern_version(message)
        if modern is not None:
            # Values from the client's message pass header_value, so no line break or other
            # control character it sent can reach the HTTP request as a header.
            headers["MCP-Protocol-Version"] = header_value(modern)
            if message.method is not None:
                headers["Mcp-Method"] = header_value(message.method)
                name = _name_of(message.method, message.params)
                if name is not None:
                    headers["Mcp-Name"] = header_value(name)
            return headers
        if message.method == INITIALIZE:
            # A new session starts without the old one's id (transports §Session Management).
            return headers
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        if self.version is not None:
            headers["MCP-Protocol-Version"] = self.version
        return headers

    def stream_headers(self, last_event_id: str | None) -> dict[str, str]:
        """Headers of the GET that opens (or resumes) the server's event stream."""
        headers = {"Accept": EVENT_STREAM}
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        if self.version is not None:
            headers["MCP-Protocol-Version"] = self.version
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        return headers

    def learn(self, initialize_result: Mapping[str, Any], session_id: str | None) -> None:
        """Take the session id and negotiated version from the initialize response."""
        version = initialize_result.get("protocolVersion")
        if isinstance(version, str):
            self.negotiated_version = version
        if session_id:
            self.session_id = session_id


def _name_of(method: str, params: Mapping[str, Any]) -> str | None:
    key = _NAME_PARAM.get(method)
    value = params.get(key) if key is not None else None
    return value if isinstance(value, str) else None
