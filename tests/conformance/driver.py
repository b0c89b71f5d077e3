"""The client under test for the MCP conformance suite: the MCP Python SDK's client, talking to
mcp-oauth2-proxy over stdio, the proxy talking to the suite's mock server.

The suite runs `python driver.py <server-url>` once per scenario, naming it in
MCP_CONFORMANCE_SCENARIO (and the revision in MCP_CONFORMANCE_PROTOCOL_VERSION, scenario data
in MCP_CONFORMANCE_CONTEXT). Scenarios without OAuth get a local client-credentials token
endpoint, since the proxy always authenticates; auth scenarios get nothing but the upstream
URL, a private cache, a scripted browser and the URL of a client id metadata document (the
one the suite expects; the proxy uses it only where a server supports such client ids), as a
user with only those set would.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp import Client, StdioServerParameters

HERE = Path(__file__).resolve().parent
PROXY = str(Path(sys.executable).with_name("mcp-oauth2-proxy"))
SCENARIO = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
VERSION = os.environ.get("MCP_CONFORMANCE_PROTOCOL_VERSION", "2025-11-25")
CLIENT_METADATA_URL = "https://conformance-test.local/client-metadata.json"
CONTEXT: dict[str, Any] = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
BOUND_SECONDS = 25.0


def token_endpoint() -> str:
    """A token endpoint that gives any client a token (the mocks accept any bearer)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = json.dumps(
                {"access_token": "driver-token", "token_type": "Bearer", "expires_in": 3600}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/token"


def proxy_env(url: str, cache: str) -> dict[str, str]:
    ours = ("OAUTH2_", "UPSTREAM_", "MCP_CONFORMANCE", "MCP_PROXY_CONFIG")
    env = {key: value for key, value in os.environ.items() if not key.startswith(ours)}
    env.update(UPSTREAM_URL=url, OAUTH2_TOKEN_CACHE_DIR=cache, LOG_LEVEL="debug")
    if not SCENARIO.startswith("auth/"):
        env.update(
            OAUTH2_GRANT="client_credentials",
            OAUTH2_TOKEN_URL=token_endpoint(),
            OAUTH2_CLIENT_ID="driver",
            OAUTH2_CLIENT_SECRET="driver-secret",
        )
        return env
    env.update(
        OAUTH2_CALLBACK_PORT="0",
        OAUTH2_CALLBACK_TIMEOUT_SECONDS="5",
        BROWSER=f"{sys.executable} {HERE.parent / 'contract' / 'scripted_browser.py'} %s",
        SCRIPTED_BROWSER_LOG=str(Path(cache) / "browser.log"),
        # As a user who publishes a metadata document would: the suite's own URL for it.
        OAUTH2_CLIENT_METADATA_URL=CLIENT_METADATA_URL,
    )
    if SCENARIO in ("auth/pre-registration", "auth/client-credentials-basic"):
        env.update(
            OAUTH2_CLIENT_ID=CONTEXT["client_id"],
            OAUTH2_CLIENT_SECRET=CONTEXT["client_secret"],
            OAUTH2_AUTH_STYLE="header",
        )
    if SCENARIO == "auth/client-credentials-basic":
        env["OAUTH2_GRANT"] = "client_credentials"
    return env


async def accept_elicitation(context: Any, params: Any) -> types.ElicitResult:
    """Accept with the schema's defaults, as a user pressing OK would."""
    schema: Any = getattr(params, "requested_schema", None)
    if schema is not None and hasattr(schema, "model_dump"):
        schema = schema.model_dump(by_alias=True, exclude_none=True)
    properties = schema.get("properties", {}) if isinstance(schema, dict) else {}
    content = {key: prop["default"] for key, prop in properties.items() if "default" in prop}
    return types.ElicitResult(action="accept", content=content or {"confirmed": True})


async def call_each(client: Client, names: list[str], arguments: dict[str, Any]) -> None:
    for name in names:
        try:
            await client.call_tool(name, arguments)
        except Exception as error:  # the scenario judges the calls; one may rightly fail
            print(f"{name}: {error!r}", flush=True)


async def play(client: Client) -> None:
    tools = (await client.list_tools()).tools
    names = [tool.name for tool in tools]
    plays: dict[str, Callable[[], Awaitable[object]]] = {
        "tools_call": lambda: client.call_tool("add_numbers", {"a": 5, "b": 3}),
        "elicitation-sep1034-client-defaults": lambda: client.call_tool(
            "test_client_elicitation_defaults", {}
        ),
        "sse-retry": lambda: client.call_tool("test_reconnection", {}),
        "sep-2322-client-request-state": lambda: call_each(
            client,
            [
                "test_mrtr_echo_state",
                "test_mrtr_no_state",
                "test_mrtr_unrelated",
                "test_mrtr_no_result_type",
            ],
            {},
        ),
        "http-custom-headers": lambda: _custom_header_calls(client),
        "http-invalid-tool-headers": lambda: call_each(client, names, {"region": "us-west1"}),
        "http-standard-headers": lambda: _standard_calls(client, names),
        "json-schema-2020-12-preservation": lambda: _echo_schema(client, tools),
    }
    if SCENARIO in plays:
        await plays[SCENARIO]()
    elif SCENARIO.startswith("auth/"):
        await client.call_tool("test-tool", {})


async def _custom_header_calls(client: Client) -> None:
    for call in CONTEXT.get("toolCalls", []):
        await client.call_tool(call["name"], call["arguments"])


async def _standard_calls(client: Client, names: list[str]) -> None:
    if names:
        await client.call_tool(names[0], {})
    resources = (await client.list_resources()).resources
    if resources:
        await client.read_resource(str(resources[0].uri))
    prompts = (await client.list_prompts()).prompts
    if prompts:
        await client.get_prompt(prompts[0].name, {})


async def _echo_schema(client: Client, tools: list[types.Tool]) -> None:
    focal = next(tool for tool in tools if tool.name == "json_schema_2020_12_tool")
    await client.call_tool("json_schema_echo", {"schema": focal.input_schema})


async def main(url: str) -> None:
    if VERSION != "2026-07-28":
        mode = "legacy"
    elif SCENARIO == "request-metadata":
        mode = "auto"  # this scenario judges the server/discover probe itself
    else:
        mode = "2026-07-28"
    # The token cache holds this run's tokens: it goes when the run does.
    with tempfile.TemporaryDirectory(prefix="conformance-cache-") as cache:
        params = StdioServerParameters(command=PROXY, env=proxy_env(url, cache))
        with anyio.fail_after(BOUND_SECONDS):
            async with Client(
                params,
                mode=mode,
                client_info=types.Implementation(name="mcp-oauth2-proxy-conformance", version="1"),
                elicitation_callback=accept_elicitation,
            ) as client:
                await play(client)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
