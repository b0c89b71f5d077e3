"""The `demo` command's MCP client: the official SDK's client, spawning the proxy over stdio
exactly as Claude Desktop or Cursor would, and reporting each step of a short session."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import mcp_types as types
from mcp import Client, StdioServerParameters

Report = Callable[[str, str], None]


class SdkDemoClient:
    """Drives initialize, tools/list and two tool calls through a spawned proxy."""

    async def drive(self, command: list[str], env: Mapping[str, str], report: Report) -> None:
        params = StdioServerParameters(command=command[0], args=command[1:], env=dict(env))
        steps: list[str] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            steps.append(message or f"{progress:g}")

        async with Client(params) as client:
            name = client.server_info.name if client.server_info else "an unnamed server"
            report("initialize", f"MCP {client.protocol_version} with {name}, through the proxy")
            tools = await client.list_tools()
            report("tools/list", ", ".join(tool.name for tool in tools.tools))
            added = await client.call_tool("add", {"a": 2, "b": 3})
            report("tools/call", f"add(2, 3) = {_text(added)}")
            counted = await client.call_tool(
                "countdown", {"start": 3}, progress_callback=on_progress
            )
            report("tools/call", f"countdown(3) = {_text(counted)}, progress {' '.join(steps)}")


def _text(result: types.CallToolResult) -> str:
    texts = [item.text for item in result.content if isinstance(item, types.TextContent)]
    return " ".join(texts) or "(no text)"
